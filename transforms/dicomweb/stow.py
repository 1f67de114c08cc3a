"""Store one batch of instances with STOW-RS and account for every one of them. No Beam here.

``StowClient.store(batch)`` returns one outcome per file: a ``StoredInstance`` (stored now, or
already present) or a ``DeadLetter``; it never raises. Nothing is reported stored unless the
server listed it in its ReferencedSOPSequence. The rules, in the order they apply:

* Before sending, the study's existing SOP Instance UIDs are looked up (QIDO, cached per study;
  ``WriteToDicomStore`` does it once per study before spreading the batches and passes
  ``check_existing=False``), so a re-run sends nothing twice and reports ``already_present`` on
  every server (Orthanc answers a duplicate exactly like a new instance; Google answers 409).
* Transient HTTP failures are retried by ``http.send``; when they persist the batch's instances
  are dead-lettered with ``retries_exhausted``. Redirects follow ``http.redirect_decision``.
* "Already exists" is FailureReason 0x0111, or Google's 0x0110 with its "already exists" detail,
  never words alone; a fresh search of the study must confirm it (else ``unconfirmed``). When an
  earlier attempt of the request lost its answer, the instance is this run's: ``stored``.
* A 4xx that names no instance, or that leaves some instances unnamed, may be the fault of one
  bad neighbour: the unnamed instances are sent again one per request to get their own verdict.
* A file that changed since it was validated is dead-lettered alone; the rest is sent again.
* Any unexpected exception costs the files of the request it happened in (``internal_error``).
* Byte-identical copies carried by the batch get their twin's outcome (``duplicate_of``).
"""

from __future__ import annotations

import collections
import dataclasses
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import requests

from transforms.dead_letter import DeadLetter, Reason, Stage, shorten
from transforms.dicomweb import http
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.multipart import (
    FileSegment,
    Opener,
    Part,
    StreamingBody,
    multipart_related,
    new_boundary,
)
from transforms.dicomweb.qido import study_sop_uids
from transforms.dicomweb.stow_response import BadStowResponse, InstanceResult, parse_stow_response
from transforms.errors import HttpError, SourceChangedError, describe_exception
from transforms.records import (
    STATUS_ALREADY_PRESENT,
    STATUS_STORED,
    DicomFile,
    StoredInstance,
    StowBatch,
)

STORAGE_CLASSES = ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE")
ON_EXISTS_CHOICES = ("skip", "fail")
_ACCEPT = "application/dicom+json, application/dicom+xml;q=0.9"
# Refusals that may be about one instance of the batch (not about credentials or the URL):
# sending the instances the answer did not name one by one gets each its own verdict.
_PER_INSTANCE_REFUSALS = frozenset({400, 409, 413, 422})

Outcome = StoredInstance | DeadLetter


@dataclass(frozen=True)
class StowConfig:
    """How to store.

    Args:
      endpoint: the DICOMweb service.
      single_part: send each instance alone as ``application/dicom`` to ``/studies`` (Google's
        non-standard form) instead of ``multipart/related`` to ``/studies/{study}``.
      storage_class: Google's ``Storage-Class`` header (STANDARD, NEARLINE, COLDLINE, ARCHIVE).
      on_exists: ``skip`` reports instances the store already has as already present; ``fail``
        dead-letters them with reason ``already_exists``.
      check_existing: look up each study's instances before sending (see module docstring).
      retry: retry bounds and timeouts of each request.
    """

    endpoint: DicomwebEndpoint
    single_part: bool = False
    storage_class: str | None = None
    on_exists: str = "skip"
    check_existing: bool = True
    retry: http.RetryPolicy = field(default_factory=http.RetryPolicy)

    def __post_init__(self) -> None:
        if self.storage_class is not None and self.storage_class not in STORAGE_CLASSES:
            raise ValueError(f"storage_class must be one of {', '.join(STORAGE_CLASSES)}")
        if self.on_exists not in ON_EXISTS_CHOICES:
            raise ValueError("on_exists must be 'skip' or 'fail'")


@dataclass
class StoreReport:
    """The outcome of one batch, plus request statistics for metrics."""

    outcomes: list[Outcome] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    throttled_seconds: float = 0.0


