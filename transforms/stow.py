"""Store validated DICOM files in a DICOMweb store with STOW-RS.

    result = read.files | WriteToDicomStore(StowConfig(endpoint), auth=AuthConfig("google"))
    result.stored  # StoredInstance: stored now, or already present
    result.failed  # DeadLetter: duplicates in the input, refused, retries exhausted, ...

Files are grouped by StudyInstanceUID; per study, repeated SOP Instance UIDs are resolved
(identical copies ride with their twin, other bytes are ``conflicting_duplicate``), the store is
asked once which instances it holds (before the batches are spread, so once per study on any
runner), and the rest is cut into batches bounded by count and bytes; each batch is one
``multipart/related`` POST to ``/studies/{study}`` (or one single-part POST per instance). A
worker process keeps at most ``max_concurrency`` requests in flight, over pooled connections,
streaming file bytes from disk or Cloud Storage. Every DoFn has an exception boundary: an
unexpected error is an ``internal_error`` dead letter for the files concerned.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator
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
from transforms.dicomweb.batching import batch_files, dedupe_study
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.stow import Outcome, StoreReport, StowClient, StowConfig, twin_outcomes
from transforms.errors import HttpError, describe_exception
from transforms.files import open_source
from transforms.pooled import PooledFn, SessionFactory
from transforms.records import STATUS_STORED, DicomFile, StoredInstance, StowBatch
from transforms.results import StoreResult
from transforms.spread import Spread

FAILED_TAG = "failed"
DEFAULT_BATCH_SIZE = 50
# Small enough that a few studies of large instances still make more requests than there are
# slots: a server answers one request at a time per connection, so 4 batches of 25 MB kept 4 of 8
# connections busy (200 CT of 512x512 into Orthanc: 42 inst/s at 64 MiB, 79 at 8 MiB).
DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 8

_log = logging.getLogger(__name__)


def _study_key(f: DicomFile) -> tuple[str, DicomFile]:
    return f.uids.study, f


@dataclass
class _Shared:
    session: requests.Session
    client: StowClient
    executor: concurrent.futures.ThreadPoolExecutor


def _close(shared: _Shared) -> None:
    shared.executor.shutdown(wait=True)
    shared.session.close()


class _SharedClientFn(PooledFn[_Shared]):
    """A DoFn using the per-process session, client and pool of its transform."""

    def __init__(
        self,
        config: StowConfig,
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

    def create_shared(self) -> _Shared:
        session = self.new_session(self._config.endpoint.base_url)
        client = StowClient(session, self._config, opener=open_source)
        executor = concurrent.futures.ThreadPoolExecutor(
            self._max_concurrency, thread_name_prefix="stow"
        )
        return _Shared(session, client, executor)

    close_shared = staticmethod(_close)

    def _unusable(
        self, files: Iterable[DicomFile], window: BoundedWindow, timestamp: Timestamp
    ) -> Iterator[object]:
        for f in files:
            letter = DeadLetter(
                stage=Stage.STORE,
                source=f.path,
                reason=Reason.CREDENTIALS_ERROR,
                message=self.setup_error or "no HTTP session",
                uids=f.uids,
            )
            metrics.count_dead_letter(letter)
            yield beam.pvalue.TaggedOutput(FAILED_TAG, WindowedValue(letter, timestamp, (window,)))


def content_hash(f: DicomFile) -> str:
    """SHA-256 of the bytes that would be sent for ``f`` (read only for repeated SOP UIDs)."""
    digest = hashlib.sha256(f.file_meta_prefix)
    with open_source(f.path) as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Decided:
    """Outcomes decided while planning (instances found present, dead letters), already counted.

    They travel with the batches to the sending step, which hands them on: the transform's
    outputs then come from one step and need no Flatten (on the FnApiRunner, flattening two
    steps' outputs costs an encoding and a decoding of every stored instance).
    """

    outcomes: tuple[Outcome, ...]


def _decided(
    items: Iterable[object], window: BoundedWindow, timestamp: Timestamp
) -> Iterator[object]:
    """Batches as they come; tagged outcomes gathered into one ``_Decided`` element."""
    outcomes: list[Outcome] = []
    for item in items:
        if isinstance(item, beam.pvalue.TaggedOutput):
            value = item.value
            outcomes.append(value.value if isinstance(value, WindowedValue) else value)
        else:
            yield item
    if outcomes:
        yield WindowedValue(_Decided(tuple(outcomes)), timestamp, (window,))


@dataclass
class _StudyPlan:
    """What planning one study found, made on a pool thread; emitted on the bundle's thread."""

    study: str
    files: list[DicomFile]
    letters: list[DeadLetter]
    report: StoreReport | None  # outcomes of instances found present (None: no lookup)
    batches: list[StowBatch]
    lookup_error: str | None = None


class _PlanBatchesFn(_SharedClientFn):
    """Per study: resolve repeated SOP UIDs, look the study up once, cut the rest in batches.

    The lookup sits here, after the GroupByKey and before the batches are spread, so it is one
    per study on any runner and any number of worker processes. Lookups of several studies run
    at once on the shared pool (as many as ``max_concurrency``); Beam metrics and outputs are
    emitted on the bundle's thread.
    """

    def __init__(self, max_count: int, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_count = max_count
        self._max_bytes = max_bytes

    def process(
        self,
        element: tuple[str, Iterable[DicomFile]],
        window: BoundedWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
    ) -> Iterator[object]:
        study, files = element
        files = list(files)
        if self._shared is None:
            yield from _decided(self._unusable(files, window, timestamp), window, timestamp)
            return
        self.submit(
            self._shared.executor, self._plan, study, files, context=(files, window, timestamp)
        )
        yield from self.collect(keep=2 * self._max_concurrency)

    def emit(self, future: concurrent.futures.Future[Any], context: Any) -> Iterator[object]:
        files, window, timestamp = context
        try:
            plan = future.result()
        except Exception as exc:  # the boundary: this study's files become dead letters
            letters = _internal_errors(files, exc, window, timestamp)
            yield from _decided(letters, window, timestamp)
            return
        yield from _decided(self._emit_plan(plan, window, timestamp), window, timestamp)

    def _plan(self, study: str, files: list[DicomFile]) -> _StudyPlan:
        """Runs on a pool thread: no Beam metrics here."""
        assert self._shared is not None
        client = self._shared.client
        deduped = dedupe_study(files, content_hash)
        to_send = deduped.kept
        report: StoreReport | None = None
        lookup_error = None
        if self._config.check_existing:
            report = StoreReport()
            try:
                existing = client.lookup_existing(study, report)
            except Exception as exc:
                # Sending anyway is safe: the server's own answer decides. Once per study.
                lookup_error = (
                    f"{exc.reason}: {exc.message}"
                    if isinstance(exc, HttpError)
                    else describe_exception(exc)
                )
            else:
                present, to_send = client.existing_outcomes(deduped.kept, existing)
                report.outcomes.extend(present)
            # Copies of instances found present get that outcome here; the others ride along
            # with their twin in its batch.
            present_twins = [
                (o.source, d) for o in report.outcomes for d in deduped.twins.get(o.source, ())
            ]
            report.outcomes.extend(twin_outcomes(report.outcomes, present_twins))
        batches = list(
            batch_files(
                study,
                to_send,
                max_count=self._max_count,
                max_bytes=self._max_bytes,
                twins=deduped.twins,
            )
        )
        return _StudyPlan(study, files, deduped.letters, report, batches, lookup_error)

    def _emit_plan(
        self, plan: _StudyPlan, window: BoundedWindow, timestamp: Timestamp
    ) -> Iterator[object]:
        for letter in plan.letters:
            metrics.count_dead_letter(letter)
            yield beam.pvalue.TaggedOutput(FAILED_TAG, WindowedValue(letter, timestamp, (window,)))
        if plan.lookup_error is not None:
            metrics.inc(metrics.EXISTENCE_CHECKS_FAILED)
            _log.warning(
                "could not check which instances of a study the store holds (%s); "
                "sending its %d instances anyway",
                plan.lookup_error,
                sum(len(b.files) for b in plan.batches),
            )
        if plan.report is not None:
            for value in _emit(plan.report, window, timestamp):
                yield value if isinstance(value, beam.pvalue.TaggedOutput) else _as("stored", value)
        for batch in plan.batches:
            yield WindowedValue(batch, timestamp, (window,))


def _internal_errors(
    files: list[DicomFile], exc: BaseException, window: BoundedWindow, timestamp: Timestamp
) -> Iterator[object]:
    message = describe_exception(exc)
    _log.warning("planning a study failed: %s", message)
    for f in files:
        letter = DeadLetter(
            stage=Stage.STORE,
            source=f.path,
            reason=Reason.INTERNAL_ERROR,
            message=message,
            uids=f.uids,
        )
        metrics.count_dead_letter(letter)
        yield beam.pvalue.TaggedOutput(FAILED_TAG, WindowedValue(letter, timestamp, (window,)))


def _as(tag: str, value: object) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(tag, value)


class _StowFn(_SharedClientFn):
    """Sends batches from a per-process pool; emits outcomes on the bundle's thread."""

    def process(
        self,
        batch: StowBatch | _Decided,
        window: BoundedWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
    ) -> Iterator[object]:
        if isinstance(batch, _Decided):  # counted when planned: handed on as they are
            for outcome in batch.outcomes:
                value = WindowedValue(outcome, timestamp, (window,))
                yield value if isinstance(outcome, StoredInstance) else _as(FAILED_TAG, value)
            return
        if self._shared is None:
            yield from self._unusable(
                [*batch.files, *(d for _, d in batch.duplicates)], window, timestamp
            )
            return
        # The study was looked up once, before its batches were spread (see _PlanBatchesFn).
        self.submit(
            self._shared.executor,
            functools.partial(self._shared.client.store, check_existing=False),
            batch,
            context=(batch, window, timestamp),
        )
        # Enough queued work to keep the pool busy, without holding a whole bundle in memory.
        yield from self.collect(keep=2 * self._max_concurrency)

    def emit(self, future: concurrent.futures.Future[Any], context: Any) -> Iterator[object]:
        batch, window, timestamp = context
        yield from _emit(_report_of(future, batch), window, timestamp)


def _report_of(future: concurrent.futures.Future[StoreReport], batch: StowBatch) -> StoreReport:
    """The batch's report; an exception the client let through becomes its dead letters."""
    try:
        return future.result()
    except Exception as exc:  # the boundary: never a failed bundle
        message = describe_exception(exc)
        files = [*batch.files, *(d for _, d in batch.duplicates)]
        return StoreReport(
            outcomes=[
                DeadLetter(
                    stage=Stage.STORE,
                    source=f.path,
                    reason=Reason.INTERNAL_ERROR,
                    message=message,
                    uids=f.uids,
                )
                for f in files
            ]
        )


def _emit(report: StoreReport, window: BoundedWindow, timestamp: Timestamp) -> Iterator[object]:
    stored = [o for o in report.outcomes if isinstance(o, StoredInstance)]
    progress.for_label("store").add(
        items=len(stored),
        nbytes=sum(o.bytes for o in stored),
        failed=len(report.outcomes) - len(stored),
    )
    metrics.inc(metrics.HTTP_REQUESTS, report.requests)
    metrics.inc(metrics.HTTP_RETRIES, report.retries)
    metrics.add_throttled(report.throttled_seconds)
    # Counted once per report, not once per instance: a Beam counter update costs ~10 us.
    duplicates = stored_now = stored_bytes = already_present = 0
    for outcome in report.outcomes:
        value = WindowedValue(outcome, timestamp, (window,))
        if isinstance(outcome, StoredInstance):
            if outcome.duplicate_of is not None:
                duplicates += 1
            elif outcome.status == STATUS_STORED:
                stored_now += 1
                stored_bytes += outcome.bytes
            else:
                already_present += 1
            yield value
        else:
            metrics.count_dead_letter(outcome)
            yield beam.pvalue.TaggedOutput(FAILED_TAG, value)
    metrics.inc(metrics.INSTANCES_DUPLICATE, duplicates)
    metrics.inc(metrics.INSTANCES_STORED, stored_now)
    metrics.inc(metrics.BYTES_STORED, stored_bytes)
    metrics.inc(metrics.INSTANCES_ALREADY_PRESENT, already_present)


class WriteToDicomStore(beam.PTransform):
    """``DicomFile`` PCollection -> ``StoreResult(stored, failed)``.

    Args:
      config: endpoint and STOW options (single part, storage class, on-exists policy, retries).
      auth: credentials, built on each worker.
      batch_size: instances per request at most (1 in single-part mode).
      max_batch_bytes: bytes per request at most (a larger instance is sent alone).
      max_concurrency: requests in flight per worker process at most.
      session_factory: builds the HTTP session instead of ``auth`` (tests, custom transports).
    """

    def __init__(
        self,
        config: StowConfig,
        *,
        auth: AuthConfig | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        session_factory: SessionFactory | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or max_batch_bytes < 1 or max_concurrency < 1:
            raise ValueError("batch_size, max_batch_bytes and max_concurrency must be positive")
        self._config = config
        self._auth = auth or AuthConfig()
        self._batch_size = 1 if config.single_part else batch_size
        self._max_batch_bytes = max_batch_bytes
        self._max_concurrency = max_concurrency
        self._session_factory = session_factory
        self._pool_key = f"stow-{uuid.uuid4().hex}"

    def expand(self, files: beam.PCollection) -> StoreResult:
        shared: dict[str, Any] = {
            "config": self._config,
            "auth": self._auth,
            "max_concurrency": self._max_concurrency,
            "pool_key": self._pool_key,
            "session_factory": self._session_factory,
        }
        planned = (
            files
            | "KeyByStudy" >> beam.Map(_study_key)
            | "GroupByStudy" >> beam.GroupByKey()
            | "PlanBatches"
            >> beam.ParDo(_PlanBatchesFn(self._batch_size, self._max_batch_bytes, **shared))
        )
        # Batches and the outcomes decided while planning (_Decided) go through one step.
        sent = (
            planned
            | "SpreadBatches" >> Spread()
            | "PostStow" >> beam.ParDo(_StowFn(**shared)).with_outputs(FAILED_TAG, main="stored")
        )
        return StoreResult(stored=sent.stored, failed=sent[FAILED_TAG])

    def display_data(self) -> dict[str, object]:
        return {
            "dicomweb_url": DisplayDataItem(
                DicomwebEndpoint.redacted(self._config.endpoint.base_url), label="DICOMweb URL"
            ),
            "auth": DisplayDataItem(self._auth.kind, label="Authentication"),
            "batch_size": self._batch_size,
            "max_batch_bytes": self._max_batch_bytes,
            "max_concurrency": self._max_concurrency,
            "single_part": self._config.single_part,
            "storage_class": self._config.storage_class or "",
        }
