"""Delete studies, series and instances, and follow Google's long-running operations. No Beam.

Three steps per target, each a small function here:

1. **Plan** (``DeleteClient.plan``): one QIDO search for the target; absent -> ``already_absent``
   (no DELETE is ever sent for it), present -> ``to_delete`` with the number of instances the
   store says it holds.
2. **Delete** (``DeleteClient.delete``): ``DELETE`` on the target's DICOMweb path. Any 2xx
   answer carrying an operation name (``{"name": ".../operations/ID"}``) is a long-running
   operation, whatever the host: it is polled at ``{api}/v1/{name}`` (``{api}`` is the store URL
   before ``/v1/``) after ~1 s, backing off to 10 s between polls, until ``done`` or the deadline.
   ``error`` in a finished operation is a dead letter with its code and message. A 2xx without
   a name (Google's ``{}`` for instances) is done at once.
3. **Check** what a refusal means (``after_refusal``, a pure policy): 404/403 -> QIDO: gone means
   ``already_absent``; still there means the server does not delete by DICOMweb (404) or refused
   (403). 405 and 501 mean the server has no DICOMweb DELETE at all.

With ``delete_api="orthanc"`` step 2 uses Orthanc's REST API instead (``orthanc_rest.py``).
"""

from __future__ import annotations

import math
import random
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from transforms.dead_letter import DeadLetter, Reason, Stage, shorten
from transforms.dicomweb import http
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.operations import (
    FIRST_POLL_SECONDS,
    MAX_POLL_SECONDS,
    operation_name,
    operation_url,
    parse_operation,
    poll_delays,
)
from transforms.dicomweb.orthanc_rest import OrthancRest, rest_root
from transforms.dicomweb.qido import PAGE_END_EMPTY, iter_qido, page_end_rule
from transforms.errors import HttpError
from transforms.records import (
    PLAN_TO_DELETE,
    STATUS_ALREADY_ABSENT,
    STATUS_DELETED,
    DeletedTarget,
    InstanceUids,
    PlannedDelete,
)
from transforms.targets import INSTANCES, SERIES, SOP_UID_TAG, STUDIES, Target

DELETE_APIS = ("dicomweb", "orthanc")
PAGE_SIZE = 1000
DEFAULT_OPERATION_TIMEOUT = 1800.0

_UID_TAGS = {STUDIES: "0020000D", SERIES: "0020000E", INSTANCES: SOP_UID_TAG}
_COUNT_TAGS = {STUDIES: "00201208", SERIES: "00201209"}  # Number of Study/Series Related Instances


@dataclass(frozen=True)
class DeleteConfig:
    """How to delete.

    Args:
      endpoint: the DICOMweb service.
      retry: retry bounds and timeouts of each request (DELETEs, polls, searches).
      delete_api: ``dicomweb`` (DELETE on the DICOMweb paths, Google's form) or ``orthanc``
        (Orthanc's REST API: lookup, then DELETE by Orthanc id).
      orthanc_root: Orthanc's REST root; by default the DICOMweb URL minus its last segment.
      operation_timeout: seconds a long-running operation may take before it is dead-lettered.
      first_poll, max_poll: seconds before the first poll, and the most between two polls.
      verify: search for each deleted target afterwards; one still there is a dead letter.
    """

    endpoint: DicomwebEndpoint
    retry: http.RetryPolicy = field(default_factory=http.RetryPolicy)
    delete_api: str = "dicomweb"
    orthanc_root: str | None = None
    operation_timeout: float = DEFAULT_OPERATION_TIMEOUT
    first_poll: float = FIRST_POLL_SECONDS
    max_poll: float = MAX_POLL_SECONDS
    verify: bool = False

    def __post_init__(self) -> None:
        if self.delete_api not in DELETE_APIS:
            raise ValueError(f"delete_api must be one of {', '.join(DELETE_APIS)}")
        if self.operation_timeout <= 0 or self.first_poll < 0 or self.max_poll < self.first_poll:
            raise ValueError("operation_timeout must be positive and 0 <= first_poll <= max_poll")


# --- pure pieces ---------------------------------------------------------------------------


