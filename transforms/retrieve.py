"""Retrieve what targets name from a DICOMweb store with WADO-RS, to files.

    result = targets | RetrieveFromDicomStore(WadoConfig(endpoint), "gs://bucket/export")
    result.retrieved  # RetrievedFile: written now, or found complete by a re-run
    result.failed     # DeadLetter: missing, unsupported, cut answers, retries exhausted, ...

Targets (``transforms.targets.Target``) coarser than the unit of retrieval (an instance, or a
series/study with ``granularity``) are expanded with QIDO; units are de-duplicated, then
reshuffled so retrieval spreads over workers. A worker process keeps at most ``max_concurrency``
requests in flight over pooled connections; bodies stream to files (see ``retriever.py``).
"""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import requests
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.display import DisplayDataItem
from apache_beam.transforms.window import BoundedWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms import metrics, progress
from transforms.dead_letter import DeadLetter, Reason, Stage
from transforms.dicom.uid import check_uid
from transforms.dicomweb.auth import AuthConfig
from transforms.dicomweb.qido import iter_qido, page_end_rule
from transforms.dicomweb.retriever import Retriever, UnitReport
from transforms.dicomweb.wado import WadoConfig
from transforms.dicomweb.wado_files import ManifestEntry
from transforms.errors import DicomwebError, HttpError, InvalidInputError, reason_and_message
from transforms.output_files import OutputFiles
from transforms.pooled import PooledFn, SessionFactory
from transforms.read_lines import ReadLines
from transforms.records import STATUS_RETRIEVED, InstanceUids, RetrievedFile
from transforms.results import RetrieveResult
from transforms.targets import LEVELS, SERIES, STUDIES, Target, parse_target_line

FAILED_TAG = "failed"
DEFAULT_MAX_CONCURRENCY = 8
QIDO_PAGE_SIZE = 1000


def expansion_url(config: WadoConfig, target: Target, unit_level: str) -> str | None:
    """The QIDO URL listing a target's units, or None when the target is a unit already."""
    if LEVELS.index(target.level) >= LEVELS.index(unit_level):
        return None  # as fine as a unit, or finer: retrieved as it is
    endpoint = config.endpoint
    if target.level == STUDIES and unit_level == SERIES:
        return f"{endpoint.study_url(target.study)}/series"
    if target.level == STUDIES:
        return endpoint.study_instances_url(target.study)
    assert target.series is not None
    return f"{endpoint.series_url(target.study, target.series)}/instances"


def unit_of(row: dict[str, Any], target: Target, unit_level: str) -> Target:
    """The unit a QIDO row names (the target's UIDs fill what a server left out)."""
    found = Target.from_dicom_json({"0020000D": {"Value": [target.study]}, **row})
    series = found.series or target.series
    if unit_level == SERIES:
        if series is None:
            raise InvalidInputError(Reason.MISSING_UID, "a series match without SeriesInstanceUID")
        return Target(found.study, series)
    if found.sop is None or series is None:
        raise InvalidInputError(Reason.MISSING_UID, "an instance match without its UIDs")
    return Target(found.study, series, found.sop)


@dataclass
class _Shared:
    session: requests.Session
    retriever: Retriever
    executor: concurrent.futures.ThreadPoolExecutor
    files: OutputFiles


def _close(shared: _Shared) -> None:
    shared.executor.shutdown(wait=True)
    shared.session.close()
    shared.files.cleanup()


def expand_target(
    session: requests.Session, config: WadoConfig, target: Target
) -> list[Target] | DeadLetter:
    """The units a target names (itself when it is one), or the dead letter of listing them.

    A listing that fails half-way yields no unit at all: a target is never half retrieved
    and reported as whole.
    """
    level = config.unit_level
    url = expansion_url(config, target, level)
    if url is None:
        return [target]
    try:
        rows = iter_qido(
            session,
            url,
            policy=config.retry,
            page_size=QIDO_PAGE_SIZE,
            page_end=page_end_rule(config.endpoint),
        )
        units = [unit_of(row, target, level) for row in rows]
    except Exception as exc:  # noqa: BLE001 - the exception boundary of a target
        return _select_letter(config, target, url, exc)
    if not units:
        empty = HttpError(
            Reason.NOT_FOUND, f"the store lists nothing at level {level} for this target"
        )
        return _select_letter(config, target, url, empty)
    return units


