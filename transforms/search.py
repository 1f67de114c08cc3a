"""Search a DICOMweb store with QIDO-RS: many queries at once, each paged to completion.

    queries = p | ReadQueries("gs://bucket/accessions.csv", SearchQuery(1, "studies"))
    result = queries.queries | SearchDicomStore(SearchConfig(endpoint))
    result.matches  # SearchMatch: one per dataset found, with the id of its query
    result.failed   # DeadLetter: one per query that could not be answered completely

A query's matches are handed on only when the query is complete: they are spooled (in memory,
then in a temporary file past 1 MiB) while it pages, so a query that fails half-way leaves one
dead letter and none of its matches, and a large result never sits in memory. Queries are
spread over workers (Reshuffle) and each worker process runs at most ``max_concurrency`` at once
over pooled connections; with ``SearchConfig(read_ahead=N)`` a large query asks its next pages
while it reads one (at most ``max_concurrency`` such pages ahead per process).
"""

from __future__ import annotations

import concurrent.futures
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import requests
from apache_beam.transforms.display import DisplayDataItem
from apache_beam.transforms.window import BoundedWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms import metrics, progress
from transforms.dead_letter import DeadLetter, Reason, Stage
from transforms.dicomweb.auth import AuthConfig
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.qido import (
    SearchConfig,
    SearchStats,
    SpoolSink,
    TooManyMatches,
    run_search,
)
from transforms.dicomweb.qido_query import (
    FORMAT_CSV,
    describe,
    parse_csv_header,
    queries_format,
    query_from_line,
)
from transforms.errors import HttpError, reason_and_message
from transforms.files import open_source
from transforms.pooled import PooledFn, SessionFactory
from transforms.records import MatchBatch, SearchMatch, SearchQuery
from transforms.results import QueriesResult, SearchResult

FAILED_TAG = "failed"
DEFAULT_MAX_CONCURRENCY = 8
SPOOL_MEMORY_BYTES = 1 << 20


@dataclass
class _Outcome:
    query: SearchQuery
    stats: SearchStats
    spool: SpoolSink | None
    failure: DeadLetter | None


def _dead_letter(query: SearchQuery, reason: str, message: str, **extra: object) -> DeadLetter:
    return DeadLetter(
        stage=Stage.SEARCH,
        source=f"query {query.query_id}",
        reason=reason,
        message=f"{describe(query)}: {message}",
        **extra,  # type: ignore[arg-type]
    )


def answer(
    session: requests.Session,
    config: SearchConfig,
    query: SearchQuery,
    spool_memory: int,
    fetcher: concurrent.futures.Executor | None = None,
) -> _Outcome:
    """Run one query to completion; every failure becomes the query's one dead letter."""
    stats = SearchStats()
    spool = SpoolSink(max_memory=spool_memory)
    try:
        run_search(session, config, query, spool, stats=stats, fetcher=fetcher)
        return _Outcome(query, stats, spool, None)
    except HttpError as exc:
        failure = _dead_letter(
            query,
            exc.reason,
            exc.message,
            http_status=exc.status,
            server_detail=exc.detail,
            attempts=exc.attempts,  # of the request that failed, as for every dead letter
        )
    except TooManyMatches as exc:
        failure = _dead_letter(query, Reason.TOO_MANY_MATCHES, str(exc), attempts=stats.requests)
    except Exception as exc:  # the exception boundary: never a failed bundle
        # Only the type: an exception's text may quote a server's answer (patient data).
        failure = _dead_letter(
            query,
            Reason.INTERNAL_ERROR,
            f"unexpected {type(exc).__name__} while searching",
            attempts=stats.requests,
        )
    spool.close()
    return _Outcome(query, stats, None, failure)


@dataclass
class _Shared:
    session: requests.Session
    executor: concurrent.futures.ThreadPoolExecutor  # runs queries, each fetching its pages
    pages: concurrent.futures.ThreadPoolExecutor  # fetches pages read ahead of large queries


def _close(shared: _Shared) -> None:
    shared.executor.shutdown(wait=True)
    shared.pages.shutdown(wait=True)
    shared.session.close()


