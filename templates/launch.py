"""Flex Template entry point: runs the pipeline named by ``DWB_PIPELINE`` (set per image by the
Dockerfile's ``PIPELINE`` build argument) with the launch's ``--name=value`` arguments.

The job is imported by its package name (``pipelines.store``...), not run as ``__main__``, so
every function the pipeline pickles lives in a module the workers import from the same image.
"""

from __future__ import annotations

import importlib
import os
import sys

JOBS = ("store", "search", "retrieve", "delete", "store_json_jpeg")


def main() -> int:
    name = os.environ.get("DWB_PIPELINE", "")
    if name not in JOBS:
        print(
            f"error: DWB_PIPELINE must be one of {', '.join(JOBS)}; got {name!r}", file=sys.stderr
        )
        return 2
    job = importlib.import_module(f"pipelines.{name}")
    code: int = job.main(launch_args(sys.argv[1:]))
    return code


def launch_args(args: list[str]) -> list[str]:
    """The job's arguments: a launch that names no runner means Dataflow (the jobs' own default
    runs in process, which on the launcher VM would store everything from there)."""
    if any(a == "--runner" or a.startswith("--runner=") for a in args) or "--help" in args:
        return args
    return ["--runner=DataflowRunner", *args]


if __name__ == "__main__":
    sys.exit(main())