def target_of(uids: InstanceUids, level: str) -> Target:
    if level == STUDIES:
        return Target(uids.study)
    if level == SERIES:
        return Target(uids.study, uids.series)
    return Target(uids.study, uids.series, uids.sop)


def uids_of(target: Target) -> InstanceUids:
    return InstanceUids(target.study, target.series or "", target.sop or "")


def target_url(endpoint: DicomwebEndpoint, target: Target) -> str:
    url = endpoint.study_url(target.study)
    if target.series is not None:
        url += f"/series/{_quote(target.series)}"
    if target.sop is not None:
        url += f"/instances/{_quote(target.sop)}"
    return url


# What a DELETE answer means (classify_answer), and what a refusal means once QIDO has said
# whether the target is still there (after_refusal).
DONE = "done"
OPERATION = "operation"
CHECK = "check"
UNSUPPORTED = "unsupported"
REFUSED = "refused"
ABSENT = "absent"


def classify_answer(status: int) -> str:
    if 200 <= status < 300:
        return DONE  # an operation when the body names one (operation_name)
    if status in (403, 404):
        return CHECK  # Google answers 403 for a missing resource, others 404
    if status in (405, 501):
        return UNSUPPORTED
    return REFUSED


def after_refusal(status: int, still_present: bool) -> str:
    """404/403 on a DELETE: gone -> ABSENT; a 404 for a target QIDO shows -> UNSUPPORTED (the
    server has no DICOMweb DELETE at that path); a 403 for one -> REFUSED (no permission)."""
    if not still_present:
        return ABSENT
    return UNSUPPORTED if status == 404 else REFUSED


def presence_query(endpoint: DicomwebEndpoint, target: Target) -> tuple[str, dict[str, str]]:
    """The QIDO search (URL, params) that finds exactly ``target`` and its instance count."""
    level = target.level
    params = {_keyword(level): _uid_of(target, level)}
    if level in _COUNT_TAGS:
        params["includefield"] = _COUNT_TAGS[level]
    if level == STUDIES:
        return endpoint.studies_url(), params
    if level == SERIES:
        return f"{endpoint.study_url(target.study)}/series", params
    series = _quote(target.series or "")
    return f"{endpoint.study_url(target.study)}/series/{series}/instances", params


def presence_in(rows: Iterable[dict[str, Any]], target: Target) -> tuple[bool, int | None]:
    """(present, instances) from QIDO rows. Rows are matched on the UID again: a server that
    ignores the filter (some do) must not make an absent target look present."""
    level = target.level
    uid = _uid_of(target, level)
    for row in rows:
        if _value(row, _UID_TAGS[level]) != uid:
            continue
        if level == INSTANCES:
            return True, 1
        count = _value(row, _COUNT_TAGS[level])
        try:
            return True, None if count is None else int(count)
        except ValueError:
            return True, None
    return False, None


def list_series(series_instances: int | None, targets: int, page_size: int) -> bool:
    """Plan instance targets of one series by listing the series (True) or by one search per
    target (False): whichever takes fewer requests. An unknown series size means searching."""
    if series_instances is None or targets < 2:
        return False
    return math.ceil(max(series_instances, 1) / page_size) < targets


def _keyword(level: str) -> str:
    return {STUDIES: "StudyInstanceUID", SERIES: "SeriesInstanceUID", INSTANCES: "SOPInstanceUID"}[
        level
    ]


def _uid_of(target: Target, level: str) -> str:
    uid = {STUDIES: target.study, SERIES: target.series, INSTANCES: target.sop}[level]
    assert uid is not None
    return uid


def _value(row: dict[str, Any], tag: str) -> str | None:
    element = row.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return str(values[0]) if isinstance(values, list) and values else None


def _quote(uid: str) -> str:
    return urllib.parse.quote(uid, safe=".")


# --- the client ----------------------------------------------------------------------------