class _SearchFn(PooledFn[_Shared]):
    """Runs queries on a per-process pool; emits each query's outcome on the bundle's thread."""

    def __init__(
        self,
        config: SearchConfig,
        auth: AuthConfig,
        max_concurrency: int,
        pool_key: str,
        session_factory: SessionFactory | None,
        spool_memory: int,
        batch_matches: int,
    ) -> None:
        super().__init__(
            auth=auth,
            max_concurrency=max_concurrency,
            pool_key=pool_key,
            session_factory=session_factory,
        )
        self._config = config
        self._spool_memory = spool_memory
        self._batch_matches = batch_matches

    def create_shared(self) -> _Shared:
        executor = concurrent.futures.ThreadPoolExecutor(
            self._max_concurrency, thread_name_prefix="qido"
        )
        # Pages read ahead have their own pool, never waiting on anything, so a query waiting
        # for them cannot starve them; requests in flight stay at most 2 * max_concurrency.
        pages = concurrent.futures.ThreadPoolExecutor(
            self._max_concurrency, thread_name_prefix="qido-page"
        )
        return _Shared(self.new_session(self._config.endpoint.base_url), executor, pages)

    close_shared = staticmethod(_close)

    def process(
        self,
        query: SearchQuery,
        window: BoundedWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
    ) -> Iterator[object]:
        shared = self.shared()
        if shared is None:
            self.fail_unset(context=(query, window, timestamp))
        else:
            self.submit(
                shared.executor,
                answer,
                shared.session,
                self._config,
                query,
                self._spool_memory,
                shared.pages,
                context=(query, window, timestamp),
            )
        # Enough queued queries to keep the pool busy, few enough finished spools waiting.
        yield from self.collect(keep=2 * self._max_concurrency)

    def emit(self, future: concurrent.futures.Future[Any], context: Any) -> Iterator[object]:
        query, window, timestamp = context
        try:
            outcome = future.result()
        except Exception as exc:  # the boundary: the query's one dead letter, never a failed bundle
            reason, message = reason_and_message(exc, Reason.INTERNAL_ERROR)
            outcome = _Outcome(query, SearchStats(), None, _dead_letter(query, reason, message))
        yield from _emit(outcome, window, timestamp, self._batch_matches)


def _emit(
    outcome: _Outcome, window: BoundedWindow, timestamp: Timestamp, batch_matches: int
) -> Iterator[object]:
    stats = outcome.stats
    metrics.inc(metrics.HTTP_REQUESTS, stats.requests)
    metrics.inc(metrics.HTTP_RETRIES, stats.retries)
    metrics.inc(metrics.THROTTLED_MS, int(stats.throttled_seconds * 1000))
    metrics.inc(metrics.QIDO_PAGES, stats.pages)
    metrics.inc(metrics.QIDO_SPLITS, stats.splits)
    if outcome.failure is not None:
        metrics.count_dead_letter(outcome.failure)
        progress.for_label("search").add(failed=1)
        yield beam.pvalue.TaggedOutput(
            FAILED_TAG, WindowedValue(outcome.failure, timestamp, (window,))
        )
        return
    assert outcome.spool is not None
    query = outcome.query
    metrics.inc(metrics.SEARCH_QUERIES)
    metrics.inc(metrics.SEARCH_MATCHES_PREFIX + query.level, outcome.spool.rows)
    progress.for_label("search").add(items=1)
    windows = (window,)
    if not batch_matches:
        for line in outcome.spool.lines():
            yield WindowedValue(SearchMatch(query.query_id, query.level, line), timestamp, windows)
        return
    batch: list[str] = []
    for line in outcome.spool.lines():
        batch.append(line)
        if len(batch) == batch_matches:
            yield WindowedValue(
                MatchBatch(query.query_id, query.level, tuple(batch)), timestamp, windows
            )
            batch = []
    if batch:
        yield WindowedValue(
            MatchBatch(query.query_id, query.level, tuple(batch)), timestamp, windows
        )


