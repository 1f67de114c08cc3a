"""job_main: the exit codes and messages every job shares around its run()."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from pipelines import job_main as jm
from pipelines.preflight import PreflightError


def _raising(exc: Exception) -> Callable[[Sequence[str] | None], int | None]:
    def run(argv: Sequence[str] | None) -> int | None:
        raise exc

    return run


def test_a_finished_run_exits_with_what_its_report_says(capsys: pytest.CaptureFixture[str]) -> None:
    def report(outcome: str) -> int:
        print(f"summary: {outcome}")
        return jm.EXIT_DEAD_LETTERS

    code = jm.job_main("demo", [], lambda argv: "2 dead letters", report)
    assert code == jm.EXIT_DEAD_LETTERS
    assert "summary: 2 dead letters" in capsys.readouterr().out


def test_help_printed_is_exit_0_without_a_report() -> None:
    def report(outcome: object) -> int:
        raise AssertionError("no run, no report")

    assert jm.job_main("demo", ["--help"], lambda argv: None, report) == jm.EXIT_OK


@pytest.mark.parametrize("exc", [ValueError("--output is required"), PreflightError("no store")])
def test_usage_and_preflight_errors_exit_2_with_one_line(
    exc: Exception, capsys: pytest.CaptureFixture[str]
) -> None:
    assert jm.job_main("demo", [], _raising(exc), lambda r: 0) == jm.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.strip() == f"error: {exc}"


def test_a_crash_exits_1_and_ends_with_a_line_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = jm.job_main("demo", [], _raising(RuntimeError("runner failed")), lambda r: 0)
    assert code == jm.EXIT_CRASH
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: the job crashed (RuntimeError")
    assert last.endswith("see the log above; outputs may be incomplete")


def test_a_library_caller_gets_its_collector_back_as_it_was() -> None:
    import gc  # noqa: PLC0415

    from pipelines.cli import old_objects_frozen  # noqa: PLC0415

    gc.unfreeze()
    before = [object() for _ in range(10)]
    with old_objects_frozen():
        assert gc.get_freeze_count() >= len(before)  # scanned no more during the run
    assert gc.get_freeze_count() == 0  # a caller that had not frozen gets nothing frozen
    gc.freeze()  # a job's own process froze after its imports: it stays frozen
    try:
        frozen = gc.get_freeze_count()
        with old_objects_frozen():
            pass
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()
