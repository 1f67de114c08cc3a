"""Delete studies, series or instances from a DICOMweb store, safely.

    python -m pipelines.delete --uids_file targets.txt --level series \\
        --dicomweb_url http://127.0.0.1:8042/dicom-web --delete_api orthanc \\
        --output /tmp/del1 --yes

    python -m pipelines.delete --level series --filter Modality=SR --filter StudyDate=2019 \\
        --dicomweb_url ... --output /tmp/del2 --plan_only

Selection: ``--uids_file`` (lines ``study[/series[/instance]]`` or ``pipelines.search`` results;
``--level`` cuts each down), or the search options of ``pipelines.search`` (``--level``,
``--study``, ``--series``, ``--filter``, ``--queries``, ...: what the search finds at ``--level``
is deleted), or ``--all`` (every study; with ``--level``, every series or instance). Without any
of them the job refuses to run.

One Beam pipeline (one Dataflow job; the launcher makes no request with ``--no_preflight``):

1. **Plan**: every selected target (duplicates merged) is searched once; ``OUTPUT/plan-*.jsonl``
   gets one line per target with its UIDs, level, the number of instances the store holds, and
   ``to_delete`` or ``already_absent``. ``--plan_only`` stops here.
2. **Gate** (deleting needs ``--yes``): the targets to delete are counted, and the count is a side
   input of the deletes: past ``--max_targets`` not one DELETE is sent, each target to delete is
   an ``over_max_targets`` dead letter, and the job exits 2.
3. **Delete**: ``OUTPUT/deleted-*.jsonl`` gets a line per target gone (``deleted`` or
   ``already_absent``), ``OUTPUT/dead_letter-*.jsonl`` one per target that could not be deleted
   (and per failed search).

Exit codes: 0 every target is gone (or the selection is empty), 3 some dead letters, 2 bad options,
a failed preflight, or a refusal (no ``--yes``, past ``--max_targets``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

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
from pipelines.options import DeleteOptions, DicomwebOptions, auth_from, endpoint_from, retry_from
from pipelines.selection import (
    Selection,
    SelectionOptions,
    SelectQueries,
    search_config,
    selection_from,
)
from pipelines.summary import DeleteSummary, counter_values
from transforms import metrics
from transforms.dead_letter import DeadLetter, Reason, Stage
from transforms.delete import DeleteFromDicomStore, PlanDeletes
from transforms.dicomweb.auth import AuthConfig
from transforms.dicomweb.delete import DeleteConfig
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.errors import InvalidInputError
from transforms.read_lines import ReadLines
from transforms.records import DeletedTarget, PlannedDelete, SearchMatch
from transforms.search import SearchDicomStore
from transforms.targets import STUDIES, Target, parse_level, parse_target_line
from transforms.write_lines import WriteLineFiles, WriteLines

SPEC = JobSpec(
    module="pipelines.delete",
    description=(
        "Delete studies, series or instances from a DICOMweb store (Google: long-running\n"
        "operations; Orthanc: --delete_api orthanc). Writes OUTPUT/plan-*.jsonl first (every\n"
        "target and how many instances it holds); --plan_only stops there. Deleting needs --yes\n"
        "and is refused past --max_targets. Writes OUTPUT/deleted-*.jsonl and\n"
        "OUTPUT/dead_letter-*.jsonl, prints a summary, and exits 0 (every target gone),\n"
        "3 (some dead letters) or 2 (bad options, preflight, or a refusal)."
    ),
    option_classes=(DeleteOptions, SelectionOptions, DicomwebOptions),
)


@dataclass(frozen=True)
class DeleteSettings:
    """Validated settings of a delete run."""

    output: str
    config: DeleteConfig
    auth: AuthConfig
    uids_file: str | None
    level: str | None
    selection: Selection | None  # a search (its options, or --all); None with --uids_file
    plan_only: bool
    max_targets: int
    max_concurrency: int
    max_operations: int
    preflight: bool


def delete_settings(options: PipelineOptions) -> DeleteSettings:
    """Validate the options of a delete run; raises ValueError with a message for the user."""
    web = options.view_as(DicomwebOptions)
    opts = options.view_as(DeleteOptions)
    select = options.view_as(SelectionOptions)
    if not opts.output:
        raise UsageError("--output is required (a prefix for the plan, results and dead letters)")
    searching = bool(select.filter or select.study or select.series or select.queries)
    chosen = [
        name
        for name, given in (
            ("--uids_file", opts.uids_file),
            ("search options", searching),
            ("--all", opts.delete_all),
        )
        if given
    ]
    if len(chosen) > 1:
        raise UsageError(f"give one selection, not {' and '.join(chosen)}")
    if not chosen:
        raise UsageError(
            "nothing selected: give --uids_file or search options (--filter, --study, --series, "
            "--queries); deleting the whole store needs --all"
        )
    if not opts.plan_only and not opts.yes:
        raise UsageError(
            "deleting needs --yes (or --plan_only to write the plan and delete nothing)"
        )
    if opts.operation_timeout <= 0:
        raise UsageError("--operation_timeout must be positive")
    level = parse_level(select.level) if select.level else None
    selection = None if opts.uids_file else selection_from(options, default_level=STUDIES)
    endpoint = endpoint_from(options)
    if opts.orthanc_url and opts.delete_api != "orthanc":
        raise UsageError("--orthanc_url is only used with --delete_api orthanc")
    config = DeleteConfig(
        endpoint=endpoint,
        retry=retry_from(web),
        delete_api=opts.delete_api,
        orthanc_root=DicomwebEndpoint(opts.orthanc_url).base_url if opts.orthanc_url else None,
        operation_timeout=opts.operation_timeout,
        verify=opts.verify,
    )
    return DeleteSettings(
        output=opts.output.rstrip("/"),
        config=config,
        auth=auth_from(web, endpoint),
        uids_file=opts.uids_file,
        level=level,
        selection=selection,
        plan_only=opts.plan_only,
        max_targets=opts.max_targets,
        max_concurrency=opts.max_concurrency,
        max_operations=opts.max_operations,
        preflight=not web.no_preflight,
    )


def check_uids_file(path: str, level: str | None) -> int:
    """The number of target lines of a --uids_file, read once at launch; a bad line is a usage
    error (a mistaken file must not half-run a delete), naming the line, never its content.

    The pipeline reads the file again itself (a million targets do not travel in the job graph).
    """
    try:
        handle = FileSystems.open(path)
    except Exception as exc:  # Beam raises BeamIOError and friends
        raise UsageError(f"cannot open --uids_file {path!r}: {type(exc).__name__}") from None
    count = 0
    with handle:
        for n, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
                target = parse_target_line(line, n)
            except UnicodeDecodeError:
                raise UsageError(f"--uids_file line {n}: not UTF-8 text") from None
            except InvalidInputError as exc:
                raise UsageError(f"--uids_file {exc.message}") from None
            if target is None:
                continue
            if level is not None:
                try:
                    target = target.at_level(level)
                except ValueError as exc:
                    raise UsageError(f"--uids_file line {n}: {exc}") from None
            count += 1
    return count


class _LineToTargetFn(beam.DoFn):
    """A --uids_file line -> its target cut down to ``level``. The file was checked at launch;
    a line that no longer reads (the file changed since) is a dead letter, never a guess."""

    def __init__(self, level: str | None) -> None:
        self._level = level

    def process(self, line: str) -> Iterator[object]:
        try:
            target = parse_target_line(line, 0)
            if target is not None:
                yield target if self._level is None else target.at_level(self._level)
        except (InvalidInputError, ValueError) as exc:
            letter = DeadLetter(
                stage=Stage.PLAN,
                source="--uids_file",
                reason=getattr(exc, "reason", Reason.UNREADABLE),
                message=f"a line changed since launch and no longer names a target: {exc}",
            )
            metrics.count_dead_letter(letter)
            yield beam.pvalue.TaggedOutput("failed", letter)


class _MatchToTargetFn(beam.DoFn):
    """A search match -> the target it names at the search's level (a match without its UIDs is
    a dead letter: deleting by a guess is not an option)."""

    def __init__(self, level: str) -> None:
        self._level = level

    def process(self, match: SearchMatch) -> Iterator[object]:
        try:
            yield Target.from_dicom_json(match.dataset).at_level(self._level)
        except (InvalidInputError, ValueError) as exc:
            reason = getattr(exc, "reason", Reason.MISSING_UID)
            letter = DeadLetter(
                stage=Stage.PLAN,
                source=f"query {match.query_id}",
                reason=reason,
                message=f"a match of query {match.query_id} does not name its target: {exc}",
            )
            metrics.count_dead_letter(letter)
            yield beam.pvalue.TaggedOutput("failed", letter)


def _selected(
    pipeline: beam.Pipeline, settings: DeleteSettings
) -> tuple[beam.PCollection, list[beam.PCollection]]:
    """The targets (from the --uids_file, or a search) and selection failures."""
    if settings.selection is None:
        assert settings.uids_file is not None
        lines = pipeline | "ReadUidsFile" >> ReadLines(settings.uids_file)
        read = lines | "LinesToTargets" >> beam.ParDo(_LineToTargetFn(settings.level)).with_outputs(
            "failed", main="targets"
        )
        return read.targets, [read.failed]
    selection = settings.selection
    queries = pipeline | "SelectQueries" >> SelectQueries(selection)
    found = queries.queries | "SearchDicomStore" >> SearchDicomStore(
        search_config(selection, settings.config.endpoint, settings.config.retry),
        auth=settings.auth,
        max_concurrency=settings.max_concurrency,
    )
    named = found.matches | "MatchesToTargets" >> beam.ParDo(
        _MatchToTargetFn(selection.base.level)
    ).with_outputs("failed", main="targets")
    return named.targets, [queries.failed, found.failed, named.failed]


def build(pipeline: beam.Pipeline, settings: DeleteSettings) -> None:
    """One pipeline: select -> plan (written to plan-*.jsonl) -> count the targets to delete (a
    side input) -> gate on --max_targets -> delete -> deleted-*.jsonl; every failure to
    dead_letter-*.jsonl. With --plan_only the graph stops after the plan."""
    selected, failed = _selected(pipeline, settings)
    plan = selected | "PlanDeletes" >> PlanDeletes(
        settings.config,
        auth=settings.auth,
        max_concurrency=settings.max_concurrency,
        max_operations=settings.max_operations,
    )
    # The plan has a gathering step of its own: its file is complete before the deletes end.
    _ = plan.planned | "WritePlan" >> WriteLines(settings.output, "plan", _to_json)
    failed.append(plan.failed)
    named: dict[str, beam.PCollection] = {}
    if not settings.plan_only:
        # The gate counts the whole plan before the first DELETE: the check needs the store, so
        # it runs in the pipeline, and the launcher makes no request with --no_preflight.
        result = plan.planned | "DeleteFromDicomStore" >> DeleteFromDicomStore(
            settings.config,
            auth=settings.auth,
            max_concurrency=settings.max_concurrency,
            max_operations=settings.max_operations,
            max_targets=settings.max_targets,
        )
        named["deleted"] = result.deleted
        failed.append(result.failed)
    named["dead_letter"] = failed | "AllDeadLetters" >> beam.Flatten()
    # The other files through one gathering step; records become JSON in the writing step.
    _ = named | "WriteResults" >> WriteLineFiles(settings.output, to_line=_to_json)


def _to_json(record: PlannedDelete | DeletedTarget | DeadLetter) -> str:
    return record.to_json()


@dataclass(frozen=True)
class DeleteRun:
    settings: DeleteSettings
    summary: DeleteSummary
    refused: str | None = None
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.refused:
            return EXIT_USAGE
        return EXIT_OK if self.summary.failed == 0 else EXIT_DEAD_LETTERS


@beam_work_kept()  # Beam's repeated introspection, once (pipelines/beam_speedups.py)
def run(argv: Sequence[str] | None = None) -> DeleteRun | None:
    """Validate, preflight, then run the one pipeline (plan, gate, deletes) and summarise from its
    metrics; None when --help was printed.

    Raises ValueError (UsageError among them), PreflightError, or MetricsUnavailable (a runner
    that reports no metrics, e.g. a Dataflow --dry_run).
    """
    options = parse_options(argv, SPEC)
    if options is None:
        return None
    settings = delete_settings(options)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "FnApiRunner"  # as pipelines.store: no Prism
    if FileSystems.match([f"{settings.output}/plan-*.jsonl"])[0].metadata_list:
        # One run per prefix: another run's plan shards there would read as this run's plan.
        raise UsageError(f"{settings.output} already holds a plan; give a new --output")
    if settings.uids_file:
        check_uids_file(settings.uids_file, settings.level)  # a local or gs:// file, not the store
    if settings.preflight:
        preflight.check_store(settings.config.endpoint, settings.auth)
    start = time.monotonic()
    pipeline = beam.Pipeline(options=options)
    build(pipeline, settings)
    with old_objects_frozen():
        result = pipeline.run()
        result.wait_until_finish()
    counters = counter_values(result)
    to_delete = counters.get(metrics.TARGETS_TO_DELETE, 0)
    absent = counters.get(metrics.TARGETS_PLANNED_ABSENT, 0)
    refused = counters.get(metrics.FAILED_PREFIX + Reason.OVER_MAX_TARGETS, 0)

    def finish(note: str, refusal: str | None = None) -> DeleteRun:
        summary = DeleteSummary.from_counters(
            counters,
            time.monotonic() - start,
            to_delete=to_delete,
            planned_absent=absent,
            note=note,
        )
        return DeleteRun(settings, summary, refusal, counters)

    if to_delete + absent == 0:
        if counters.get(metrics.DEAD_LETTERS):
            return finish("nothing to delete: the selection failed (see the dead letters)")
        return finish("the selection is empty: nothing to delete")
    if settings.plan_only:
        return finish(f"plan only: {to_delete:,} targets would be deleted; nothing deleted")
    if refused:
        return finish(
            "deleting refused: nothing deleted",
            refusal=f"the plan has {to_delete:,} targets to delete, more than --max_targets "
            f"{settings.max_targets:,}; nothing deleted: each is an over_max_targets dead letter "
            f"(see {settings.output}/plan-*.jsonl)",
        )
    return finish("")


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("delete", argv, run, _report)


def _report(delete_run: DeleteRun) -> int:
    """Prints the summary of a finished run; its exit code."""
    output = delete_run.settings.output
    if delete_run.refused:
        print(f"error: {delete_run.refused}", file=sys.stderr)
    print(
        delete_run.summary.render(
            f"{output}/plan-*.jsonl, {output}/deleted-*.jsonl, {output}/dead_letter-*.jsonl"
        ),
        flush=True,
    )
    return delete_run.exit_code


if __name__ == "__main__":
    run_job(main)
