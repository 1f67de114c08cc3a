"""Retrieve instances, metadata, rendered images, frames or bulk data from a DICOMweb store.

    python -m pipelines.retrieve --uids_file targets.txt \\
        --dicomweb_url http://127.0.0.1:8042/dicom-web --output /tmp/export

Writes the files below ``OUTPUT`` (named by ``--layout``), ``OUTPUT/retrieved-*.jsonl`` (one line
per file: path, UIDs, bytes, content type, sha256) and ``OUTPUT/dead_letter-*.jsonl``, prints a
summary, and exits 0 when everything was retrieved, 3 when some was dead-lettered, 2 on bad
options or a failed preflight. A re-run with the same ``--output`` skips complete files.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipelines import preflight
from pipelines.beam_speedups import beam_work_kept
from pipelines.cli import JobSpec, UsageError, old_objects_frozen, parse_options, run_job
from pipelines.job_main import (  # noqa: F401 (the exit codes are the job's API too)
    EXIT_CRASH,
    EXIT_DEAD_LETTERS,
    EXIT_OK,
    EXIT_USAGE,
    job_main,
)
from pipelines.options import DicomwebOptions, RetrieveOptions, auth_from, endpoint_from, retry_from
from pipelines.selection import (
    Selection,
    SelectionOptions,
    SelectQueries,
    search_config,
    selection_from,
)
from pipelines.summary import RetrieveSummary
from transforms.dead_letter import DeadLetter, Stage
from transforms.dicomweb import wado
from transforms.dicomweb.auth import AuthConfig
from transforms.errors import InvalidInputError
from transforms.read_lines import ReadLines
from transforms.records import RetrievedFile, SearchMatch
from transforms.results import RetrieveResult
from transforms.retrieve import RetrieveFromDicomStore, parse_selection_line
from transforms.search import SearchDicomStore
from transforms.targets import Target
from transforms.write_lines import WriteLineFiles

MANIFEST = "retrieved"

SPEC = JobSpec(
    module="pipelines.retrieve",
    description=(
        "Retrieve instances, metadata, rendered images, frames or bulk data from a DICOMweb\n"
        "store with WADO-RS, to files below OUTPUT (local or gs://). Writes\n"
        "OUTPUT/retrieved-*.jsonl and OUTPUT/dead_letter-*.jsonl, prints a summary, and exits\n"
        "0 (everything retrieved), 3 (some dead letters) or 2 (bad options or preflight).\n"
        "A re-run with the same OUTPUT skips the files that are complete.\n"
        "Select with --uids_file, or with a search: --level, --study, --series, --filter,\n"
        "--queries (what matches is expanded to instances, series or studies as --granularity\n"
        "asks)."
    ),
    option_classes=(RetrieveOptions, SelectionOptions, DicomwebOptions),
)


@dataclass(frozen=True)
class RetrieveSettings:
    """Validated settings of a retrieve run."""

    uids_file: str | None
    selection: Selection | None
    output: str
    config: wado.WadoConfig
    auth: AuthConfig
    max_concurrency: int
    preflight: bool


def retrieve_settings(options: PipelineOptions) -> RetrieveSettings:
    """Validate the options of a retrieve run; raises ValueError with a message for the user."""
    web = options.view_as(DicomwebOptions)
    opts = options.view_as(RetrieveOptions)
    chosen = options.view_as(SelectionOptions)
    searching = any(
        (chosen.level, chosen.study, chosen.series, chosen.filter, chosen.queries,
         chosen.includefield, chosen.fuzzymatching)
    )  # fmt: skip
    if opts.uids_file and searching:
        raise UsageError("give either --uids_file or search options (--level, --filter, ...)")
    if not opts.uids_file and not searching:
        raise UsageError(
            "say what to retrieve: --uids_file FILE, or a search (--study UID, --filter KEY=VALUE, "
            "--queries FILE, or --level studies for the whole store)"
        )
    if not opts.output:
        raise UsageError("--output is required (a prefix for the files and the manifests)")
    endpoint = endpoint_from(options)
    config = wado.WadoConfig(
        endpoint=endpoint,
        what=opts.what,
        granularity=opts.granularity,
        transfer_syntax=opts.transfer_syntax.strip(),
        render_format=opts.render_format,
        render_frames=(wado.parse_frame_list(opts.render_frames) if opts.render_frames else None),
        viewport=wado.parse_viewport(opts.viewport) if opts.viewport else None,
        metadata_format=opts.metadata_format,
        frames=wado.parse_frame_list(opts.frames),
        bulkdata_paths=tuple(wado.parse_bulkdata_path(p) for p in opts.bulkdata_path or ()),
        layout=wado.Layout(opts.layout),
        verify=opts.verify,
        retry=retry_from(web),
        max_server_error_attempts=opts.max_server_error_attempts,
    )
    selection = selection_from(options, check_file=not web.no_preflight) if searching else None
    return RetrieveSettings(
        uids_file=opts.uids_file,
        selection=selection,
        output=opts.output.rstrip("/"),
        config=config,
        auth=auth_from(web, endpoint),
        max_concurrency=opts.max_concurrency,
        preflight=not web.no_preflight,
    )


def check_uids_file(path: str) -> int:
    """Every line of the targets file reads as a target; their count. Streams the file."""
    try:
        stream = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:  # noqa: BLE001 - Beam raises its own errors for missing files
        message = f"cannot open --uids_file {path!r}: {type(exc).__name__}"
        raise preflight.PreflightError(message) from None
    count = 0
    with stream:
        for number, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"--uids_file line {number}: not UTF-8 text") from None
            try:
                parsed = parse_selection_line(line, number)
            except InvalidInputError as exc:
                raise UsageError(f"--uids_file {exc.message}") from None
            count += parsed is not None
    if not count:
        raise UsageError(f"--uids_file {path!r} names no target")
    return count


class _ParseTargetsFn(beam.DoFn):
    """Lines of --uids_file -> Targets (the launcher checked them; this is the boundary)."""

    def process(self, line: str) -> object:
        try:
            parsed = parse_selection_line(line, 0)
        except InvalidInputError as exc:
            letter = DeadLetter(Stage.SELECT, "uids_file", exc.reason, exc.message)
            yield beam.pvalue.TaggedOutput("failed", letter)
            return
        if parsed is not None:
            target, expected = parsed
            yield target
            if expected is not None and target.sop is not None:
                yield beam.pvalue.TaggedOutput("expected", (target.sop, expected))


class _MatchToTargetFn(beam.DoFn):
    """Search matches -> Targets (a match whose UIDs are unusable is a dead letter)."""

    def process(self, match: SearchMatch) -> object:
        try:
            yield Target.from_dicom_json(match.dataset)
        except InvalidInputError as exc:
            source = f"query {match.query_id}"
            yield beam.pvalue.TaggedOutput(
                "failed", DeadLetter(Stage.SELECT, source, exc.reason, exc.message)
            )


def select_targets(
    pipeline: beam.Pipeline, settings: RetrieveSettings
) -> tuple[beam.PCollection, list[beam.PCollection], beam.PCollection | None]:
    """The targets of the run, the dead letters of selecting them, and the sizes (and hashes)
    a --uids_file of store records or manifest lines says the instances have."""
    if settings.uids_file:
        parsed = (
            pipeline
            | "ReadUidsFile" >> ReadLines(settings.uids_file)
            | "ParseTargets"
            >> beam.ParDo(_ParseTargetsFn()).with_outputs("failed", "expected", main="targets")
        )
        return parsed.targets, [parsed.failed], parsed.expected
    assert settings.selection is not None
    queries = pipeline | "SelectQueries" >> SelectQueries(settings.selection)
    config = search_config(settings.selection, settings.config.endpoint, settings.config.retry)
    found = queries.queries | "SearchDicomStore" >> SearchDicomStore(
        config, auth=settings.auth, max_concurrency=settings.max_concurrency
    )
    targets = found.matches | "MatchesToTargets" >> beam.ParDo(_MatchToTargetFn()).with_outputs(
        "failed", main="targets"
    )
    return targets.targets, [queries.failed, found.failed, targets.failed], None


def build(pipeline: beam.Pipeline, settings: RetrieveSettings) -> RetrieveResult:
    targets, selection_failed, expected = select_targets(pipeline, settings)
    result = targets | "RetrieveFromDicomStore" >> RetrieveFromDicomStore(
        settings.config,
        settings.output,
        auth=settings.auth,
        max_concurrency=settings.max_concurrency,
        previous_manifest=f"{settings.output}/{MANIFEST}-*.jsonl",
        expected=expected if settings.config.verify else None,  # only --verify reads them
    )
    failed = (*selection_failed, result.failed) | "AllDeadLetters" >> beam.Flatten()
    # Records become JSON lines in the step that writes them, both files through one gathering
    # step (a smaller graph than WriteToText, and no listing of the output prefix, which holds
    # every retrieved file).
    named = {MANIFEST: result.retrieved, "dead_letter": failed}
    _ = named | "WriteResults" >> WriteLineFiles(settings.output, to_line=_to_json)
    return RetrieveResult(retrieved=result.retrieved, failed=failed)


def _to_json(record: RetrievedFile | DeadLetter) -> str:
    return record.to_json()


@dataclass(frozen=True)
class RetrieveRun:
    settings: RetrieveSettings
    result: PipelineResult
    summary: RetrieveSummary

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.summary.failed == 0 else EXIT_DEAD_LETTERS


@beam_work_kept()  # Beam's repeated introspection, once (pipelines/beam_speedups.py)
def run(argv: Sequence[str] | None = None) -> RetrieveRun | None:
    """Validate, preflight, run to completion and summarise; None when --help was printed.

    Raises ValueError (UsageError among them) or PreflightError.
    """
    options = parse_options(argv, SPEC)
    if options is None:
        return None
    settings = retrieve_settings(options)
    if options.view_as(StandardOptions).runner is None:
        # As pipelines.store: in process on the FnApiRunner, no Prism download at start.
        options.view_as(StandardOptions).runner = "FnApiRunner"
    if settings.preflight and settings.uids_file:
        check_uids_file(settings.uids_file)
    if settings.preflight:
        preflight.check_store(settings.config.endpoint, settings.auth)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, settings)
    start = time.monotonic()
    with old_objects_frozen():
        result = pipeline.run()
        result.wait_until_finish()
    summary = RetrieveSummary.from_result(result, time.monotonic() - start)
    return RetrieveRun(settings, result, summary)


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("retrieve", argv, run, _report)


def _report(retrieve_run: RetrieveRun) -> int:
    """Prints the summary of a finished run; its exit code."""
    output = retrieve_run.settings.output
    print(
        retrieve_run.summary.render(f"{output}/{MANIFEST}-*.jsonl, {output}/dead_letter-*.jsonl"),
        flush=True,
    )
    return retrieve_run.exit_code


if __name__ == "__main__":
    run_job(main)
