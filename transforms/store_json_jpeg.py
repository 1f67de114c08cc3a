"""Store validated JSON + JPEG pairs in a DICOMweb store, in one of two modes.

    pairs = p | ReadJsonJpegPairs(patterns, options=BuildOptions(...))
    result = pairs.pairs | StoreJsonJpegPairs(config, mode="client")
    result.stored  # CreatedInstance: stored now, or already present
    result.failed  # DeadLetter, with the pair's source (the JSON file) as its source

Pairs are grouped by study into batches bounded by count and bytes (a repeated SOP Instance UID
is dead-lettered, as ``pipelines.store`` does), spread, and sent from a per-process pool of at
most ``max_concurrency`` requests:

* ``client`` (any DICOMweb server): each pair is built into a Part 10 instance in memory just
  before its request, so building overlaps with the server's work, and sent as
  ``multipart/related; type="application/dicom"`` (``Part10StowClient``);
* ``server`` (Google): DICOM JSON + JPEG requests; the store creates the instances
  (``JsonJpegStowClient``).

Both are the store's ``StowClient`` underneath: existing instances skipped, retries,
per-instance outcomes, already-present handling. ``BuildDicomFiles`` writes Part 10 files
instead (``--build_only``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import uuid
from collections.abc import Iterable, Iterator
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
from transforms.dicom.build import PairRow, PreparedInstance, from_row, to_row
from transforms.dicomweb.auth import AuthConfig
from transforms.dicomweb.batching import plan_study
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.stow import StoreReport, StowConfig
from transforms.dicomweb.stow_json import (
    JsonJpegStowClient,
    Part10StowClient,
    as_dicom_file,
    build_from_file,
)
from transforms.errors import InvalidInputError, reason_and_message
from transforms.files import open_source
from transforms.pooled import PooledFn, SessionFactory
from transforms.records import (
    STATUS_BUILT,
    STATUS_STORED,
    CreatedInstance,
    DicomFile,
    StoredInstance,
)
from transforms.results import BuildResult, StoreResult
from transforms.stow import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_CONCURRENCY,
)

FAILED_TAG = "failed"
MODES = ("server", "client")


def instance_path(directory: str, pair: PreparedInstance) -> str:
    """Where a pair's Part 10 file goes: ``<directory>/<SOP Instance UID>.dcm``."""
    return FileSystems.join(directory, f"{pair.uids.sop}.dcm")


def created(
    pair: PreparedInstance, stored: StoredInstance | None = None, **changes: Any
) -> CreatedInstance:
    record = CreatedInstance(
        source=pair.source,
        json_path=pair.json_path,
        jpeg_path=pair.jpeg_path,
        uids=pair.uids,
        sop_class_uid=pair.sop_class_uid,
        transfer_syntax_uid=pair.transfer_syntax_uid,
        retrieve_url=stored.retrieve_url if stored else None,
        bytes=stored.bytes if stored else 0,
        status=stored.status if stored else STATUS_BUILT,
        attempts=stored.attempts if stored else 0,
        generated_uids=pair.generated_uids,
    )
    return dataclasses.replace(record, **changes) if changes else record


def for_pair(letter: DeadLetter, pair: PreparedInstance) -> DeadLetter:
    """A store dead letter named by the pair's source (what a user replays)."""
    return dataclasses.replace(letter, source=pair.source, uids=pair.uids)


def _build_failed(pair: PreparedInstance, reason: str, message: str) -> Any:
    letter = DeadLetter(
        stage=Stage.BUILD, source=pair.source, reason=reason, message=message, uids=pair.uids
    )
    metrics.count_dead_letter(letter)
    return beam.pvalue.TaggedOutput(FAILED_TAG, letter)


class _BuildFn(beam.DoFn):
    """Pair -> Part 10 file written under ``directory`` -> DicomFile."""

    def __init__(self, directory: str, as_created: bool = False) -> None:
        self._directory = directory
        self._as_created = as_created

    def setup(self) -> None:
        if "://" not in self._directory:
            os.makedirs(self._directory, exist_ok=True)

    def process(self, pair: PreparedInstance) -> Iterator[Any]:
        try:
            data = build_from_file(pair, open_source)
            path = instance_path(self._directory, pair)
            _write(path, data)
        except InvalidInputError as exc:
            yield _build_failed(pair, exc.reason, exc.message)
            return
        except OSError as exc:
            yield _build_failed(pair, Reason.UNREADABLE, f"cannot read or write ({exc.strerror})")
            return
        except Exception as exc:  # one odd pair must not fail the bundle
            yield _build_failed(pair, Reason.BUILD_FAILED, f"{type(exc).__name__} building it")
            return
        metrics.inc(metrics.INSTANCES_BUILT)
        if self._as_created:
            yield created(pair, dicom_path=path, bytes=len(data))
            return
        yield DicomFile(
            path=path,
            size=len(data),
            uids=pair.uids,
            sop_class_uid=pair.sop_class_uid,
            transfer_syntax_uid=pair.transfer_syntax_uid,
        )


