"""What every job's ``main()`` does around its ``run()``: logging, the exit codes, no traceback.

Exit codes, the same for every job: 0 done, 3 done with dead letters (the job's ``report``
decides), 2 a usage or preflight error (nothing was sent), 1 the job crashed (a bug or the
runner failing: said in one line, with the log above it, instead of a traceback).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from pipelines import preflight
from pipelines.runner_checks import report_without_metrics
from pipelines.summary import MetricsUnavailable
from transforms.errors import describe_exception

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_USAGE = 2
EXIT_DEAD_LETTERS = 3

JobRun = TypeVar("JobRun")


def job_main(
    name: str,
    argv: Sequence[str] | None,
    run: Callable[[Sequence[str] | None], JobRun | None],
    report: Callable[[JobRun], int],
) -> int:
    """Runs a job and returns its exit code.

    Args:
      name: the job's name, as in ``python -m pipelines.<name>``.
      argv: its arguments (None: ``sys.argv[1:]``).
      run: the job's ``run()``; None when it printed ``--help``.
      report: prints the summary of a finished run and returns its exit code.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    try:
        job_run = run(argv)
    except MetricsUnavailable:  # e.g. a Dataflow --dry_run build: say so, no zeros
        return report_without_metrics(name, argv)
    except (ValueError, preflight.PreflightError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug or the runner failing: say so, exit 1 (not a traceback)
        logging.exception("the %s job crashed", name)
        print(
            f"error: the job crashed ({describe_exception(exc)}); see the log above; "
            "outputs may be incomplete",
            file=sys.stderr,
        )
        return EXIT_CRASH
    if job_run is None:
        return EXIT_OK
    return report(job_run)
