"""Every job's command line: --help lists its own options, unknown options exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import store
from pipelines.cli import help_parser

ROOT = Path(__file__).resolve().parents[2]


def own_option_names(spec) -> set[str]:  # type: ignore[no-untyped-def]
    return {
        s for a in help_parser(spec)._actions for s in a.option_strings if s.startswith("--")
    } - {"--help"}


def test_help_lists_every_option_of_the_job_with_defaults() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.store", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    names = own_option_names(store.SPEC)
    assert {"--input", "--output", "--dicomweb_url", "--on_exists", "--batch_size"} <= names
    for name in names:
        assert name in out.stdout, name
    assert "usage: python -m pipelines.store" in out.stdout
    assert "(default: 50)" in out.stdout  # --batch_size, which has no help text of its own
    assert "--runner" in out.stdout  # Beam's own options are mentioned
    # Options of Beam's other registered classes are not listed as the job's.
    assert "--temp_location" not in names and "--level" not in names


def test_misspelt_options_are_refused_with_a_suggestion(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = store.main(
        [
            "--input", str(tmp_path / "*.dcm"), "--output", str(tmp_path / "out"),
            "--dicomweb_url", "http://127.0.0.1:9", "--on-exists", "fail",
            "--batchsize", "1", "--max_concurency", "1",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown option '--on-exists' (did you mean --on_exists?)" in err
    assert "unknown option '--batchsize' (did you mean --batch_size?)" in err
    assert "unknown option '--max_concurency' (did you mean --max_concurrency?)" in err
    assert "'1'" not in err  # an unknown option's value is not reported on its own
    assert not (tmp_path / "out").exists()


def test_a_bad_value_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = store.main(["--input", "x", "--output", str(tmp_path), "--batch_size", "many"])
    assert code == 2
    assert "batch_size" in capsys.readouterr().err


def test_beam_runner_options_are_accepted(tmp_path: Path) -> None:
    # --temp_location belongs to Beam: accepted, and the job goes on to its own checks.
    with pytest.raises(ValueError, match="--dicomweb_url"):
        store.run(["--input", "x", "--output", str(tmp_path), "--temp_location", str(tmp_path)])


def test_switches_accept_true_and_false_as_a_flex_launch_passes_them() -> None:
    from pipelines.cli import UsageError, normalise_switches

    args = ["--single_part=true", "--no_preflight=False", "--batch_size=3", "--no_check_existing"]
    assert normalise_switches(args, store.SPEC) == [
        "--single_part",
        "--batch_size=3",
        "--no_check_existing",
    ]
    with pytest.raises(UsageError, match="true or false"):
        normalise_switches(["--single_part=maybe"], store.SPEC)
