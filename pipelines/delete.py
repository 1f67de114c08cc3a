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

Two phases, each a Beam pipeline:

1. **Plan**: every selected target (duplicates merged) is searched once; ``OUTPUT/plan-*.jsonl``
   gets one line per target with its UIDs, level, the number of instances the store holds, and
   ``to_delete`` or ``already_absent``. ``--plan_only`` stops here.
2. **Delete** (needs ``--yes``; refused with exit 2, deleting nothing, when the plan has more than
   ``--max_targets`` targets to delete): the plan file is read back and executed.
   ``OUTPUT/deleted-*.jsonl`` gets a line per target gone (``deleted`` or ``already_absent``),
   ``OUTPUT/dead_letter-*.jsonl`` one per target that could not be deleted.

Exit codes: 0 every target is gone (or the selection is empty), 3 some dead letters, 2 bad options,
a failed preflight, or a refusal.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import preflight
from pipelines.cli import JobSpec, UsageError, parse_options
from pipelines.options import DeleteOptions, DicomwebOptions, auth_from, endpoint_from, retry_from
from pipelines.runner_checks import report_without_metrics
from pipelines.selection import (
    Selection,
    SelectionOptions,
    SelectQueries,
    search_config,
    selection_from,
)
from pipelines.summary import DeleteSummary, MetricsUnavailable, counter_values
from transforms import metrics
from transforms.dead_letter import DeadLetter, Reason, Stage
from transforms.delete import DeleteFromDicomStore, PlanDeletes
from transforms.dicomweb.auth import AuthConfig
from transforms.dicomweb.delete import DeleteConfig
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.errors import InvalidInputError
from transforms.records import PLAN_TO_DELETE, PlannedDelete, SearchMatch
from transforms.search import SearchDicomStore
from transforms.targets import STUDIES, Target, parse_level, parse_target_line

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DEAD_LETTERS = 3

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
        lines = pipeline | "ReadUidsFile" >> beam.io.ReadFromText(settings.uids_file)
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


def build_plan(pipeline: beam.Pipeline, settings: DeleteSettings) -> None:
    selected, selection_failed = _selected(pipeline, settings)
    plan = selected | "PlanDeletes" >> PlanDeletes(
        settings.config,
        auth=settings.auth,
        max_concurrency=settings.max_concurrency,
        max_operations=settings.max_operations,
    )
    _ = (
        plan.planned
        | "PlanToJson" >> beam.Map(lambda r: r.to_json())
        | "WritePlan" >> _write(settings.output, "plan")
    )
    _ = (
        (plan.failed, *selection_failed)
        | "AllPlanDeadLetters" >> beam.Flatten()
        | "PlanDeadLettersToJson" >> beam.Map(lambda r: r.to_json())
        | "WritePlanDeadLetters" >> _write(settings.output, "dead_letter-plan")
    )


class _ParsePlanFn(beam.DoFn):
    """A plan line -> PlannedDelete; a line that does not read (the plan was edited by hand) is a
    dead letter, not a failed bundle and never a delete."""

    def process(self, line: str) -> Iterator[object]:
        try:
            yield PlannedDelete.from_json(line)
        except (ValueError, KeyError, TypeError) as exc:
            letter = DeadLetter(
                stage=Stage.PLAN,
                source="plan",
                reason=Reason.UNREADABLE,
                message=f"a plan line does not read ({type(exc).__name__}); nothing deleted for it",
            )
            metrics.count_dead_letter(letter)
            yield beam.pvalue.TaggedOutput("failed", letter)


