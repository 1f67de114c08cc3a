"""Selection options shared by every job that selects what it acts on with a search.

``pipelines.search`` lists the matches; retrieve and delete act on them. All take the same
options::

    --level studies|series|instances   --study UID   --series UID
    --filter KEY=VALUE (repeatable)    --includefield KEY (repeatable, or all)
    --fuzzymatching                    --queries FILE (CSV or JSONL, local or gs://)
    --page_size N  --page_end short|empty  --max_limit N  --max_offset N  --read_ahead N

A job reads them with ``selection_from(options)`` (a usage error raises ``UsageError``: exit 2),
builds its queries with ``SelectQueries(selection)`` and searches with
``SearchDicomStore(search_config(selection, endpoint, retry))``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.cli import UsageError
from transforms.dicom.uid import check_uid
from transforms.dicomweb import http
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.qido import PAGE_ENDS, Paging, SearchConfig
from transforms.dicomweb.qido_query import parse_filter, parse_includefields
from transforms.errors import InvalidInputError
from transforms.records import SearchQuery
from transforms.results import QueriesResult
from transforms.search import ReadQueries, iter_queries_file
from transforms.targets import parse_level

OPTIONS_QUERY_ID = 1  # the id of the one query given by options
_MAX_BAD_LINES_SHOWN = 5


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


class SelectionOptions(PipelineOptions):
    """What to select: a search's level, scope, filters; or many searches from a file."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("selection (QIDO-RS search)")
        g.add_argument(
            "--level",
            help="studies, series or instances (singular accepted; default: studies)",
        )
        g.add_argument("--study", help="only within this Study Instance UID")
        g.add_argument("--series", help="only within this Series Instance UID (series/instances)")
        g.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="match KEY (a keyword such as PatientName, or a tag such as 00100010) against "
            "VALUE: exact, wildcards * ?, date range 20200101-20201231, UID list a,b,c "
            "(repeatable; with --queries, added to every query)",
        )
        g.add_argument(
            "--includefield",
            action="append",
            default=[],
            metavar="KEY",
            help="also return this attribute (repeatable or comma-separated), or all",
        )
        g.add_argument(
            "--fuzzymatching", action="store_true", help="ask for fuzzy person-name matching"
        )
        g.add_argument(
            "--queries",
            metavar="FILE",
            help="many queries, one a line (local or gs://): CSV with a header row of keywords, "
            "or JSONL of {keyword: value} objects; a query's id is its line number",
        )
        g.add_argument(
            "--page_size",
            type=_positive_int,
            help="limit asked per page (default: 100 for studies and series, 1000 for "
            "instances; never above --max_limit)",
        )
        g.add_argument(
            "--page_end",
            choices=PAGE_ENDS,
            help="short: a page shorter than the limit ends a query (the default on Google "
            "stores, which honour the limit); empty: page until an empty page (elsewhere)",
        )
        g.add_argument(
            "--max_limit",
            type=_positive_int,
            help="largest limit the server accepts (Google: 5000, 50000 for instances)",
        )
        g.add_argument(
            "--read_ahead",
            type=_non_negative_int,
            default=0,
            help="pages a large query asks ahead of the one it reads (for servers that answer "
            "searches in parallel; Orthanc 1.10 does not)",
        )
        g.add_argument(
            "--max_offset",
            type=_non_negative_int,
            help="largest offset the server accepts (Google: 1000000); past it, a query is "
            "split per study, per series or by StudyDate range",
        )


@dataclass(frozen=True)
class Selection:
    """Validated selection options.

    Attributes:
      base: the query given by options (id 1); with a queries file, what every line adds to.
      queries_file: path of ``--queries``, or None.
      paging: page size, page-end rule and caps.
      query_count: queries to run (1, or the queries in the file as counted at launch).
    """

    base: SearchQuery
    queries_file: str | None
    paging: Paging
    query_count: int = 1
    read_ahead: int = 0


def selection_from(
    options: PipelineOptions, *, default_level: str = "studies", check_file: bool = True
) -> Selection:
    """Validate the selection options; raises UsageError (exit 2) with a message for the user.

    With ``check_file`` the queries file is read once at launch: a missing file, a CSV header
    with an unknown keyword or a line that is not a query are usage errors, found before any
    work starts.
    """
    opts = options.view_as(SelectionOptions)
    try:
        level = parse_level(opts.level or default_level)
        study = None if opts.study is None else check_uid(opts.study.strip(), "--study")
        series = None if opts.series is None else check_uid(opts.series.strip(), "--series")
        base = SearchQuery(
            query_id=OPTIONS_QUERY_ID,
            level=level,
            study=study,
            series=series,
            filters=tuple(parse_filter(f) for f in opts.filter),
            includefields=parse_includefields(opts.includefield),
            fuzzy=bool(opts.fuzzymatching),
        )
        paging = Paging(
            page_size=opts.page_size,
            page_end=opts.page_end,
            max_limit=opts.max_limit,
            max_offset=opts.max_offset,
        )
    except InvalidInputError as exc:
        raise UsageError(exc.message) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    count = 1
    if opts.queries and check_file:
        count = check_queries_file(opts.queries, base)
    return Selection(
        base=base,
        queries_file=opts.queries,
        paging=paging,
        query_count=count,
        read_ahead=opts.read_ahead or 0,
    )


def check_queries_file(path: str, base: SearchQuery) -> int:
    """The number of queries in the file; UsageError when it cannot be read or has bad lines."""
    count = 0
    bad: list[str] = []
    try:
        for item in iter_queries_file(path, base):
            if isinstance(item, SearchQuery):
                count += 1
            elif len(bad) < _MAX_BAD_LINES_SHOWN:
                bad.append(str(item[1]))
            else:
                bad.append("...")
                break
    except FileNotFoundError:
        raise UsageError(f"--queries: no such file {path!r}") from None
    except OSError as exc:
        raise UsageError(f"--queries: cannot read {path!r} ({type(exc).__name__})") from None
    except ValueError as exc:
        raise UsageError(f"--queries {path!r}: {exc}") from None
    if bad:
        raise UsageError(f"--queries {path!r} has lines that are not queries: " + "; ".join(bad))
    if count == 0:
        raise UsageError(f"--queries {path!r} holds no query")
    return count


def search_config(
    selection: Selection, endpoint: DicomwebEndpoint, retry: http.RetryPolicy
) -> SearchConfig:
    return SearchConfig(
        endpoint=endpoint, paging=selection.paging, retry=retry, read_ahead=selection.read_ahead
    )


class SelectQueries(beam.PTransform):
    """PBegin -> ``QueriesResult(queries, failed)``: the one query of the options, or one per
    line of ``--queries`` (bad lines become dead letters if the file changed since launch)."""

    def __init__(self, selection: Selection) -> None:
        super().__init__()
        self._selection = selection

    def expand(self, pbegin: beam.pvalue.PBegin) -> QueriesResult:
        if self._selection.queries_file:
            return pbegin | "ReadQueries" >> ReadQueries(
                self._selection.queries_file, self._selection.base
            )
        queries = pbegin | "QueryFromOptions" >> beam.Create([self._selection.base])
        failed = pbegin | "NoBadQueries" >> beam.Create([])
        return QueriesResult(queries=queries, failed=failed)
