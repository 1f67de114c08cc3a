"""Command-line parsing shared by every job: ``--help`` that lists the job's own options, and
unknown options refused (exit 2) with a "did you mean".

Beam's ``PipelineOptions(argv)`` parses against every options class that has ever been imported
and only logs what it cannot parse, so a misspelt ``--max_concurency 1`` would run with the
default. Here a job names its own option classes; an argument is accepted when it belongs to one
of them or to one of Beam's own classes (runner, Google Cloud, worker, setup options...).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import gc
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

BEAM_OPTIONS_NOTE = (
    "Beam's own options are accepted too: --runner (default: in this process on the "
    "FnApiRunner), --project, --region, --temp_location, --setup_file, --max_num_workers, "
    "--number_of_worker_harness_threads, ... (see Beam's PipelineOptions)."
)


class UsageError(ValueError):
    """Bad command line: the job exits 2 with this message."""


@dataclass(frozen=True)
class JobSpec:
    """What ``--help`` says about a job, and which option classes are its own.

    Attributes:
      module: e.g. ``pipelines.store`` (the help's ``usage: python -m ...`` line).
      description: the first paragraph of the help.
      option_classes: the job's ``PipelineOptions`` subclasses, in help order.
    """

    module: str
    description: str
    option_classes: tuple[type[PipelineOptions], ...]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows a default only where there is one worth showing (not None, not off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" not in text and _shows_default(action):
            text += " (default: %(default)s)"
        return text


def _shows_default(action: argparse.Action) -> bool:
    default = action.default
    return (
        bool(action.option_strings)
        and default not in (None, False, argparse.SUPPRESS)
        and not (isinstance(default, list) and not default)
    )


def help_parser(spec: JobSpec) -> argparse.ArgumentParser:
    """The job's own options, as ``--help`` shows them (and as template parameters list them)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {spec.module}",
        description=spec.description,
        epilog=BEAM_OPTIONS_NOTE,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    for cls in spec.option_classes:
        cls._add_argparse_args(parser)  # type: ignore[arg-type]  # Beam's extension point
    for action in parser._actions:  # noqa: SLF001
        if action.help is None and _shows_default(action):
            action.help = "(default: %(default)s)"  # argparse shows nothing without help text
    return parser


def _checking_parser(spec: JobSpec) -> argparse.ArgumentParser:
    parser = _BeamArgumentParser(allow_abbrev=False)
    classes: dict[str, type[PipelineOptions]] = {}
    for cls in PipelineOptions.__subclasses__():
        if cls.__module__.startswith("apache_beam."):
            classes.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
    for cls in spec.option_classes:
        classes.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # noqa: SLF001
    return parser


def parse_options(argv: Sequence[str] | None, spec: JobSpec) -> PipelineOptions | None:
    """The job's options, or None when ``--help`` was asked (and printed).

    Raises:
      UsageError: an argument no option of this job or of Beam knows.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(help_parser(spec).format_help(), end="")
        return None
    args = normalise_switches(args, spec)
    parser = _checking_parser(spec)
    try:
        _, unknown = parser.parse_known_args(args)
    except SystemExit as exc:  # argparse already printed what is wrong with a value
        raise UsageError("bad command line (see above, or --help)") from exc
    if unknown:
        raise UsageError(_unknown_message(unknown, parser))
    return PipelineOptions(args)


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def normalise_switches(args: list[str], spec: JobSpec) -> list[str]:
    """``--flag=true|false`` for the job's on/off options, as a Flex Template launch passes them.

    A Flex launch gives every parameter as ``--name=value``; argparse's ``store_true`` refuses a
    value, so ``--yes=true`` becomes ``--yes`` and ``--yes=false`` is dropped.

    Raises:
      UsageError: a value that is neither true nor false.
    """
    switches = {
        s
        for action in help_parser(spec)._actions  # noqa: SLF001
        if isinstance(action, argparse._StoreTrueAction)  # noqa: SLF001
        for s in action.option_strings
    }
    out = []
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or name not in switches:
            out.append(arg)
        elif value.strip().lower() in _TRUE:
            out.append(name)
        elif value.strip().lower() not in _FALSE:
            raise UsageError(f"{name} takes true or false, not {value!r}")
    return out


def _unknown_message(unknown: list[str], parser: argparse.ArgumentParser) -> str:
    known = [s for action in parser._actions for s in action.option_strings]  # noqa: SLF001
    parts = []
    after_option = False
    for arg in unknown:
        if not arg.startswith("-"):
            if not after_option:  # the value of an unknown option needs no message of its own
                parts.append(f"unexpected argument {arg!r}")
            after_option = False
            continue
        after_option = "=" not in arg
        name = arg.split("=", 1)[0]
        normalised = "--" + name.lstrip("-").replace("-", "_")
        close = difflib.get_close_matches(normalised, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        parts.append(f"unknown option {name!r}{hint}")
    return "; ".join(parts) + "; see --help"


def exit_now(code: int) -> NoReturn:
    """Exit a job's process without the interpreter's teardown: after a run, collecting and
    finalising Beam's millions of objects takes 0.4 to 1.2 s the user waits for after the
    summary, for nothing. Logs and standard streams are flushed first (output files are
    closed by then). For ``if __name__ == "__main__"`` only, never from a library call."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def old_objects_frozen() -> Iterator[None]:
    """Around a job's ``pipeline.run()``: objects alive before the run outlive it, so
    ``gc.freeze()`` keeps the collector from scanning them again and again while the run
    allocates (in a caller's process full of objects, a full collection during a run costs
    0.1 s or more). A job's own process froze them after its imports already (``run_job``); a
    library caller (a notebook, a benchmark, a test) gets them back as they were."""
    frozen_before = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()


def run_job(main: Callable[[], int]) -> NoReturn:
    """A job's ``if __name__ == "__main__"``: ``main()``'s exit code, without the teardown.

    Objects alive once the imports are done live until the end, so ``gc.freeze()`` keeps the
    collector from scanning them again and again during the run."""
    gc.freeze()
    exit_now(main())