def _select_letter(config: WadoConfig, target: Target, url: str, exc: Exception) -> DeadLetter:
    http_error = exc if isinstance(exc, HttpError) else None
    known = isinstance(exc, DicomwebError | ValueError)
    return DeadLetter(
        stage=Stage.SELECT,
        source=config.endpoint.redacted(url),
        reason=getattr(exc, "reason", Reason.BAD_RESPONSE),
        message=(getattr(exc, "message", None) if known else None)
        or f"{type(exc).__name__} listing the target",
        uids=InstanceUids(target.study, target.series or "", target.sop or ""),
        http_status=http_error.status if http_error else None,
        server_detail=http_error.detail if http_error else None,
        attempts=http_error.attempts if http_error else 0,
    )


def _unit_letter(config: WadoConfig, unit: Target, exc: Exception) -> DeadLetter:
    """A unit's dead letter for an exception the retriever let through (or a failed set-up)."""
    reason, message = reason_and_message(exc, Reason.INTERNAL_ERROR)
    url = config.endpoint.resource_url(unit.study, unit.series, unit.sop)
    return DeadLetter(
        stage=Stage.RETRIEVE,
        source=config.endpoint.redacted(url),
        reason=reason,
        message=message,
        uids=InstanceUids(unit.study, unit.series or "", unit.sop or ""),
    )


@dataclass
class _Listing:
    session: requests.Session
    executor: concurrent.futures.ThreadPoolExecutor


def _close_listing(shared: _Listing) -> None:
    shared.executor.shutdown(wait=True)
    shared.session.close()


class _ExpandFn(PooledFn[_Listing]):
    """Target -> units, listing coarser targets with QIDO on a per-process pool (a cohort of
    thousands of studies is listed ``max_concurrency`` at a time, not one after another)."""

    def __init__(
        self,
        config: WadoConfig,
        auth: AuthConfig,
        max_concurrency: int,
        pool_key: str,
        session_factory: SessionFactory | None,
    ) -> None:
        super().__init__(
            auth=auth,
            max_concurrency=max_concurrency,
            pool_key=pool_key,
            session_factory=session_factory,
        )
        self._config = config

    def create_shared(self) -> _Listing:
        executor = concurrent.futures.ThreadPoolExecutor(
            self._max_concurrency, thread_name_prefix="qido-expand"
        )
        return _Listing(self.new_session(self._config.endpoint.base_url), executor)

    close_shared = staticmethod(_close_listing)

    def process(
        self,
        target: Target,
        window: BoundedWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
    ) -> Iterator[object]:
        url = expansion_url(self._config, target, self._config.unit_level)
        if url is None:
            yield _keyed(target)  # a unit already: no request, no hop through the pool
            return
        shared = self.shared()
        context = (target, url, window, timestamp)
        if shared is None:
            self.fail_unset(context)
        else:
            self.submit(
                shared.executor,
                expand_target,
                shared.session,
                self._config,
                target,
                context=context,
            )
        yield from self.collect(keep=2 * self._max_concurrency)

    def emit(self, future: concurrent.futures.Future[Any], context: Any) -> Iterator[object]:
        target, url, window, timestamp = context
        try:
            outcome = future.result()
        except Exception as exc:  # the boundary: the target's dead letter, never a failed bundle
            outcome = _select_letter(self._config, target, url, exc)
        if isinstance(outcome, DeadLetter):
            metrics.count_dead_letter(outcome)
            value = WindowedValue(outcome, timestamp, (window,))
            yield beam.pvalue.TaggedOutput(FAILED_TAG, value)
        else:
            for unit in outcome:
                yield WindowedValue(_keyed(unit), timestamp, (window,))


