"""Delete studies, series and instances from a DICOMweb store, after planning what is there.

    planned = targets | PlanDeletes(DeleteConfig(endpoint), auth=auth)
    planned.planned   # PlannedDelete: to_delete (with its instance count) or already_absent
    planned.failed    # DeadLetter: the search for it failed
    result = planned.planned | DeleteFromDicomStore(
        DeleteConfig(endpoint), auth=auth, max_targets=1000)
    result.deleted    # DeletedTarget: deleted now, or already absent
    result.failed     # DeadLetter: refused, unsupported, operation failed or timed out, ...

Every target ends in exactly one of ``deleted``/``failed``. With ``max_targets`` the deletes are
gated inside the pipeline: the number of targets to delete is counted first (a side input), and
past the limit not one DELETE is sent: each target to delete becomes an ``over_max_targets`` dead
letter (already absent ones still pass through, with no request). A worker process keeps at most
``max_concurrency`` plain requests (instance deletes, searches, Orthanc REST deletes) and at most
``max_operations`` study/series deletes (each from its DELETE until its long-running operation is
done) in flight, over one pooled session shared by the DoFn instances of the process.
"""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Callable, Iterable, Iterator
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
from transforms.dicomweb.delete import (
    DeleteClient,
    DeleteConfig,
    DeleteReport,
    GroupPlanReport,
    Tally,
    target_of,
    target_url,
    uids_of,
)
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.errors import reason_and_message
from transforms.pooled import PooledFn, SessionFactory
from transforms.records import (
    PLAN_TO_DELETE,
    STATUS_DELETED,
    DeletedTarget,
    PlannedDelete,
)
from transforms.results import DeleteResult, PlanResult
from transforms.targets import INSTANCES, Target

FAILED_TAG = "failed"
DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_MAX_OPERATIONS = 4

Report = GroupPlanReport | DeleteReport


@dataclass
class _Shared:
    session: requests.Session
    client: DeleteClient
    requests_pool: concurrent.futures.ThreadPoolExecutor
    operations_pool: concurrent.futures.ThreadPoolExecutor


def _close(shared: _Shared) -> None:
    shared.requests_pool.shutdown(wait=True)
    shared.operations_pool.shutdown(wait=True)
    shared.session.close()