def _write(path: str, data: bytes) -> None:
    if "://" not in path:
        with open(path, "wb") as out:
            out.write(data)
        return
    with FileSystems.create(path) as out:
        out.write(data)


class BuildDicomFiles(beam.PTransform):
    """``PreparedInstance`` PCollection -> ``BuildResult(files, failed)``: Part 10 files written
    as ``<directory>/<SOP Instance UID>.dcm`` (local or gs://).

    Args:
      directory: where to write them.
      as_created: emit ``CreatedInstance`` records (status ``built``, with ``dicom_path``)
        instead of the ``DicomFile`` records ``WriteToDicomStore`` takes.
    """

    def __init__(self, directory: str, *, as_created: bool = False) -> None:
        super().__init__()
        self._directory = directory
        self._as_created = as_created

    def expand(self, pairs: beam.PCollection) -> BuildResult:
        build = _BuildFn(self._directory, self._as_created)
        out = pairs | "BuildPart10" >> beam.ParDo(build).with_outputs(FAILED_TAG, main="files")
        return BuildResult(files=out.files, failed=out[FAILED_TAG])


# --- server mode --------------------------------------------------------------------------------


def _study_key(p: PreparedInstance) -> tuple[str, PairRow]:
    return p.uids.study, to_row(p)


class _PlanPairBatchesFn(beam.DoFn):
    """One study's pairs -> batches (bounded by count and bytes); a repeated SOP Instance UID
    is dead-lettered (``duplicate_input``) for all but the first source, as the store does."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self._max_count = max_count
        self._max_bytes = max_bytes

    def process(self, element: tuple[str, Iterable[PairRow]]) -> Iterator[Any]:
        study, rows = element
        # JPEG paths are unique (a JPEG claimed twice was dead-lettered), so they key the pairs;
        # planning orders by path, so sources order the same way here.
        by_path: dict[str, tuple[PreparedInstance, PairRow]] = {}
        for row in rows:
            pair = from_row(row)
            by_path[pair.jpeg_path] = (pair, row)
        files = [as_dicom_file(p) for p, _ in by_path.values()]
        for item in plan_study(study, files, max_count=self._max_count, max_bytes=self._max_bytes):
            if isinstance(item, DeadLetter):
                pair = by_path[item.source][0]
                letter = for_pair(dataclasses.replace(item, stage=Stage.VALIDATE), pair)
                metrics.count_dead_letter(letter)
                yield beam.pvalue.TaggedOutput(FAILED_TAG, letter)
            else:
                batch = [by_path[f.path] for f in item.files]
                # Keyed by its first SOP Instance UID (unique) for the grouping that spreads
                # batches over workers (one step, where Reshuffle takes six).
                yield batch[0][0].uids.sop, (study, tuple(row for _, row in batch))


@dataclass
class _Shared:
    session: requests.Session
    client: JsonJpegStowClient | Part10StowClient
    executor: concurrent.futures.ThreadPoolExecutor


def _close(shared: _Shared) -> None:
    shared.executor.shutdown(wait=True)
    shared.session.close()


Batch = tuple[str, tuple[PreparedInstance, ...]]


class _PairStowFn(PooledFn[_Shared]):
    """Sends batches of pairs from a per-process pool; emits outcomes on the bundle's thread."""

    def __init__(
        self,
        config: StowConfig,
        auth: AuthConfig,
        max_concurrency: int,
        pool_key: str,
        session_factory: SessionFactory | None,
        mode: str,
    ) -> None:
        super().__init__(
            auth=auth,
            max_concurrency=max_concurrency,
            pool_key=pool_key,
            session_factory=session_factory,
        )
        self._config = config
        self._mode = mode

    def create_shared(self) -> _Shared:
        session = self.new_session(self._config.endpoint.base_url)
        kind = Part10StowClient if self._mode == "client" else JsonJpegStowClient
        client = kind(session, self._config, opener=open_source)
        executor = concurrent.futures.ThreadPoolExecutor(
            self._max_concurrency, thread_name_prefix="stow-json"
        )
        return _Shared(session, client, executor)

    close_shared = staticmethod(_close)

    def process(
        self,
        element: tuple[str, Iterable[tuple[str, tuple[PairRow, ...]]]],
        window: BoundedWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
    ) -> Iterator[Any]:
        shared = self.shared()
        for study, rows in element[1]:
            pairs = tuple(from_row(r) for r in rows)
            if shared is None:
                self.fail_unset(context=(pairs, window, timestamp))
                continue
            self.submit(
                shared.executor,
                shared.client.store_pairs,
                study,
                pairs,
                context=(pairs, window, timestamp),
            )
            yield from self.collect(keep=2 * self._max_concurrency)

    def emit(self, future: concurrent.futures.Future[Any], context: Any) -> Iterator[object]:
        pairs, window, timestamp = context
        yield from _emit(_report(future, pairs), pairs, window, timestamp)


