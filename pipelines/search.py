"""Search a DICOMweb store (QIDO-RS): one query from options, or many from a file.

    python -m pipelines.search --dicomweb_url http://127.0.0.1:8042/dicom-web \\
        --level studies --filter PatientName='DOE^*' --output /tmp/found

    python -m pipelines.search --dicomweb_url ... --queries accessions.csv \\
        --csv AccessionNumber,PatientID,StudyDate --output /tmp/found

Writes ``OUTPUT/results-*.jsonl`` (one DICOM JSON object per match, plus ``"query_id"``: the
query's line in ``--queries``, or 1), with ``--csv`` also ``OUTPUT/results-*.csv``, and
``OUTPUT/dead_letter-*.jsonl`` (one line per query that could not be answered completely: none of
its matches are written). Prints a summary; exits 0 when every query was answered, 3 when some
were dead-lettered, 2 on bad options or a failed preflight.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass

import apache_beam as beam
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
from pipelines.options import (
    DicomwebOptions,
    add_shared_option,
    auth_from,
    endpoint_from,
    positive_int,
    retry_from,
)
from pipelines.selection import (
    Selection,
    SelectionOptions,
    SelectQueries,
    search_config,
    selection_from,
)
from pipelines.summary import SearchSummary
from transforms.dicomweb.auth import AuthConfig
from transforms.dicomweb.qido import SearchConfig
from transforms.dicomweb.qido_query import INCLUDE_ALL, element_text, key_name, resolve_key
from transforms.records import MatchBatch
from transforms.results import SearchResult
from transforms.search import DEFAULT_MAX_CONCURRENCY, SearchDicomStore
from transforms.write_lines import WriteLineFiles

MATCHES_PER_ELEMENT = 500


class SearchOptions(PipelineOptions):
    """Options of pipelines.search (besides the selection and the store)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("search")
        add_shared_option(g, "--output", help="prefix for results-*.jsonl and dead_letter-*.jsonl")
        g.add_argument(
            "--csv",
            metavar="FIELD,FIELD,...",
            help="also write results-*.csv with these keywords as columns (after query_id); "
            "they are asked as includefields",
        )
        add_shared_option(
            g,
            "--max_concurrency",
            type=positive_int,
            default=DEFAULT_MAX_CONCURRENCY,
            help="queries in flight per worker process",
        )


SPEC = JobSpec(
    module="pipelines.search",
    description=(
        "Search a DICOMweb store with QIDO-RS at any level, with any filter, one query from the\n"
        "options or many from --queries, each paged to completion (never a partial result).\n"
        "Writes OUTPUT/results-*.jsonl (and .csv with --csv) and OUTPUT/dead_letter-*.jsonl,\n"
        "prints a summary, and exits 0 (every query answered), 3 (some dead letters) or 2\n"
        "(bad options or preflight)."
    ),
    option_classes=(SelectionOptions, SearchOptions, DicomwebOptions),
)


@dataclass(frozen=True)
class SearchSettings:
    """Validated settings of a search run."""

    selection: Selection
    output: str
    csv_fields: tuple[str, ...]  # tags
    config: SearchConfig
    auth: AuthConfig
    max_concurrency: int
    preflight: bool


def search_settings(options: PipelineOptions) -> SearchSettings:
    """Validate the options of a search run; raises ValueError (UsageError) for the user."""
    web = options.view_as(DicomwebOptions)
    opts = options.view_as(SearchOptions)
    if not opts.output:
        raise UsageError("--output is required (a prefix for result and dead-letter files)")
    endpoint = endpoint_from(options)
    selection = selection_from(options)
    try:
        fields = tuple(resolve_key(f) for f in (opts.csv or "").split(",") if f.strip())
    except ValueError as exc:
        raise UsageError(f"--csv: {exc}") from None
    if opts.csv is not None and not fields:
        raise UsageError("--csv needs keywords, e.g. --csv PatientID,StudyDate")
    base = selection.base
    if fields and base.includefields != (INCLUDE_ALL,):
        # Orthanc ignores includefield=all, so a column is always asked by name.
        wanted = base.includefields + tuple(f for f in fields if f not in base.includefields)
        selection = dataclasses.replace(
            selection, base=dataclasses.replace(base, includefields=wanted)
        )
    return SearchSettings(
        selection=selection,
        output=opts.output.rstrip("/"),
        csv_fields=fields,
        config=search_config(selection, endpoint, retry_from(web)),
        auth=auth_from(web, endpoint),
        max_concurrency=opts.max_concurrency,
        preflight=not web.no_preflight,
    )