def _keyed(unit: Target) -> tuple[str, tuple[str, str | None, str | None]]:
    """A unit as it crosses the shuffle: its key (what de-duplicates) and its UIDs as a plain
    tuple (cheap to encode; read back without parsing and checking the UIDs again)."""
    return unit.key, (unit.study, unit.series, unit.sop)


class _RetrieveFn(PooledFn[_Shared]):
    """Retrieves units from a per-process pool; emits outcomes on the bundle's thread."""

    def __init__(
        self,
        config: WadoConfig,
        output: str,
        auth: AuthConfig,
        max_concurrency: int,
        pool_key: str,
        session_factory: SessionFactory | None,
    ) -> None:
        super().__init__(
            auth=auth,
            max_concurrency=max_concurrency,
            pool_key=pool_key,
            session_factory=session_factory,
        )
        self._config = config
        self._output = output
        self._counts = _Counts()

    def create_shared(self) -> _Shared:
        session = self.new_session(self._config.endpoint.base_url)
        files = OutputFiles(self._output)
        retriever = Retriever(session, self._config, files)
        executor = concurrent.futures.ThreadPoolExecutor(
            self._max_concurrency, thread_name_prefix="wado"
        )
        return _Shared(session, retriever, executor, files)

    close_shared = staticmethod(_close)

    def start_bundle(self) -> None:
        super().start_bundle()
        self._counts = _Counts()

    def process(
        self,
        grouped: tuple[str, Iterable[tuple[str, str | None, str | None]]],
        window: BoundedWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
    ) -> Iterator[object]:
        yield from self._submit(grouped, window, timestamp)

    def _submit(
        self,
        grouped: tuple[str, Iterable[tuple[str, str | None, str | None]]],
        window: BoundedWindow,
        timestamp: Timestamp,
    ) -> Iterator[object]:
        shared = self.shared()
        # Every value of a key names the same unit (the key is made of its UIDs): one fetch.
        unit = Target(*next(iter(grouped[1])))
        if shared is None:
            self.fail_unset(context=(unit, window, timestamp))
        else:
            self.submit(
                shared.executor, shared.retriever.retrieve, unit, context=(unit, window, timestamp)
            )
        # Enough queued work to keep the pool busy, without holding a whole bundle in memory.
        yield from self.collect(keep=2 * self._max_concurrency)

    def finish_bundle(self) -> Iterator[object]:
        yield from super().finish_bundle()
        self._counts.flush()

    def emit(self, future: concurrent.futures.Future[Any], context: Any) -> Iterator[object]:
        unit, window, timestamp = context
        try:
            report = future.result()
        except Exception as exc:  # the boundary: the unit's dead letter, never a failed bundle
            report = UnitReport(outcomes=[_unit_letter(self._config, unit, exc)])
        yield from _emit(report, window, timestamp, self._counts)


class _RetrieveWithSideInputsFn(_RetrieveFn):
    """``_RetrieveFn`` that also knows an earlier manifest and the sizes the selection recorded.

    A separate class because a side input costs a stage even when empty; most runs have none.
    """

    def process(  # type: ignore[override]
        self,
        grouped: tuple[str, Iterable[tuple[str, str | None, str | None]]],
        previous: Mapping[str, ManifestEntry],
        expected: Mapping[str, ManifestEntry],
        window: BoundedWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
    ) -> Iterator[object]:
        shared = self.shared()
        if shared is not None and previous:
            shared.retriever.previous = previous
        if shared is not None and expected:
            shared.retriever.expected = expected
        yield from self._submit(grouped, window, timestamp)