class SearchDicomStore(beam.PTransform):
    """``SearchQuery`` PCollection -> ``SearchResult(matches, failed)``.

    Args:
      config: endpoint, paging (page size, page-end rule, caps) and retries.
      auth: credentials, built on each worker.
      max_concurrency: queries in flight per worker process at most (and as many pages read
        ahead for large queries: 2 * max_concurrency requests at most).
      session_factory: builds the HTTP session instead of ``auth`` (tests, custom transports).
      spool_memory: bytes of a query's matches kept in memory before spilling to a temp file.
      batch_matches: 0 (the default) for one ``SearchMatch`` per element of ``matches``; N for
        ``MatchBatch`` elements of up to N matches of one query (for jobs that only write them).
    """

    def __init__(
        self,
        config: SearchConfig,
        *,
        auth: AuthConfig | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        session_factory: SessionFactory | None = None,
        spool_memory: int = SPOOL_MEMORY_BYTES,
        batch_matches: int = 0,
    ) -> None:
        super().__init__()
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be positive")
        if batch_matches < 0:
            raise ValueError("batch_matches must not be negative")
        self._batch_matches = batch_matches
        self._config = config
        self._auth = auth or AuthConfig()
        self._max_concurrency = max_concurrency
        self._session_factory = session_factory
        self._spool_memory = spool_memory
        self._pool_key = f"qido-{uuid.uuid4().hex}"

    def expand(self, queries: beam.PCollection) -> SearchResult:
        searched = (
            queries
            | "SpreadQueries" >> beam.Reshuffle()
            | "Search"
            >> beam.ParDo(
                _SearchFn(
                    self._config,
                    self._auth,
                    self._max_concurrency,
                    self._pool_key,
                    self._session_factory,
                    self._spool_memory,
                    self._batch_matches,
                )
            ).with_outputs(FAILED_TAG, main="matches")
        )
        return SearchResult(matches=searched.matches, failed=searched[FAILED_TAG])

    def display_data(self) -> dict[str, object]:
        paging = self._config.paging
        return {
            "dicomweb_url": DisplayDataItem(
                DicomwebEndpoint.redacted(self._config.endpoint.base_url), label="DICOMweb URL"
            ),
            "auth": DisplayDataItem(self._auth.kind, label="Authentication"),
            "max_concurrency": self._max_concurrency,
            "page_size": paging.page_size or 0,
            "page_end": paging.page_end or "",
        }


# --- queries from a file ----------------------------------------------------------------------


def iter_queries_file(
    path: str, base: SearchQuery
) -> Iterator[SearchQuery | tuple[int, ValueError]]:
    """Each query of a CSV or JSONL file (``base`` plus the line's filters), streamed.

    A line that is not a query is yielded as ``(line_number, error)``. Raises ValueError when
    the file as a whole cannot be read (CSV header with an unknown keyword), OSError when it
    cannot be opened.
    """
    with io.TextIOWrapper(open_source(path), encoding="utf-8-sig", newline="") as text:
        fmt: str | None = None
        header: tuple[str, ...] = ()
        for number, line in enumerate(text, 1):
            if fmt is None:
                if not line.strip():
                    continue
                fmt = queries_format(path, line)
                if fmt == FORMAT_CSV:
                    header = parse_csv_header(line.rstrip("\r\n"))
                    continue
            try:
                query = query_from_line(line, number, base, fmt=fmt, header=header)
            except ValueError as exc:
                yield number, exc
                continue
            if query is not None:
                yield query


class _ReadQueriesFn(beam.DoFn):
    def __init__(self, base: SearchQuery) -> None:
        self._base = base

    def process(self, path: str) -> Iterator[object]:
        try:
            for item in iter_queries_file(path, self._base):
                if isinstance(item, SearchQuery):
                    yield item
                    continue
                number, exc = item
                letter = DeadLetter(
                    stage=Stage.SEARCH,
                    source=f"{path}:{number}",
                    reason=Reason.BAD_QUERY,
                    message=str(exc),
                )
                metrics.count_dead_letter(letter)
                yield beam.pvalue.TaggedOutput(FAILED_TAG, letter)
        except (OSError, ValueError) as exc:
            letter = DeadLetter(
                stage=Stage.SEARCH,
                source=path,
                reason=Reason.BAD_QUERY,
                message=f"cannot read the queries file: {exc}",
            )
            metrics.count_dead_letter(letter)
            yield beam.pvalue.TaggedOutput(FAILED_TAG, letter)


class ReadQueries(beam.PTransform):
    """A queries file (CSV with a header of keywords, or JSONL of filter objects; local or
    gs://) -> ``QueriesResult(queries, failed)``: one ``SearchQuery`` per line, its id the
    line's number, its level, scope and options those of ``base``, its filters ``base``'s plus
    the line's. The file is read in one pass by one worker; ``SearchDicomStore`` spreads the
    queries."""

    def __init__(self, path: str, base: SearchQuery) -> None:
        super().__init__()
        self._path = path
        self._base = base

    def expand(self, pbegin: beam.pvalue.PBegin) -> QueriesResult:
        read = (
            pbegin
            | "QueriesFile" >> beam.Create([self._path])
            | "ParseQueries"
            >> beam.ParDo(_ReadQueriesFn(self._base)).with_outputs(FAILED_TAG, main="queries")
        )
        return QueriesResult(queries=read.queries, failed=read[FAILED_TAG])
