"""Store DICOM files from globs into a DICOMweb store.

    python -m pipelines.store --input '/data/**/*.dcm' \\
        --dicomweb_url http://127.0.0.1:8042/dicom-web --output /tmp/run1

Writes ``OUTPUT/stored-*.jsonl`` (one line per instance in the store: stored now or already
present) and ``OUTPUT/dead_letter-*.jsonl`` (one line per input that was not stored, with its
reason), prints a summary, and exits 0 when every input is in the store, 3 when some were
dead-lettered, 2 on bad options, a glob matching nothing, an output prefix holding another run's
results (unless --overwrite) or not writable, or a failed preflight; 1 if the job itself crashed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipelines import preflight
from pipelines.beam_speedups import beam_work_kept
from pipelines.cli import JobSpec, old_objects_frozen, parse_options, run_job
from pipelines.job_main import (  # noqa: F401 (the exit codes are the job's API too)
    EXIT_CRASH,
    EXIT_DEAD_LETTERS,
    EXIT_OK,
    EXIT_USAGE,
    job_main,
)
from pipelines.options import DicomwebOptions, StoreOptions, StoreSettings, store_settings
from pipelines.summary import StoreSummary, seconds_since_launch
from transforms.dead_letter import DeadLetter
from transforms.read_dicom import ReadDicomFiles
from transforms.records import StoredInstance
from transforms.results import StoreResult
from transforms.stow import WriteToDicomStore
from transforms.write_lines import WriteLineFiles

SPEC = JobSpec(
    module="pipelines.store",
    description=(
        "Store DICOM files (local or gs:// globs) into a DICOMweb store with STOW-RS.\n"
        "Writes OUTPUT/stored-*.jsonl and OUTPUT/dead_letter-*.jsonl, prints a summary, and exits\n"
        "0 (every input in the store), 3 (some dead letters), 2 (bad options, a glob matching\n"
        "nothing, an output holding another run's results, or a failed preflight) or 1 (crash)."
    ),
    option_classes=(StoreOptions, DicomwebOptions),
)


def build(pipeline: beam.Pipeline, settings: StoreSettings) -> StoreResult:
    read = pipeline | "ReadDicomFiles" >> ReadDicomFiles(settings.inputs)
    store = read.files | "WriteToDicomStore" >> WriteToDicomStore(
        settings.config,
        auth=settings.auth,
        batch_size=settings.batch_size,
        max_batch_bytes=settings.max_batch_bytes,
        max_concurrency=settings.max_concurrency,
    )
    failed = (read.failed, store.failed) | "AllDeadLetters" >> beam.Flatten()
    # Both result files through one gathering step; records become JSON in the writing step.
    named = {"stored": store.stored, "dead_letter": failed}
    _ = named | "WriteResults" >> WriteLineFiles(settings.output, to_line=_to_json)
    return StoreResult(stored=store.stored, failed=failed)


def _to_json(record: StoredInstance | DeadLetter) -> str:
    return record.to_json()


@dataclass(frozen=True)
class StoreRun:
    settings: StoreSettings
    result: PipelineResult
    summary: StoreSummary

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.summary.failed == 0 else EXIT_DEAD_LETTERS


@beam_work_kept()  # Beam's repeated introspection, once (pipelines/beam_speedups.py)
def run(argv: Sequence[str] | None = None) -> StoreRun | None:
    """Validate, preflight, run to completion and summarise; None when --help was printed.

    Raises ValueError (UsageError among them) or PreflightError.
    """
    options = parse_options(argv, SPEC)
    if options is None:
        return None
    settings = store_settings(options)
    if options.view_as(StandardOptions).runner is None:
        # Beam's DirectRunner first tries to download and start the Prism runner; run in
        # process on the FnApiRunner (what DirectRunner uses for batch) for the same engine
        # everywhere and no download at start.
        options.view_as(StandardOptions).runner = "FnApiRunner"
    # Always, even with --no_preflight: an empty glob or a reused output is a usage error.
    preflight.check_inputs(settings.inputs)
    preflight.check_output(settings.output, overwrite=settings.overwrite)
    if settings.preflight:
        preflight.check_store(settings.config.endpoint, settings.auth)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, settings)
    send_start = time.monotonic()
    with old_objects_frozen():
        result = pipeline.run()
        result.wait_until_finish()
    summary = StoreSummary.from_result(
        result, seconds_since_launch(), pipeline_seconds=time.monotonic() - send_start
    )
    return StoreRun(settings, result, summary)


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("store", argv, run, _report)


def _report(store_run: StoreRun) -> int:
    """Prints the summary of a finished run; its exit code."""
    output = store_run.settings.output
    print(
        store_run.summary.render(f"{output}/stored-*.jsonl, {output}/dead_letter-*.jsonl"),
        flush=True,
    )
    return store_run.exit_code


if __name__ == "__main__":
    run_job(main)