class _Counts:
    """Counter increments of a bundle, summed and sent to Beam once at its end: a Beam counter
    update costs more than the retrieval's own bookkeeping of a small instance."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}

    def add(self, name: str, value: int = 1) -> None:
        if value:
            self._values[name] = self._values.get(name, 0) + value

    def flush(self) -> None:
        for name, value in self._values.items():
            metrics.inc(name, value)
        self._values.clear()


def _emit(
    report: UnitReport, window: BoundedWindow, timestamp: Timestamp, counts: _Counts
) -> Iterator[object]:
    files = [o for o in report.outcomes if isinstance(o, RetrievedFile)]
    written = [f for f in files if f.status == STATUS_RETRIEVED]
    progress.for_label("retrieve").add(
        items=len(files),
        nbytes=sum(f.bytes for f in written),
        failed=len(report.outcomes) - len(files),
    )
    counts.add(metrics.UNITS_RETRIEVED)
    counts.add(metrics.HTTP_REQUESTS, report.stats.requests)
    counts.add(metrics.HTTP_RETRIES, report.stats.retries)
    counts.add(metrics.THROTTLED_MS, int(report.stats.throttled_seconds * 1000))
    for outcome in report.outcomes:
        value = WindowedValue(outcome, timestamp, (window,))
        if isinstance(outcome, RetrievedFile):
            if outcome.status == STATUS_RETRIEVED:
                counts.add(metrics.FILES_RETRIEVED)
                counts.add(metrics.BYTES_RETRIEVED, outcome.bytes)
            else:
                counts.add(metrics.FILES_ALREADY_COMPLETE)
            yield value
        else:
            metrics.count_dead_letter(outcome)  # rare: counted at once
            yield beam.pvalue.TaggedOutput(FAILED_TAG, value)


def manifest_entry(line: str) -> tuple[str, ManifestEntry] | None:
    """A ``retrieved-*.jsonl`` line as (path, entry); None for a line that is not one."""
    try:
        data = json.loads(line)
        return str(data["path"]), ManifestEntry(int(data["bytes"]), str(data["sha256"]))
    except (ValueError, KeyError, TypeError):
        return None


def _manifest_pairs(line: str) -> Iterable[tuple[str, ManifestEntry]]:
    entry = manifest_entry(line)
    return [entry] if entry else []


def parse_selection_line(line: str, line_number: int) -> tuple[Target, ManifestEntry | None] | None:
    """A ``--uids_file`` line: what ``parse_target_line`` reads, or a JSON line of this
    project's own records (``stored-*.jsonl`` of pipelines.store, ``retrieved-*.jsonl``), whose
    ``bytes`` (and ``sha256``) ``verify`` then checks the retrieved file against."""
    text = line.strip()
    if text.startswith("{") and '"sop_uid"' in text:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and "study_uid" in data:
            where = f"line {line_number}"
            try:
                uids = [
                    None if data.get(key) is None else check_uid(data.get(key), name)
                    for key, name in (
                        ("study_uid", "study_uid"),
                        ("series_uid", "series_uid"),
                        ("sop_uid", "sop_uid"),
                    )
                ]
                if uids[0] is None:
                    raise InvalidInputError(Reason.MISSING_UID, "study_uid is missing")
                target = Target(uids[0], uids[1], uids[2])
            except InvalidInputError as exc:
                raise InvalidInputError(exc.reason, f"{where}: {exc.message}") from None
            except ValueError:
                raise InvalidInputError(
                    Reason.MISSING_UID, f"{where}: sop_uid without series_uid"
                ) from None
            size, sha = data.get("bytes"), data.get("sha256")
            expected = None
            if isinstance(size, int) and target.sop is not None:
                expected = ManifestEntry(size, sha if isinstance(sha, str) else None)
            return target, expected
    plain = parse_target_line(line, line_number)
    return None if plain is None else (plain, None)


class RetrieveFromDicomStore(beam.PTransform):
    """``Target`` PCollection -> ``RetrieveResult(retrieved, failed)``.

    Args:
      config: what to retrieve and how (``WadoConfig``: what, granularity, layout, verify...).
      output: prefix (local or gs://) the files are written below.
      auth: credentials, built on each worker.
      max_concurrency: requests in flight per worker process at most.
      previous_manifest: glob of an earlier run's ``retrieved-*.jsonl``: files listed there
        with the same size and hash are not fetched again. DICOM files are recognised as
        complete without it (they parse to the end and hold the SOP Instance UID asked for).
      expected: (SOP Instance UID, ManifestEntry) pairs: the size (and hash) ``verify`` checks
        each retrieved instance against (from a store job's records or an earlier manifest).
      session_factory: builds the HTTP session instead of ``auth`` (tests, custom transports).
    """

    def __init__(
        self,
        config: WadoConfig,
        output: str,
        *,
        auth: AuthConfig | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        previous_manifest: str | None = None,
        expected: beam.PCollection | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        super().__init__()
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be positive")
        self._config = config
        self._output = output.rstrip("/")
        self._auth = auth or AuthConfig()
        self._max_concurrency = max_concurrency
        self._previous_manifest = previous_manifest
        self._expected = expected
        self._session_factory = session_factory
        self._pool_key = f"wado-{uuid.uuid4().hex}"

    def expand(self, targets: beam.PCollection) -> RetrieveResult:
        expanded = targets | "ExpandToUnits" >> beam.ParDo(
            _ExpandFn(
                self._config,
                self._auth,
                self._max_concurrency,
                f"{self._pool_key}-expand",
                self._session_factory,
            )
        ).with_outputs(FAILED_TAG, main="units")
        # One shuffle both de-duplicates the units (grouped by their key) and spreads them over
        # workers (keys are hashed to workers), as Distinct then Reshuffle would in two. The
        # expansion emits (key, UIDs) and the retrieval reads the group: no step of its own
        # on either side, which is a fair share of a small instance's cost.
        units = expanded.units | "DistinctAndSpread" >> beam.GroupByKey()
        args = (
            self._config,
            self._output,
            self._auth,
            self._max_concurrency,
            self._pool_key,
            self._session_factory,
        )
        has_previous = bool(self._previous_manifest and _matches(self._previous_manifest))
        if has_previous or self._expected is not None:
            pipeline = targets.pipeline
            retrieve = beam.ParDo(
                _RetrieveWithSideInputsFn(*args),
                beam.pvalue.AsDict(self._previous(pipeline, has_previous)),
                beam.pvalue.AsDict(self._expected_pairs(pipeline)),
            )
        else:
            retrieve = beam.ParDo(_RetrieveFn(*args))
        fetched = units | "RetrieveUnits" >> retrieve.with_outputs(FAILED_TAG, main="retrieved")
        failed = (expanded[FAILED_TAG], fetched[FAILED_TAG]) | "FlattenFailed" >> beam.Flatten()
        return RetrieveResult(retrieved=fetched.retrieved, failed=failed)

    def _previous(self, pipeline: beam.Pipeline, has_previous: bool) -> beam.PCollection:
        if has_previous and self._previous_manifest:
            return (
                pipeline
                | "ReadPreviousManifest" >> ReadLines(self._previous_manifest)
                | "ParseManifest" >> beam.FlatMap(_manifest_pairs)
            )
        return pipeline | "NoPreviousManifest" >> beam.Create([])

    def _expected_pairs(self, pipeline: beam.Pipeline) -> beam.PCollection:
        if self._expected is not None:
            return self._expected
        return pipeline | "NoExpectedSizes" >> beam.Create([])

    def display_data(self) -> dict[str, object]:
        endpoint = self._config.endpoint
        return {
            "dicomweb_url": DisplayDataItem(
                endpoint.redacted(endpoint.base_url), label="DICOMweb URL"
            ),
            "what": self._config.what,
            "granularity": self._config.granularity,
            "layout": self._config.layout.template,
            "max_concurrency": self._max_concurrency,
        }


def _matches(pattern: str) -> bool:
    try:
        return bool(FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - a pattern that matches nothing may raise
        return False