class _PooledFn(PooledFn[_Shared]):
    """Runs each element's work in a per-process pool; emits outcomes on the bundle's thread
    (Beam counters only count there). Subclasses say which pool and which work."""

    def __init__(
        self,
        config: DeleteConfig,
        auth: AuthConfig,
        max_concurrency: int,
        max_operations: int,
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
        self._max_operations = max_operations

    def create_shared(self) -> _Shared:
        session = self.new_session(
            self._config.endpoint.base_url, pool_size=self._max_concurrency + self._max_operations
        )
        return _Shared(
            session,
            DeleteClient(session, self._config),
            concurrent.futures.ThreadPoolExecutor(
                self._max_concurrency, thread_name_prefix="delete-req"
            ),
            concurrent.futures.ThreadPoolExecutor(
                self._max_operations, thread_name_prefix="delete-op"
            ),
        )

    close_shared = staticmethod(_close)

    def process(
        self,
        element: Any,
        window: BoundedWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
    ) -> Iterator[object]:
        shared = self.shared()
        if shared is None:
            self.fail_unset(context=(element, window, timestamp))
        else:
            pool, work = self._work(shared, element)
            self.submit(pool, work, element, context=(element, window, timestamp))
        # Enough queued work to keep both pools busy, without holding a bundle in memory.
        yield from self.collect(keep=2 * (self._max_concurrency + self._max_operations))

    def _work(
        self, shared: _Shared, element: Any
    ) -> tuple[concurrent.futures.ThreadPoolExecutor, Callable[[Any], Report]]:
        raise NotImplementedError

    def _outcomes(self, report: Report) -> Iterable[tuple[bool, object]]:
        """(is_failure, outcome) pairs of one report, counting metrics."""
        raise NotImplementedError

    def emit(self, future: concurrent.futures.Future[Any], context: Any) -> Iterator[object]:
        element, window, timestamp = context
        try:
            report = future.result()
        except Exception as exc:  # the exception boundary: never a failed bundle
            report = self._unexpected(element, exc)
        _count(report.tally)
        for failure, outcome in self._outcomes(report):
            value = WindowedValue(outcome, timestamp, (window,))
            if failure:
                assert isinstance(outcome, DeadLetter)
                metrics.count_dead_letter(outcome)
                yield beam.pvalue.TaggedOutput(FAILED_TAG, value)
            else:
                yield value

    def _unexpected(self, element: Any, exc: Exception) -> Report:
        raise NotImplementedError


def _count(tally: Tally) -> None:
    metrics.inc(metrics.HTTP_REQUESTS, tally.requests)
    metrics.inc(metrics.HTTP_RETRIES, tally.retries)
    metrics.inc(metrics.THROTTLED_MS, int(tally.throttled_seconds * 1000))
    metrics.inc(metrics.OPERATIONS, tally.operations)
    metrics.inc(metrics.OPERATION_POLLS, tally.polls)


def _unexpected_letter(
    config: DeleteConfig, target: Target, stage: str, exc: Exception
) -> DeadLetter:
    reason, message = reason_and_message(exc, Reason.INTERNAL_ERROR)
    return DeadLetter(
        stage=stage,
        source=DicomwebEndpoint.redacted(target_url(config.endpoint, target)),
        reason=reason,
        message=message,
        uids=uids_of(target),
    )


class _PlanFn(_PooledFn):
    """Plans a group of targets: the instances of one series, or one study or series."""

    def _work(
        self, shared: _Shared, element: Any
    ) -> tuple[concurrent.futures.ThreadPoolExecutor, Callable[[Any], Report]]:
        return shared.requests_pool, shared.client.plan_group

    def _outcomes(self, report: Report) -> Iterable[tuple[bool, object]]:
        assert isinstance(report, GroupPlanReport)
        planned = sum(isinstance(o, PlannedDelete) for o in report.outcomes)
        progress.for_label("plan").add(items=planned, failed=len(report.outcomes) - planned)
        for outcome in report.outcomes:
            if isinstance(outcome, PlannedDelete):
                metrics.inc(metrics.TARGETS_PLANNED)
                absent = outcome.status != PLAN_TO_DELETE
                metrics.inc(metrics.TARGETS_PLANNED_ABSENT if absent else metrics.TARGETS_TO_DELETE)
            yield isinstance(outcome, DeadLetter), outcome

    def _unexpected(self, element: Any, exc: Exception) -> Report:
        letters = [_unexpected_letter(self._config, t, Stage.PLAN, exc) for t in element]
        return GroupPlanReport(list(letters), Tally())


class _DeleteFn(_PooledFn):
    def _work(
        self, shared: _Shared, element: Any
    ) -> tuple[concurrent.futures.ThreadPoolExecutor, Callable[[Any], Report]]:
        planned: PlannedDelete = element
        long_running = (
            self._config.delete_api == "dicomweb"
            and planned.level != INSTANCES
            and planned.status == PLAN_TO_DELETE
        )
        # Study and series deletes may answer an operation that holds its slot until done.
        pool = shared.operations_pool if long_running else shared.requests_pool
        return pool, shared.client.delete

    def _outcomes(self, report: Report) -> Iterable[tuple[bool, object]]:
        assert isinstance(report, DeleteReport)
        outcome = report.outcome
        if isinstance(outcome, DeletedTarget):
            if outcome.status == STATUS_DELETED:
                metrics.inc(metrics.TARGETS_DELETED)
                metrics.inc(metrics.INSTANCES_DELETED, outcome.instances or 0)
            else:
                metrics.inc(metrics.TARGETS_ALREADY_ABSENT)
            progress.for_label("delete").add(items=1)
            return [(False, outcome)]
        progress.for_label("delete").add(failed=1)
        return [(True, outcome)]

    def _unexpected(self, element: Any, exc: Exception) -> Report:
        target = target_of(element.uids, element.level)
        return DeleteReport(_unexpected_letter(self._config, target, Stage.DELETE, exc), Tally())


def is_refused(to_delete: int, max_targets: int) -> bool:
    """The safety policy: more targets to delete than the user allowed refuses them all."""
    return to_delete > max_targets


class _GateFn(beam.DoFn):
    """Lets a planned target through to its DELETE, or (past ``max_targets``, counted over the
    whole plan and given as a side input) turns each target to delete into a dead letter."""

    def __init__(self, endpoint: DicomwebEndpoint, max_targets: int) -> None:
        self._endpoint = endpoint
        self._max_targets = max_targets

    def process(self, planned: PlannedDelete, to_delete: int) -> Iterator[object]:
        if planned.status != PLAN_TO_DELETE or not is_refused(to_delete, self._max_targets):
            yield planned
            return
        target = target_of(planned.uids, planned.level)
        letter = DeadLetter(
            stage=Stage.DELETE,
            source=DicomwebEndpoint.redacted(target_url(self._endpoint, target)),
            reason=Reason.OVER_MAX_TARGETS,
            message=f"not deleted: the plan has {to_delete:,} targets to delete, more than "
            f"max_targets {self._max_targets:,}, so none of them was deleted",
            uids=planned.uids,
        )
        metrics.count_dead_letter(letter)
        progress.for_label("delete").add(failed=1)
        yield beam.pvalue.TaggedOutput(FAILED_TAG, letter)


class GateDeletes(beam.PTransform):
    """``PlannedDelete`` PCollection -> ``PlanResult(planned, failed)``: all of them, or (when more
    than ``max_targets`` are ``to_delete``) only the ``already_absent`` ones, the others as
    ``over_max_targets`` dead letters. Nothing downstream starts before the whole plan is counted:
    the count is a side input of the gate."""

    def __init__(self, endpoint: DicomwebEndpoint, max_targets: int) -> None:
        super().__init__()
        if max_targets < 0:
            raise ValueError("max_targets must not be negative")
        self._endpoint = endpoint
        self._max_targets = max_targets

    def expand(self, planned: beam.PCollection) -> PlanResult:
        to_delete = (
            planned
            | "ToDelete" >> beam.Filter(lambda p: p.status == PLAN_TO_DELETE)
            | "CountToDelete" >> beam.combiners.Count.Globally()
        )
        gated = planned | "Gate" >> beam.ParDo(
            _GateFn(self._endpoint, self._max_targets),
            to_delete=beam.pvalue.AsSingleton(to_delete),
        ).with_outputs(FAILED_TAG, main="planned")
        return PlanResult(planned=gated.planned, failed=gated[FAILED_TAG])


def _group_key(target: Target) -> tuple[str, Target]:
    """Instances are planned together per series; studies and series alone."""
    if target.level == INSTANCES:
        return f"instances-of:{target.study}/{target.series}", target
    return f"{target.level}:{target.key}", target


def _unique(group: tuple[str, Iterable[Target]]) -> list[Target]:
    """The group's targets, a target given twice once, in a stable order."""
    return sorted({t.key: t for t in group[1]}.values())


class _Pooled(beam.PTransform):
    def __init__(
        self,
        config: DeleteConfig,
        *,
        auth: AuthConfig | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_operations: int = DEFAULT_MAX_OPERATIONS,
        session_factory: SessionFactory | None = None,
    ) -> None:
        super().__init__()
        if max_concurrency < 1 or max_operations < 1:
            raise ValueError("max_concurrency and max_operations must be positive")
        self._config = config
        self._auth = auth or AuthConfig()
        self._max_concurrency = max_concurrency
        self._max_operations = max_operations
        self._session_factory = session_factory
        self._pool_key = f"{type(self).__name__}-{uuid.uuid4().hex}"

    def _fn(self, cls: type[_PooledFn]) -> _PooledFn:
        return cls(
            self._config,
            self._auth,
            self._max_concurrency,
            self._max_operations,
            self._pool_key,
            self._session_factory,
        )

    def display_data(self) -> dict[str, object]:
        return {
            "dicomweb_url": DisplayDataItem(
                DicomwebEndpoint.redacted(self._config.endpoint.base_url), label="DICOMweb URL"
            ),
            "auth": DisplayDataItem(self._auth.kind, label="Authentication"),
            "delete_api": self._config.delete_api,
            "max_concurrency": self._max_concurrency,
            "max_operations": self._max_operations,
        }


class PlanDeletes(_Pooled):
    """``Target`` PCollection -> ``PlanResult(planned, failed)``.

    Duplicate targets (same UIDs) become one. Each is searched (QIDO): absent ->
    ``already_absent``; present -> ``to_delete`` with how many instances the store says it holds.
    Instances of one series are planned together: their series is listed once when that takes
    fewer requests than a search per instance.

    Args:
      config: endpoint, retries (the rest of ``DeleteConfig`` is not used here).
      auth: credentials, built on each worker.
      max_concurrency: searches in flight per worker process at most.
      session_factory: builds the HTTP session instead of ``auth`` (tests, custom transports).
    """

    def expand(self, targets: beam.PCollection) -> PlanResult:
        groups = (
            targets
            | "KeyBySeries" >> beam.Map(_group_key)
            | "GroupBySeries" >> beam.GroupByKey()
            | "OnePerTarget" >> beam.Map(_unique)
        )
        searched = groups | "SearchTargets" >> beam.ParDo(self._fn(_PlanFn)).with_outputs(
            FAILED_TAG, main="planned"
        )
        return PlanResult(planned=searched.planned, failed=searched[FAILED_TAG])


class DeleteFromDicomStore(_Pooled):
    """``PlannedDelete`` PCollection -> ``DeleteResult(deleted, failed)``.

    ``already_absent`` entries pass through with no request. Study and series deletes answering
    a long-running operation are polled until done (``config.operation_timeout``).

    Args:
      config: endpoint, delete API (``dicomweb`` or ``orthanc``), retries, operation deadline,
        verification.
      auth: credentials, built on each worker.
      max_concurrency: plain requests (instance deletes, Orthanc REST deletes) in flight per
        worker process at most.
      max_operations: study/series deletes in flight per worker process at most, each from its
        DELETE until its operation is done (Google asks for few at once).
      session_factory: builds the HTTP session instead of ``auth`` (tests, custom transports).
      max_targets: when given, nothing is deleted if more than this many targets are
        ``to_delete`` (see ``GateDeletes``; the check runs inside the pipeline).
    """

    def __init__(
        self, config: DeleteConfig, *, max_targets: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(config, **kwargs)
        self._max_targets = max_targets

    def expand(self, planned: beam.PCollection) -> DeleteResult:
        refused: list[beam.PCollection] = []
        if self._max_targets is not None:
            gated = planned | "GateOnMaxTargets" >> GateDeletes(
                self._config.endpoint, self._max_targets
            )
            planned, refused = gated.planned, [gated.failed]
        sent = (
            planned
            | "SpreadTargets" >> beam.Reshuffle()
            | "DeleteTargets"
            >> beam.ParDo(self._fn(_DeleteFn)).with_outputs(FAILED_TAG, main="deleted")
        )
        if not refused:
            return DeleteResult(deleted=sent.deleted, failed=sent[FAILED_TAG])
        failed = (sent[FAILED_TAG], *refused) | "AllDeleteFailures" >> beam.Flatten()
        return DeleteResult(deleted=sent.deleted, failed=failed)