class _StudyCache:
    """SOP UIDs known to be in the store, for the last few studies (thread-safe).

    Lookups are single-flight: batches of one study running at once wait for one search.
    """

    def __init__(self, max_studies: int = 16) -> None:
        self._data: collections.OrderedDict[str, set[str]] = collections.OrderedDict()
        self._max = max_studies
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}

    def get_or_fetch(self, study: str, fetch: Callable[[], set[str]]) -> set[str]:
        """The cached set (shared: read only), else what ``fetch()`` returns, then cached."""
        with self._lock:
            if study in self._data:
                self._data.move_to_end(study)
                return self._data[study]
            study_lock = self._fetching.setdefault(study, threading.Lock())
        with study_lock:
            with self._lock:
                if study in self._data:
                    return self._data[study]
            try:
                uids = fetch()
            finally:
                with self._lock:
                    self._fetching.pop(study, None)
            with self._lock:
                self._data[study] = uids
                while len(self._data) > self._max:
                    self._data.popitem(last=False)
            return uids

    def put(self, study: str, uids: set[str]) -> None:
        with self._lock:
            self._data[study] = uids
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def add(self, study: str, uids: Sequence[str]) -> None:
        with self._lock:
            if study in self._data:
                self._data[study].update(uids)


class StowClient:
    """Stores batches through one session; safe to share between threads.

    ``build_request`` is the extension point: a subclass that sends another body (the JSON +
    JPEG clients of ``stow_json``) overrides it and keeps everything else (existence checks,
    retries, per-instance outcomes, already-present handling).
    """

    def __init__(
        self,
        session: requests.Session,
        config: StowConfig,
        *,
        opener: Opener | None = None,
        clock: http.Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._config = config
        self._opener = opener
        self._clock = clock
        self._rng = rng
        self._existing = _StudyCache()

    @property
    def config(self) -> StowConfig:
        return self._config

    @property
    def opener(self) -> Opener | None:
        """How source files are opened (local or through Beam's FileSystems)."""
        return self._opener

    def store(self, batch: StowBatch, *, check_existing: bool | None = None) -> StoreReport:
        """One outcome per file of the batch and per duplicate it carries; never raises.

        ``check_existing`` (default: the config's) looks the study up first; a caller that
        already did (once per study, before spreading the batches) passes False.
        """
        report = StoreReport()
        check = self._config.check_existing if check_existing is None else check_existing
        try:
            to_send = self._skip_existing(batch, report) if check else list(batch.files)
            if self._config.single_part:
                for f in to_send:
                    self._send(batch.study_uid, [f], report, prior_attempts=0)
            elif to_send:
                self._send(batch.study_uid, to_send, report, prior_attempts=0)
        except Exception as exc:  # the boundary: an unexpected error costs these files only
            done = {o.source for o in report.outcomes}
            report.outcomes.extend(
                _dead(f, Reason.INTERNAL_ERROR, describe_exception(exc))
                for f in batch.files
                if f.path not in done
            )
        stored = [o.uids.sop for o in report.outcomes if isinstance(o, StoredInstance)]
        self._existing.add(batch.study_uid, stored)
        report.outcomes.extend(twin_outcomes(report.outcomes, batch.duplicates))
        return report

    def lookup_existing(self, study: str, report: StoreReport | None = None) -> set[str]:
        """SOP Instance UIDs the store holds in ``study`` (cached); raises ``HttpError``."""
        report = report if report is not None else StoreReport()

        def fetch() -> set[str]:
            return self._search(study, report)

        return self._existing.get_or_fetch(study, fetch)

    def existing_outcomes(
        self, files: Sequence[DicomFile], existing: set[str]
    ) -> tuple[list[Outcome], list[DicomFile]]:
        """(outcomes of the files the store already holds, the files to send)."""
        present: list[Outcome] = []
        to_send: list[DicomFile] = []
        for f in files:
            if f.uids.sop in existing:
                present.append(self._already_present(f, attempts=0, result=None))
            else:
                to_send.append(f)
        return present, to_send

    def _search(self, study: str, report: StoreReport) -> set[str]:
        report.requests += 1
        return study_sop_uids(
            self._session, self._config.endpoint, study,
            policy=self._config.retry, clock=self._clock,
            on_retry=lambda status, wait: _count_retry(report, wait),
        )  # fmt: skip

    # --- before sending --------------------------------------------------------------------

    def _skip_existing(self, batch: StowBatch, report: StoreReport) -> list[DicomFile]:
        try:
            existing = self.lookup_existing(batch.study_uid, report)
        except HttpError:
            # Storing anyway is safe: the server deduplicates or says "already exists". The
            # failure is remembered: the study's other batches do not wait for it again.
            self._existing.put(batch.study_uid, set())
            return list(batch.files)
        present, to_send = self.existing_outcomes(batch.files, existing)
        report.outcomes.extend(present)
        return to_send

    # --- sending ---------------------------------------------------------------------------

    def _send(
        self, study: str, files: list[DicomFile], report: StoreReport, *, prior_attempts: int
    ) -> None:
        url, headers, body = self.build_request(study, files)
        report.requests += 1
        try:
            resp = http.send(
                self._session,
                "POST",
                url,
                headers=headers,
                body=body,
                policy=self._config.retry,
                clock=self._clock,
                rng=self._rng,
                on_retry=lambda status, wait: _count_retry(report, wait),
            )
        except SourceChangedError as exc:
            changed = [f for f in files if f.path == exc.path]
            report.outcomes.extend(
                _dead(f, Reason.UNREADABLE, exc.message, attempts=prior_attempts) for f in changed
            )
            rest = [f for f in files if f.path != exc.path]
            if rest:
                self._send(study, rest, report, prior_attempts=prior_attempts)
            return
        except Exception as exc:
            if not isinstance(exc, HttpError):  # unexpected: these files only, not the batch
                if len(files) > 1:
                    # It may be one file's doing (e.g. a gs:// object deleted since it was
                    # read, which is not an OSError): each is sent alone for its own verdict.
                    for f in files:
                        self._send(study, [f], report, prior_attempts=prior_attempts)
                    return
                report.outcomes.extend(
                    _dead(
                        f,
                        Reason.INTERNAL_ERROR,
                        describe_exception(exc),
                        attempts=prior_attempts + 1,
                    )
                    for f in files
                )
                return
            report.outcomes.extend(
                _dead(
                    f,
                    exc.reason,
                    exc.message,
                    status=exc.status,
                    detail=exc.detail,
                    attempts=prior_attempts + exc.attempts,
                )
                for f in files
            )
            return
        self._interpret(study, files, resp, report, prior_attempts + resp.attempts)

    def build_request(
        self, study: str, files: list[DicomFile]
    ) -> tuple[str, dict[str, str], Callable[[], StreamingBody]]:
        """URL, headers and a body factory (called again for each attempt) for one batch."""
        headers = {"Accept": _ACCEPT}
        if self._config.storage_class:
            headers["Storage-Class"] = self._config.storage_class
        opener = self._opener
        if self._config.single_part:
            (f,) = files
            headers["Content-Type"] = "application/dicom"

            def single() -> StreamingBody:
                return StreamingBody(_segments(f), **({"opener": opener} if opener else {}))

            return self._config.endpoint.studies_url(), headers, single
        boundary = new_boundary()
        parts = [Part("application/dicom", _segments(f)) for f in files]

        def multi() -> StreamingBody:
            kwargs = {"opener": opener} if opener else {}
            body, _ = multipart_related(
                parts, root_type="application/dicom", boundary=boundary, **kwargs
            )
            return body

        headers["Content-Type"] = (
            f'multipart/related; type="application/dicom"; boundary={boundary}'
        )
        return self._config.endpoint.study_url(study), headers, multi

    # --- reading the answer ----------------------------------------------------------------

    def _interpret(
        self,
        study: str,
        files: list[DicomFile],
        resp: http.Response,
        report: StoreReport,
        attempts: int,
    ) -> None:
        try:
            parsed = parse_stow_response(resp.body, resp.content_type)
        except BadStowResponse as exc:
            if 200 <= resp.status < 300:
                report.outcomes.extend(
                    _dead(
                        f,
                        Reason.BAD_RESPONSE,
                        str(exc),
                        status=resp.status,
                        detail=resp.text_detail(),
                        attempts=attempts,
                    )
                    for f in files
                )
                return
            parsed = None  # an error page: handled as "names no instance" below
        unnamed: list[DicomFile] = []
        confirm = _Confirmation(self, study, report)
        for f in files:
            sop = f.uids.sop
            if parsed and sop in parsed.referenced:
                report.outcomes.append(self._stored(f, parsed.referenced[sop], attempts))
            elif parsed and sop in parsed.failed:
                report.outcomes.append(self._failed(f, parsed.failed[sop], resp, attempts, confirm))
            else:
                unnamed.append(f)
        if not unnamed:
            return
        if resp.status in _PER_INSTANCE_REFUSALS and len(files) > 1:
            for f in unnamed:  # isolate each one: it gets its own verdict
                self._send(study, [f], report, prior_attempts=attempts)
            return
        if 200 <= resp.status < 300:
            reason, message = (
                Reason.NOT_IN_RESPONSE,
                (
                    f"the server answered HTTP {resp.status} but did not list this instance as "
                    "stored or failed (is the study URL right for it?)"
                ),
            )
        else:
            reason, message = Reason.HTTP_ERROR, f"the server refused it with HTTP {resp.status}"
        report.outcomes.extend(
            _dead(
                f,
                reason,
                message,
                status=resp.status,
                detail=None if parsed and parsed.recognised else resp.text_detail(),
                attempts=attempts,
            )
            for f in unnamed
        )

    def _stored(self, f: DicomFile, result: InstanceResult, attempts: int) -> StoredInstance:
        return StoredInstance(
            source=f.path,
            uids=f.uids,
            sop_class_uid=f.sop_class_uid,
            retrieve_url=result.retrieve_url,
            bytes=f.size,
            status=STATUS_STORED,
            attempts=attempts,
        )

    def _already_present(
        self, f: DicomFile, *, attempts: int, result: InstanceResult | None
    ) -> Outcome:
        if self._config.on_exists == "fail":
            return _dead(
                f,
                Reason.ALREADY_EXISTS,
                "the store already holds this SOP Instance UID",
                attempts=attempts,
                server_reason=result.failure_reason_hex if result else None,
                detail=result.detail if result else None,
            )
        u = f.uids
        return StoredInstance(
            source=f.path,
            uids=u,
            sop_class_uid=f.sop_class_uid,
            retrieve_url=self._config.endpoint.instance_url(u.study, u.series, u.sop),
            bytes=0,
            status=STATUS_ALREADY_PRESENT,
            attempts=attempts,
        )

    def _failed(
        self,
        f: DicomFile,
        result: InstanceResult,
        resp: http.Response,
        attempts: int,
        confirm: _Confirmation,
    ) -> Outcome:
        status = resp.status
        if result.already_exists:
            found = confirm.holds(f.uids.sop)
            if found is not True:
                return _dead(
                    f,
                    Reason.UNCONFIRMED,
                    "the server said this instance already exists, but "
                    + (
                        "a search of the study does not find it"
                        if found is False
                        else "the search to confirm it failed"
                    ),
                    status=status,
                    server_reason=result.failure_reason_hex,
                    detail=result.detail,
                    attempts=attempts,
                )
            if resp.uncertain_attempts:
                # An earlier attempt of this very request stored it; its answer was lost.
                u = f.uids
                return StoredInstance(
                    source=f.path,
                    uids=u,
                    sop_class_uid=f.sop_class_uid,
                    retrieve_url=self._config.endpoint.instance_url(u.study, u.series, u.sop),
                    bytes=f.size,
                    status=STATUS_STORED,
                    attempts=attempts,
                )
            return self._already_present(f, attempts=attempts, result=result)
        return _dead(
            f,
            Reason.REJECTED,
            f"the server refused this instance (FailureReason {result.failure_reason_hex})",
            status=status,
            server_reason=result.failure_reason_hex,
            detail=result.detail,
            attempts=attempts,
        )


class _Confirmation:
    """One fresh search of the study per answer, made only if an "already exists" needs it."""

    def __init__(self, client: StowClient, study: str, report: StoreReport) -> None:
        self._client = client
        self._study = study
        self._report = report
        self._uids: set[str] | None = None
        self._failed = False

    def holds(self, sop: str) -> bool | None:
        """True/False from the search, None when the search failed."""
        if self._uids is None and not self._failed:
            try:
                self._uids = self._client._search(self._study, self._report)
            except HttpError:
                self._failed = True
        return None if self._uids is None else sop in self._uids


def twin_outcomes(
    outcomes: Sequence[Outcome], duplicates: Sequence[tuple[str, DicomFile]]
) -> list[Outcome]:
    """The outcome of each byte-identical copy: its twin's, with 0 bytes and ``duplicate_of``."""
    by_source = {o.source: o for o in outcomes}
    out: list[Outcome] = []
    for twin, copy in duplicates:
        outcome = by_source.get(twin)
        if isinstance(outcome, StoredInstance):
            out.append(
                dataclasses.replace(
                    outcome, source=copy.path, bytes=0, attempts=0, duplicate_of=twin
                )
            )
        elif isinstance(outcome, DeadLetter):
            out.append(
                dataclasses.replace(
                    outcome,
                    source=copy.path,
                    attempts=0,
                    message=f"same bytes as {twin}, which failed: {outcome.message}",
                )
            )
        else:  # cannot happen: every file of a batch has an outcome
            out.append(_dead(copy, Reason.INTERNAL_ERROR, f"no outcome for its twin {twin}"))
    return out


def _segments(f: DicomFile) -> tuple[bytes | FileSegment, ...]:
    file_part = FileSegment(f.path, f.file_size)
    return (f.file_meta_prefix, file_part) if f.file_meta_prefix else (file_part,)


def _count_retry(report: StoreReport, wait: float) -> None:
    report.retries += 1
    report.throttled_seconds += wait


def _dead(
    f: DicomFile,
    reason: str,
    message: str,
    *,
    status: int | None = None,
    server_reason: str | None = None,
    detail: str | None = None,
    attempts: int = 0,
) -> DeadLetter:
    return DeadLetter(
        stage=Stage.STORE,
        source=f.path,
        reason=reason,
        message=message,
        uids=f.uids,
        http_status=status,
        server_reason=server_reason,
        server_detail=shorten(detail),
        attempts=attempts,
    )
