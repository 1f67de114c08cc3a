"""Create DICOM instances from JSON metadata + JPEG pairs in a DICOMweb store.

    python -m pipelines.store_json_jpeg --input '/photos/**/*.json' \\
        --dicomweb_url http://127.0.0.1:8042/dicom-web --output /tmp/run1

Every pair is validated before any request (dead letters for the bad ones, the good ones are
stored). ``--mode client`` (the default for non-Google stores) builds Part 10 instances here and
stores them like ``pipelines.store``; ``--mode server`` (the default for Google stores) sends
DICOM JSON + JPEG and lets the store create them. ``--build_only`` writes the Part 10 files under
``OUTPUT/dicom/`` instead of sending them.

Writes ``OUTPUT/stored-*.jsonl`` (``built-*.jsonl`` with ``--build_only``; one line per instance,
with the JSON and JPEG paths and any generated UIDs) and ``OUTPUT/dead_letter-*.jsonl``, prints a
summary, and exits 0 when every pair is in the store, 3 when some were dead-lettered, 2 on bad
options or a failed preflight.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
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
from pipelines.options import (
    DicomwebOptions,
    StoreJsonJpegOptions,
    StoreOptions,
    _expand_directory,
    auth_from,
    endpoint_from,
    retry_from,
)
from pipelines.summary import (
    StoreSummary,
    counter_values,
    seconds_since_launch,
)
from transforms import metrics
from transforms.dicom import dicom_json, metadata_csv
from transforms.dicom.build import (
    DEFAULT_UID_ROOT,
    BuildOptions,
    load_dicom_json,
    pixel_data_uri,
)
from transforms.dicomweb.auth import AuthConfig
from transforms.dicomweb.stow import StowConfig
from transforms.errors import InvalidInputError
from transforms.files import open_source
from transforms.read_json_jpeg import ReadJsonJpegPairs
from transforms.results import StoreResult
from transforms.store_json_jpeg import BuildDicomFiles, StoreJsonJpegPairs
from transforms.write_lines import WriteLineFiles

SPEC = JobSpec(
    module="pipelines.store_json_jpeg",
    description=(
        "Create DICOM instances from DICOM JSON metadata + JPEG pairs (or JPEGs + a template and\n"
        "a CSV) in a DICOMweb store. --input globs the JSON files (or the JPEGs with --template).\n"
        "Writes OUTPUT/stored-*.jsonl (built-*.jsonl with --build_only) and\n"
        "OUTPUT/dead_letter-*.jsonl, prints a summary, and exits 0 (every pair in the store),\n"
        "3 (some dead letters) or 2 (bad options or preflight). The store options below apply\n"
        "here too; --single_part does not."
    ),
    option_classes=(StoreOptions, StoreJsonJpegOptions, DicomwebOptions),
)


@dataclass(frozen=True)
class JsonJpegSettings:
    """Validated settings of a store_json_jpeg run (``config`` is None with ``build_only``
    and no store)."""

    inputs: tuple[str, ...]
    output: str
    mode: str
    build_only: bool
    build: BuildOptions
    template: dict[str, Any] | None
    metadata_csv: str | None
    config: StowConfig | None
    auth: AuthConfig
    batch_size: int
    max_batch_bytes: int
    max_concurrency: int
    preflight: bool
    overwrite: bool = False


# What --overwrite deletes, and what makes an --output "already used" (build_only writes built-).
RESULT_NAMES = ("stored", "dead_letter", "built")


def settings_from(options: PipelineOptions) -> JsonJpegSettings:
    """Validate the options; raises ValueError with a message for the user."""
    web = options.view_as(DicomwebOptions)
    store = options.view_as(StoreOptions)
    own = options.view_as(StoreJsonJpegOptions)
    if not store.input:
        raise ValueError("--input is required (a glob of JSON files, or of JPEGs with --template)")
    if not store.output:
        raise ValueError("--output is required (a prefix for result and dead-letter files)")
    if store.single_part:
        raise ValueError("--single_part does not apply: JSON + JPEG pairs are sent as multipart")
    if own.metadata_csv and not own.template:
        raise ValueError("--metadata_csv needs --template")
    has_store = bool(web.dicomweb_url or web.dicom_store)
    config = None
    endpoint = None
    if has_store or not own.build_only:
        endpoint = endpoint_from(options)
        config = StowConfig(
            endpoint=endpoint,
            storage_class=store.storage_class,
            on_exists=store.on_exists,
            check_existing=not store.no_check_existing,
            retry=retry_from(web),
        )
    # A Google store is known by its host or by its path (a proxy or a test stand-in).
    google = endpoint is not None and (endpoint.is_google or bool(endpoint.google_store_path))
    mode = own.json_jpeg_mode or ("server" if google else "client")
    if own.build_only and own.json_jpeg_mode == "server":
        raise ValueError("--build_only writes what client mode would send: it needs --mode client")
    build = BuildOptions(
        generate_uids=own.generate_uids,
        uid_root=own.uid_root or DEFAULT_UID_ROOT,
        sop_class_uid=own.sop_class_uid,
        fix_metadata=own.fix_metadata,
    )
    return JsonJpegSettings(
        inputs=tuple(_expand_directory(p) for p in store.input),
        output=store.output.rstrip("/"),
        mode="client" if own.build_only else mode,
        build_only=own.build_only,
        build=build,
        template=_read_template(own.template) if own.template else None,
        metadata_csv=_checked_csv(own.metadata_csv) if own.metadata_csv else None,
        config=config,
        auth=auth_from(web, endpoint) if endpoint is not None else AuthConfig(),
        batch_size=store.batch_size,
        max_batch_bytes=store.max_batch_bytes,
        max_concurrency=store.max_concurrency,
        preflight=not web.no_preflight,
        overwrite=store.overwrite,
    )


def _read_text(path: str, what: str) -> str:
    try:
        with open_source(path) as stream:
            return stream.read().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {what} {path!r} ({type(exc).__name__})") from None
    except Exception as exc:  # Beam's filesystems raise their own types
        raise ValueError(f"cannot read {what} {path!r} ({type(exc).__name__})") from None


def _read_template(path: str) -> dict[str, Any]:
    try:
        template = load_dicom_json(_read_text(path, "--template"))
        checked = {k: v for k, v in template.items() if not k.upper().startswith("0002")}
        checked.pop("7FE00010", None)
        dicom_json.check(checked)
    except InvalidInputError as exc:
        raise ValueError(f"--template: {exc.message}") from None
    if pixel_data_uri(template):
        template = {k: v for k, v in template.items() if k.upper() != "7FE00010"}
    return template


def _checked_csv(path: str) -> str:
    text = _read_text(path, "--metadata_csv")
    header = next(csv.reader(text.splitlines()[:1]), [])
    metadata_csv.check_header(header)
    return path


def build(pipeline: beam.Pipeline, settings: JsonJpegSettings) -> StoreResult:
    read = pipeline | "ReadJsonJpegPairs" >> ReadJsonJpegPairs(
        settings.inputs,
        options=settings.build,
        template=settings.template,
        metadata_csv=settings.metadata_csv,
        # Storing dead-letters repeated SOP Instance UIDs itself (by study, as pipelines.store);
        # --build_only names its files by SOP Instance UID, so it needs them unique first.
        unique_sops=settings.build_only,
        keyed=not settings.build_only,  # by study, as StoreJsonJpegPairs groups them
    )
    if settings.build_only:
        built = read.pairs | "BuildOnly" >> BuildDicomFiles(
            f"{settings.output}/dicom", as_created=True
        )
        stored, store_failed, results = built.files, built.failed, "built"
    else:
        assert settings.config is not None
        store = read.pairs | "StoreJsonJpegPairs" >> StoreJsonJpegPairs(
            settings.config,
            mode=settings.mode,
            auth=settings.auth,
            batch_size=settings.batch_size,
            max_batch_bytes=settings.max_batch_bytes,
            max_concurrency=settings.max_concurrency,
            keyed=True,
        )
        stored, store_failed, results = store.stored, store.failed, "stored"
    failed = (read.failed, store_failed) | "AllDeadLetters" >> beam.Flatten()
    # One gathering step for both files; records become lines in the writing steps themselves.
    _ = {results: stored, "dead_letter": failed} | "WriteResults" >> WriteLineFiles(
        settings.output, to_line=_to_json
    )
    return StoreResult(stored=stored, failed=failed)


def _to_json(record: Any) -> str:
    return str(record.to_json())


@dataclass(frozen=True)
class JsonJpegRun:
    settings: JsonJpegSettings
    result: PipelineResult
    summary: StoreSummary
    pairs_valid: int
    built: int

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.summary.failed == 0 else EXIT_DEAD_LETTERS

    def render(self) -> str:
        out = self.settings.output
        if self.settings.build_only:
            lines = [
                f"store_json_jpeg --build_only finished in {self.summary.elapsed_seconds:.1f} s",
                f"  built            {self.built:>10,}  (Part 10 files in {out}/dicom/)",
                f"  failed           {self.summary.failed:>10,}",
            ]
            lines += [
                f"    {reason:<22}{n:>8,}" for reason, n in self.summary.failed_by_reason.items()
            ]
            lines.append(f"  outputs          {out}/built-*.jsonl, {out}/dead_letter-*.jsonl")
            return "\n".join(lines)
        text = self.summary.render(f"{out}/stored-*.jsonl, {out}/dead_letter-*.jsonl")
        head, _, rest = text.partition("\n")
        mode = f"store_json_jpeg ({self.settings.mode} mode){head[len('store') :]}"
        valid = f"  pairs valid      {self.pairs_valid:>10,}"
        return "\n".join([mode, valid, rest])


@beam_work_kept()  # Beam's repeated introspection, once (pipelines/beam_speedups.py)
def run(argv: Sequence[str] | None = None) -> JsonJpegRun | None:
    """Validate, preflight, run to completion and summarise; None when --help was printed.

    Raises ValueError (UsageError among them) or PreflightError.
    """
    options = parse_options(argv, SPEC)
    if options is None:
        return None
    settings = settings_from(options)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "FnApiRunner"  # as pipelines.store, same reason
    # As pipelines.store, even with --no_preflight: a glob matching nothing or an output holding
    # another run's results is a usage error (--overwrite deletes those results first).
    preflight.check_inputs(settings.inputs)
    preflight.check_output(settings.output, overwrite=settings.overwrite, names=RESULT_NAMES)
    if settings.preflight and settings.config is not None and not settings.build_only:
        preflight.check_store(settings.config.endpoint, settings.auth)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, settings)
    start = time.monotonic()
    with old_objects_frozen():
        result = pipeline.run()
        result.wait_until_finish()
    summary = StoreSummary.from_result(
        result, seconds_since_launch(), pipeline_seconds=time.monotonic() - start
    )
    counters = counter_values(result)
    return JsonJpegRun(
        settings,
        result,
        summary,
        pairs_valid=counters.get(metrics.PAIRS_VALID, 0),
        built=counters.get(metrics.INSTANCES_BUILT, 0),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("store_json_jpeg", argv, run, _report)


def _report(job: JsonJpegRun) -> int:
    """Prints the summary of a finished run; its exit code."""
    print(job.render(), flush=True)
    return job.exit_code


if __name__ == "__main__":
    run_job(main)