def _report(
    future: concurrent.futures.Future[StoreReport], pairs: tuple[PreparedInstance, ...]
) -> StoreReport:
    try:
        return future.result()
    except Exception as exc:  # an unexpected error concerns this batch only
        reason, message = reason_and_message(exc, Reason.INTERNAL_ERROR)
        return StoreReport(
            outcomes=[
                DeadLetter(
                    stage=Stage.STORE,
                    source=p.jpeg_path,
                    reason=reason,
                    message=message,
                    uids=p.uids,
                )
                for p in pairs
            ]
        )


def _emit(
    report: StoreReport,
    pairs: tuple[PreparedInstance, ...],
    window: BoundedWindow,
    timestamp: Timestamp,
) -> Iterator[Any]:
    by_sop = {p.uids.sop: p for p in pairs}
    stored = [o for o in report.outcomes if isinstance(o, StoredInstance)]
    progress.for_label("store_json_jpeg").add(
        items=len(stored),
        nbytes=sum(o.bytes for o in stored),
        failed=len(report.outcomes) - len(stored),
    )
    metrics.inc(metrics.HTTP_REQUESTS, report.requests)
    metrics.inc(metrics.HTTP_RETRIES, report.retries)
    metrics.add_throttled(report.throttled_seconds)
    # Counted once a batch, not once a pair (a counter update costs as much as a small step).
    new = [o for o in stored if o.status == STATUS_STORED]
    metrics.inc(metrics.INSTANCES_STORED, len(new))
    metrics.inc(metrics.BYTES_STORED, sum(o.bytes for o in new))
    metrics.inc(metrics.INSTANCES_ALREADY_PRESENT, len(stored) - len(new))
    for outcome in report.outcomes:
        pair = by_sop[outcome.uids.sop] if outcome.uids else None
        if isinstance(outcome, StoredInstance) and pair is not None:
            yield WindowedValue(created(pair, outcome), timestamp, (window,))
        elif isinstance(outcome, DeadLetter):
            letter = for_pair(outcome, pair) if pair is not None else outcome
            metrics.count_dead_letter(letter)
            yield beam.pvalue.TaggedOutput(FAILED_TAG, WindowedValue(letter, timestamp, (window,)))


class StoreJsonJpegPairs(beam.PTransform):
    """``PreparedInstance`` PCollection -> ``StoreResult(stored: CreatedInstance, failed)``.

    Args:
      config: endpoint and STOW options (storage class, on-exists policy, retries).
      mode: ``client`` (build Part 10 here) or ``server`` (the store builds from JSON + JPEG).
      auth, batch_size, max_batch_bytes, max_concurrency, session_factory: as in
        ``WriteToDicomStore``.
      keyed: the input is ``(StudyInstanceUID, to_row(pair))`` already
        (``ReadJsonJpegPairs(keyed=True)``), not ``PreparedInstance``.
    """

    def __init__(
        self,
        config: StowConfig,
        *,
        mode: str,
        auth: AuthConfig | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        session_factory: SessionFactory | None = None,
        keyed: bool = False,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if config.single_part:
            raise ValueError("single_part does not apply to JSON + JPEG pairs")
        if batch_size < 1 or max_batch_bytes < 1 or max_concurrency < 1:
            raise ValueError("batch_size, max_batch_bytes and max_concurrency must be positive")
        self._config = config
        self._mode = mode
        self._auth = auth or AuthConfig()
        self._batch_size = batch_size
        self._max_batch_bytes = max_batch_bytes
        self._max_concurrency = max_concurrency
        self._session_factory = session_factory
        self._keyed = keyed
        self._pool_key = f"stow-json-{uuid.uuid4().hex}"

    def expand(self, pairs: beam.PCollection) -> StoreResult:
        keyed = pairs if self._keyed else pairs | "KeyByStudy" >> beam.Map(_study_key)
        planned = (
            keyed
            | "GroupByStudy" >> beam.GroupByKey()
            | "PlanBatches"
            >> beam.ParDo(_PlanPairBatchesFn(self._batch_size, self._max_batch_bytes)).with_outputs(
                FAILED_TAG, main="batches"
            )
        )
        sent = (
            planned.batches
            | "SpreadBatches" >> beam.GroupByKey()
            | "PostPairs"
            >> beam.ParDo(
                _PairStowFn(
                    self._config,
                    self._auth,
                    self._max_concurrency,
                    self._pool_key,
                    self._session_factory,
                    self._mode,
                )
            ).with_outputs(FAILED_TAG, main="stored")
        )
        failed = (planned[FAILED_TAG], sent[FAILED_TAG]) | "FlattenFailed" >> beam.Flatten()
        return StoreResult(stored=sent.stored, failed=failed)

    def display_data(self) -> dict[str, object]:
        return {
            "dicomweb_url": DisplayDataItem(
                DicomwebEndpoint.redacted(self._config.endpoint.base_url), label="DICOMweb URL"
            ),
            "mode": DisplayDataItem(self._mode, label="Who builds the instances"),
            "auth": DisplayDataItem(self._auth.kind, label="Authentication"),
            "batch_size": self._batch_size,
            "max_batch_bytes": self._max_batch_bytes,
            "max_concurrency": self._max_concurrency,
            "storage_class": self._config.storage_class or "",
        }
