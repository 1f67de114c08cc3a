"""A runner whose result has no metrics: the summary says so and counts the output files."""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipelines import runner_checks
from pipelines.summary import MetricsUnavailable, StoreSummary, counter_values


def test_a_result_without_metrics_raises_metrics_unavailable_not_zeros() -> None:
    result = PipelineResult(PipelineState.DONE)
    with pytest.raises(MetricsUnavailable) as caught:
        counter_values(result)
    assert caught.value.result is result
    with pytest.raises(MetricsUnavailable):
        StoreSummary.from_result(result, 1.0)


def _shard(prefix: Path, name: str, lines: int) -> None:
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / f"{name}-00000-of-00001.jsonl").write_text('{"a": 1}\n' * lines)


def test_without_metrics_the_output_files_give_the_counts_and_the_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _shard(tmp_path / "out", "stored", 4)
    _shard(tmp_path / "out", "dead_letter", 2)
    code = runner_checks.report_without_metrics("store", ["--output", str(tmp_path / "out")])
    assert code == runner_checks.EXIT_DEAD_LETTERS
    text = capsys.readouterr().out
    assert "reports no metrics" in text
    assert "    stored                       4 lines" in text
    assert "    dead_letter                  2 lines" in text

    _shard(tmp_path / "clean", "stored", 1)
    assert runner_checks.report_without_metrics("store", [f"--output={tmp_path}/clean"]) == 0
    assert runner_checks.report_without_metrics("search", ["--dry_run=True"]) == 0
    assert "built and not submitted" in capsys.readouterr().out


def test_option_value_reads_both_forms() -> None:
    assert runner_checks.option_value(["--output", "a", "--x"], "--output") == "a"
    assert runner_checks.option_value(["--output=b"], "--output") == "b"
    assert runner_checks.option_value(["--output_x=b"], "--output") is None