def build_delete(pipeline: beam.Pipeline, settings: DeleteSettings) -> None:
    plan = (
        pipeline
        | "ReadPlan" >> beam.io.ReadFromText(f"{settings.output}/plan-*.jsonl")
        | "ParsePlan" >> beam.ParDo(_ParsePlanFn()).with_outputs("failed", main="planned")
    )
    result = plan.planned | "DeleteFromDicomStore" >> DeleteFromDicomStore(
        settings.config,
        auth=settings.auth,
        max_concurrency=settings.max_concurrency,
        max_operations=settings.max_operations,
    )
    _ = (
        result.deleted
        | "DeletedToJson" >> beam.Map(lambda r: r.to_json())
        | "WriteDeleted" >> _write(settings.output, "deleted")
    )
    _ = (
        (result.failed, plan.failed)
        | "AllDeadLetters" >> beam.Flatten()
        | "DeadLettersToJson" >> beam.Map(lambda r: r.to_json())
        | "WriteDeadLetters" >> _write(settings.output, "dead_letter")
    )


def _write(prefix: str, name: str) -> beam.PTransform:
    return beam.io.WriteToText(
        f"{prefix}/{name}", file_name_suffix=".jsonl", shard_name_template="-SSSSS-of-NNNNN"
    )


def _plan_counts(prefix: str) -> tuple[int, int]:
    """(to delete, already absent) read back from the plan files."""
    to_delete = absent = 0
    for match in FileSystems.match([f"{prefix}/plan-*.jsonl"])[0].metadata_list:
        with FileSystems.open(match.path) as f:
            for raw in f:
                if raw.strip():
                    if PlannedDelete.from_json(raw.decode("utf-8")).status == PLAN_TO_DELETE:
                        to_delete += 1
                    else:
                        absent += 1
    return to_delete, absent


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


def _run_pipeline(
    options: PipelineOptions, build: Callable[[beam.Pipeline], None]
) -> dict[str, int]:
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    return counter_values(result)


def run(argv: Sequence[str] | None = None) -> DeleteRun | None:
    """Validate, preflight, plan, maybe delete, and summarise; None when --help was printed.

    Raises ValueError (UsageError among them) or PreflightError.
    """
    options = parse_options(argv, SPEC)
    if options is None:
        return None
    settings = delete_settings(options)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "FnApiRunner"  # as pipelines.store: no Prism
    if FileSystems.match([f"{settings.output}/plan-*.jsonl"])[0].metadata_list:
        # The delete phase executes the plan files under OUTPUT: an old plan must never mix in.
        raise UsageError(f"{settings.output} already holds a plan; give a new --output")
    if settings.uids_file:
        check_uids_file(settings.uids_file, settings.level)
    if settings.preflight:
        preflight.check_store(settings.config.endpoint, settings.auth)
    start = time.monotonic()
    counters = _run_pipeline(options, lambda p: build_plan(p, settings))
    to_delete, absent = _plan_counts(settings.output)
    plan_seconds = time.monotonic() - start

    def finish(note: str, refused: str | None = None) -> DeleteRun:
        summary = DeleteSummary.from_counters(
            counters,
            time.monotonic() - start,
            plan_seconds=plan_seconds,
            to_delete=to_delete,
            planned_absent=absent,
            note=note,
        )
        return DeleteRun(settings, summary, refused, counters)

    if to_delete + absent == 0:
        if counters.get(metrics.DEAD_LETTERS):
            return finish("nothing to delete: the selection failed (see the dead letters)")
        return finish("the selection is empty: nothing to delete")
    if settings.plan_only:
        return finish(f"plan only: {to_delete:,} targets would be deleted; nothing deleted")
    if to_delete > settings.max_targets:
        return finish(
            "refused",
            refused=f"the plan has {to_delete:,} targets to delete, more than --max_targets "
            f"{settings.max_targets:,}; nothing deleted (see {settings.output}/plan-*.jsonl)",
        )
    deleting = _run_pipeline(options, lambda p: build_delete(p, settings))
    for name, value in deleting.items():
        counters[name] = counters.get(name, 0) + value
    return finish("")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    try:
        delete_run = run(argv)
    except MetricsUnavailable:  # e.g. a Dataflow --dry_run build: say so, no zeros
        return report_without_metrics("delete", argv)
    except (ValueError, preflight.PreflightError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if delete_run is None:
        return EXIT_OK
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
    sys.exit(main())