@dataclass
class Tally:
    """Request statistics for metrics (incremented on the bundle's thread by the caller)."""

    requests: int = 0
    retries: int = 0
    throttled_seconds: float = 0.0
    polls: int = 0
    operations: int = 0

    def on_retry(self, _status: int | None, wait: float) -> None:
        self.retries += 1
        self.throttled_seconds += wait

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.retries += other.retries
        self.throttled_seconds += other.throttled_seconds
        self.polls += other.polls
        self.operations += other.operations


@dataclass
class PlanReport:
    outcome: PlannedDelete | DeadLetter
    tally: Tally


@dataclass
class GroupPlanReport:
    """The plan of a group of targets (instances of one series, or one other target)."""

    outcomes: list[PlannedDelete | DeadLetter]
    tally: Tally


@dataclass
class DeleteReport:
    outcome: DeletedTarget | DeadLetter
    tally: Tally


class DeleteClient:
    """Plans and deletes targets over a caller's session (thread-safe: no mutable state).

    Args:
      session: a pooled ``requests.Session`` (``auth.make_session``).
      config: endpoint, API, retries, operation deadline, verification.
      clock: monotonic time and sleep (a fake one in tests).
    """

    def __init__(
        self,
        session: requests.Session,
        config: DeleteConfig,
        *,
        clock: http.Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._config = config
        self._clock = clock or http.SystemClock()
        self._rng = rng or random.Random()
        root = config.orthanc_root or rest_root(config.endpoint.base_url)
        self._orthanc_root = root

    def _send(self, tally: Tally, method: str, url: str, **kwargs: Any) -> http.Response:
        try:
            resp = http.send(
                self._session,
                method,
                url,
                policy=self._config.retry,
                clock=self._clock,
                rng=self._rng,
                on_retry=tally.on_retry,
                **kwargs,
            )
        except HttpError as exc:
            tally.requests += exc.attempts
            raise
        tally.requests += resp.attempts
        return resp

    def present(self, target: Target, tally: Tally) -> tuple[bool, int | None]:
        """Whether the store holds ``target`` (by QIDO), and how many instances it says."""
        url, params = presence_query(self._config.endpoint, target)
        before = tally.retries
        rows = iter_qido(
            self._session,
            url,
            policy=self._config.retry,
            params=params,
            page_end=page_end_rule(self._config.endpoint),
            clock=self._clock,
            on_retry=tally.on_retry,
        )
        try:
            # Stops reading at the target's row: one page whether it is there or not.
            return presence_in(rows, target)
        finally:
            # iter_qido does not report attempts: one page plus its retries (a second page is
            # rare for a search by UID).
            tally.requests += 1 + tally.retries - before

    def plan(self, target: Target) -> PlanReport:
        tally = Tally()
        try:
            present, count = self.present(target, tally)
        except HttpError as exc:
            return PlanReport(self._dead(target, Stage.PLAN, exc), tally)
        status = PLAN_TO_DELETE if present else STATUS_ALREADY_ABSENT
        return PlanReport(PlannedDelete(uids_of(target), target.level, count, status), tally)

    def plan_group(self, targets: Sequence[Target]) -> GroupPlanReport:
        """Plan targets that are instances of one series (or a single target of any level).

        One search says whether the series is there and how big it is; then the series is
        listed once, or each instance searched, whichever takes fewer requests (Orthanc's
        instance search costs ~10 ms; Google counts every request against a quota).
        """
        tally = Tally()
        if len(targets) == 1 or targets[0].level != INSTANCES:
            return self._plan_each(targets, tally)
        series = targets[0].at_level(SERIES)
        try:
            present, count = self.present(series, tally)
            if present and not list_series(count, len(targets), PAGE_SIZE):
                return self._plan_each(targets, tally)
            sops = self._list_sops(series, tally) if present else set()
        except HttpError as exc:
            return GroupPlanReport([self._dead(t, Stage.PLAN, exc) for t in targets], tally)
        outcomes: list[PlannedDelete | DeadLetter] = [
            PlannedDelete(uids_of(t), INSTANCES, 1, PLAN_TO_DELETE)
            if t.sop in sops
            else PlannedDelete(uids_of(t), INSTANCES, None, STATUS_ALREADY_ABSENT)
            for t in targets
        ]
        return GroupPlanReport(outcomes, tally)

    def _plan_each(self, targets: Sequence[Target], tally: Tally) -> GroupPlanReport:
        outcomes: list[PlannedDelete | DeadLetter] = []
        for target in targets:
            report = self.plan(target)
            tally.add(report.tally)
            outcomes.append(report.outcome)
        return GroupPlanReport(outcomes, tally)

    def _list_sops(self, series: Target, tally: Tally) -> set[str]:
        page_end = page_end_rule(self._config.endpoint)
        url = (
            f"{self._config.endpoint.study_url(series.study)}/series/{_quote(series.series or '')}"
        )
        rows = iter_qido(
            self._session,
            f"{url}/instances",
            policy=self._config.retry,
            params={"includefield": SOP_UID_TAG},
            page_size=PAGE_SIZE,
            page_end=page_end,
            clock=self._clock,
            on_retry=tally.on_retry,
        )
        before = tally.retries
        sops = {v for row in rows if (v := _value(row, SOP_UID_TAG)) is not None}
        pages = len(sops) // PAGE_SIZE + 1
        if page_end == PAGE_END_EMPTY and len(sops) % PAGE_SIZE:
            pages += 1  # the empty page that ends it
        tally.requests += pages + tally.retries - before
        return sops

    def delete(self, planned: PlannedDelete) -> DeleteReport:
        tally = Tally()
        target = target_of(planned.uids, planned.level)
        if planned.status == STATUS_ALREADY_ABSENT:
            return DeleteReport(self._done(planned, STATUS_ALREADY_ABSENT, None, None, 0), tally)
        start = self._clock.monotonic()
        try:
            if self._config.delete_api == "orthanc":
                outcome = self._delete_orthanc(planned, target, tally, start)
            else:
                outcome = self._delete_dicomweb(planned, target, tally, start)
            if (
                self._config.verify
                and isinstance(outcome, DeletedTarget)
                and outcome.status == STATUS_DELETED
                and self.present(target, tally)[0]
            ):
                outcome = self._letter(
                    target,
                    Stage.VERIFY,
                    Reason.STILL_PRESENT,
                    "the delete succeeded but a search still finds the target",
                    attempts=tally.requests,
                )
        except HttpError as exc:
            outcome = self._dead(target, Stage.DELETE, exc, attempts=tally.requests)
        return DeleteReport(outcome, tally)

    def _delete_dicomweb(
        self, planned: PlannedDelete, target: Target, tally: Tally, start: float
    ) -> DeletedTarget | DeadLetter:
        resp = self._send(tally, "DELETE", target_url(self._config.endpoint, target))
        kind = classify_answer(resp.status)
        if kind == DONE:
            name = operation_name(resp.body)
            if name is None:
                return self._done(planned, STATUS_DELETED, None, start, tally.requests)
            return self._follow(planned, target, name, tally, start)
        if kind == CHECK:
            kind = after_refusal(resp.status, self.present(target, tally)[0])
            if kind == ABSENT:
                return self._done(planned, STATUS_ALREADY_ABSENT, None, start, tally.requests)
        if kind == UNSUPPORTED:
            return self._letter(
                target,
                Stage.DELETE,
                Reason.DELETE_UNSUPPORTED,
                f"the server does not support DICOMweb deletes (HTTP {resp.status}); for Orthanc "
                "use --delete_api orthanc",
                status=resp.status,
                detail=resp.text_detail(),
                attempts=tally.requests,
            )
        return self._letter(
            target,
            Stage.DELETE,
            Reason.HTTP_ERROR,
            f"the server refused the delete with HTTP {resp.status}",
            status=resp.status,
            detail=resp.text_detail(),
            attempts=tally.requests,
        )

    def _follow(
        self, planned: PlannedDelete, target: Target, name: str, tally: Tally, start: float
    ) -> DeletedTarget | DeadLetter:
        """Poll the operation until done, or dead-letter it at the deadline."""
        tally.operations += 1
        url = operation_url(self._config.endpoint.base_url, name)
        deadline = start + self._config.operation_timeout
        for delay in poll_delays(self._config.first_poll, self._config.max_poll):
            now = self._clock.monotonic()
            if now >= deadline:
                break
            self._clock.sleep(min(delay, deadline - now))
            tally.polls += 1
            resp = self._send(tally, "GET", url)
            if resp.status != 200:
                return self._letter(
                    target,
                    Stage.DELETE,
                    Reason.HTTP_ERROR,
                    f"polling operation {name} answered HTTP {resp.status}",
                    status=resp.status,
                    detail=resp.text_detail(),
                    attempts=tally.requests,
                )
            try:
                state = parse_operation(resp.body)
            except ValueError as exc:
                return self._letter(
                    target,
                    Stage.DELETE,
                    Reason.BAD_RESPONSE,
                    f"operation {name}: {exc}",
                    status=200,
                    attempts=tally.requests,
                )
            if state.failed:
                code = "" if state.error_code is None else f" (code {state.error_code})"
                return self._letter(
                    target,
                    Stage.DELETE,
                    Reason.OPERATION_FAILED,
                    f"operation {name} ended in error{code}",
                    detail=state.error_message,
                    attempts=tally.requests,
                )
            if state.done:
                return self._done(planned, STATUS_DELETED, name, start, tally.requests)
        return self._letter(
            target,
            Stage.DELETE,
            Reason.OPERATION_TIMEOUT,
            f"operation {name} was not done after {self._config.operation_timeout:.0f} s "
            "(it may still finish: check it before deleting again)",
            attempts=tally.requests,
        )

    def _delete_orthanc(
        self, planned: PlannedDelete, target: Target, tally: Tally, start: float
    ) -> DeletedTarget | DeadLetter:
        rest = OrthancRest(self._orthanc_root, lambda *a, **k: self._send(tally, *a, **k))
        found = rest.lookup(_uid_of(target, target.level), target.level)
        if not found.ids:
            # The plan's search saw it; it is gone now (deleted meanwhile, or with its parent).
            return self._done(planned, STATUS_ALREADY_ABSENT, None, start, tally.requests)
        if len(found.ids) > 1:
            return self._letter(
                target,
                Stage.DELETE,
                Reason.AMBIGUOUS_TARGET,
                f"Orthanc holds {len(found.ids)} {target.level} with this UID (under different "
                "patients or parents); not deleting any",
                attempts=tally.requests,
            )
        resp = rest.delete(target.level, found.ids[0])
        if 200 <= resp.status < 300:
            return self._done(planned, STATUS_DELETED, None, start, tally.requests)
        if resp.status == 404:
            return self._done(planned, STATUS_ALREADY_ABSENT, None, start, tally.requests)
        return self._letter(
            target,
            Stage.DELETE,
            Reason.HTTP_ERROR,
            f"Orthanc refused the delete with HTTP {resp.status}",
            status=resp.status,
            detail=resp.text_detail(),
            attempts=tally.requests,
        )

    def _done(
        self,
        planned: PlannedDelete,
        status: str,
        operation: str | None,
        start: float | None,
        attempts: int,
    ) -> DeletedTarget:
        duration = None if start is None else round(self._clock.monotonic() - start, 3)
        return DeletedTarget(
            planned.uids, planned.level, status, planned.instances, operation, duration, attempts
        )

    def _dead(
        self, target: Target, stage: str, exc: HttpError, *, attempts: int | None = None
    ) -> DeadLetter:
        return self._letter(
            target,
            stage,
            exc.reason,
            exc.message,
            status=exc.status,
            detail=exc.detail,
            attempts=exc.attempts if attempts is None else max(attempts, exc.attempts),
        )

    def _letter(
        self,
        target: Target,
        stage: str,
        reason: str,
        message: str,
        *,
        status: int | None = None,
        detail: str | None = None,
        attempts: int = 0,
    ) -> DeadLetter:
        return DeadLetter(
            stage=stage,
            source=DicomwebEndpoint.redacted(target_url(self._config.endpoint, target)),
            reason=reason,
            message=message,
            uids=uids_of(target),
            http_status=status,
            server_detail=shorten(detail),
            attempts=attempts,
        )