def csv_lines(batch: MatchBatch, fields: tuple[str, ...]) -> str:
    """The batch's rows of ``results-*.csv`` (no final newline: one text element)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for match in batch.matches():
        dataset = match.dataset
        writer.writerow([match.query_id, *(element_text(dataset.get(tag)) for tag in fields)])
    return out.getvalue().removesuffix("\n")


def build(pipeline: beam.Pipeline, settings: SearchSettings) -> SearchResult:
    read = pipeline | "SelectQueries" >> SelectQueries(settings.selection)
    search = read.queries | "SearchDicomStore" >> SearchDicomStore(
        settings.config,
        auth=settings.auth,
        max_concurrency=settings.max_concurrency,
        # Written, not used one by one: Beam's per-element cost is paid per batch.
        batch_matches=MATCHES_PER_ELEMENT,
    )
    failed = (read.failed, search.failed) | "AllDeadLetters" >> beam.Flatten()
    # All result files through one gathering step (as the other jobs); a re-run into the same
    # prefix replaces the earlier run's shards (transforms/write_lines.py).
    named = {
        "results": search.matches | "MatchesToJson" >> beam.Map(lambda b: b.to_jsonl()),
        "dead_letter": failed | "DeadLettersToJson" >> beam.Map(lambda r: r.to_json()),
    }
    headers = {}
    if settings.csv_fields:
        fields = settings.csv_fields
        named["results.csv"] = search.matches | "MatchesToCsv" >> beam.Map(csv_lines, fields)
        headers["results.csv"] = ",".join(["query_id", *(key_name(tag) for tag in fields)])
    _ = named | "WriteResults" >> WriteLineFiles(settings.output, headers=headers)
    return SearchResult(matches=search.matches, failed=failed)  # matches: MatchBatch


@dataclass(frozen=True)
class SearchRun:
    settings: SearchSettings
    result: PipelineResult
    summary: SearchSummary

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.summary.failed == 0 else EXIT_DEAD_LETTERS


@beam_work_kept()  # Beam's repeated introspection, once (pipelines/beam_speedups.py)
def run(argv: Sequence[str] | None = None) -> SearchRun | None:
    """Validate, preflight, run to completion and summarise; None when --help was printed.

    Raises ValueError (UsageError among them) or PreflightError.
    """
    start = time.monotonic()
    options = parse_options(argv, SPEC)
    if options is None:
        return None
    settings = search_settings(options)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "FnApiRunner"  # as pipelines.store: no Prism
    if settings.preflight:
        preflight.check_store(settings.config.endpoint, settings.auth)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, settings)
    with old_objects_frozen():
        result = pipeline.run()
        result.wait_until_finish()
    summary = SearchSummary.from_result(
        result, time.monotonic() - start, settings.selection.query_count
    )
    return SearchRun(settings, result, summary)


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("search", argv, run, _report)


def _report(search_run: SearchRun) -> int:
    """Prints the summary of a finished run; its exit code."""
    output = search_run.settings.output
    outputs = f"{output}/results-*.jsonl"
    if search_run.settings.csv_fields:
        outputs += f", {output}/results-*.csv"
    print(search_run.summary.render(f"{outputs}, {output}/dead_letter-*.jsonl"), flush=True)
    return search_run.exit_code


if __name__ == "__main__":
    run_job(main)
