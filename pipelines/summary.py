"""The end-of-run summary, read from the job's metrics (works on every runner)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from apache_beam.metrics.metric import MetricResults, MetricsFilter
from apache_beam.runners.runner import PipelineResult

from transforms import metrics


@dataclass(frozen=True, kw_only=True)
class RequestCounts:
    """What every job's summary counts of its requests and failures (keyword-only fields, so
    that each family's own fields come first)."""

    requests: int = 0
    retries: int = 0
    throttled_seconds: float = 0.0
    failed_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.failed_by_reason.values())

    @staticmethod
    def fields_from(counters: dict[str, int]) -> dict[str, Any]:
        return {
            "requests": counters.get(metrics.HTTP_REQUESTS, 0),
            "retries": counters.get(metrics.HTTP_RETRIES, 0),
            "throttled_seconds": counters.get(metrics.THROTTLED_MS, 0) / 1000,
            "failed_by_reason": failed_by_reason(counters),
        }

    def request_line(self) -> str:
        return request_line(self.requests, self.retries, self.throttled_seconds)


@dataclass(frozen=True)
class StoreSummary(RequestCounts):
    elapsed_seconds: float
    stored: int = 0
    already_present: int = 0
    bytes_stored: int = 0
    # store hardening
    files_matched: int = 0
    duplicates: int = 0
    existence_checks_failed: int = 0
    pipeline_seconds: float | None = None  # the pipeline alone, without start-up

    @classmethod
    def from_result(
        cls,
        result: PipelineResult,
        elapsed_seconds: float,
        *,
        pipeline_seconds: float | None = None,
    ) -> StoreSummary:
        counters = counter_values(result)
        return cls(
            elapsed_seconds=elapsed_seconds,
            pipeline_seconds=pipeline_seconds,
            files_matched=counters.get(metrics.FILES_MATCHED, 0),
            duplicates=counters.get(metrics.INSTANCES_DUPLICATE, 0),
            existence_checks_failed=counters.get(metrics.EXISTENCE_CHECKS_FAILED, 0),
            stored=counters.get(metrics.INSTANCES_STORED, 0),
            already_present=counters.get(metrics.INSTANCES_ALREADY_PRESENT, 0),
            bytes_stored=counters.get(metrics.BYTES_STORED, 0),
            **RequestCounts.fields_from(counters),
        )

    def render(self, outputs: str = "") -> str:
        seconds = max(self.elapsed_seconds, 1e-9)
        done = self.stored + self.already_present
        lines = [
            f"store finished in {self.elapsed_seconds:.1f} s (from launch)",
            f"  files matched    {self.files_matched:>10,}",
            f"  stored           {self.stored:>10,}  ({self.bytes_stored / 1e6:,.1f} MB)",
            f"  already present  {self.already_present:>10,}",
        ]
        if self.duplicates:
            lines.append(f"  identical copies {self.duplicates:>10,}  (given their twin's outcome)")
        lines.append(f"  failed           {self.failed:>10,}")
        lines += reason_lines(self.failed_by_reason)
        lines.append(
            f"  throughput       {done / seconds:>10,.1f} instances/s, "
            f"{self.bytes_stored / 1e6 / seconds:,.1f} MB/s"
        )
        if self.pipeline_seconds:
            lines[-1] += (
                f" ({done / max(self.pipeline_seconds, 1e-9):,.1f} instances/s once running)"
            )
        lines.append(self.request_line())
        if self.existence_checks_failed:
            lines.append(
                f"  lookups failed   {self.existence_checks_failed:>10,}  (studies sent without "
                "checking what the store holds; see the log)"
            )
        if outputs:
            lines.append(f"  outputs          {outputs}")
        return "\n".join(lines)


def seconds_since_launch() -> float:
    """Seconds since this process started (what the user waited), from /proc where it exists,
    else since this module was imported."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - started, 0.0)
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()


def counter_values(result: PipelineResult) -> dict[str, int]:
    """Counters of our namespace, summed over steps (committed values, else attempted)."""
    query = _metrics_of(result).query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
    return totals


def failed_by_reason(counters: dict[str, int]) -> dict[str, int]:
    """Dead letters by reason, from the ``failed_<reason>`` counters (non-zero ones, sorted)."""
    prefix = metrics.FAILED_PREFIX
    return {
        name[len(prefix) :]: value
        for name, value in sorted(counters.items())
        if name.startswith(prefix) and value
    }


def reason_lines(by_reason: dict[str, int]) -> list[str]:
    """The summary's indented lines under "failed", one per reason."""
    return [f"    {reason:<22}{n:>8,}" for reason, n in by_reason.items()]


def request_line(requests: int, retries: int, throttled_seconds: float) -> str:
    return (
        f"  requests         {requests:>10,}  ({retries:,} retried, "
        f"{throttled_seconds:,.1f} s backing off)"
    )


# --- search (QIDO-RS) -------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSummary(RequestCounts):
    elapsed_seconds: float  # from the job's launch
    queries: int = 0  # queries to run, as counted at launch
    answered: int = 0  # queries answered completely
    matches_by_level: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    splits: int = 0

    @property
    def matches(self) -> int:
        return sum(self.matches_by_level.values())

    @classmethod
    def from_result(
        cls, result: PipelineResult, elapsed_seconds: float, queries: int
    ) -> SearchSummary:
        counters = counter_values(result)
        prefix = metrics.SEARCH_MATCHES_PREFIX
        return cls(
            elapsed_seconds=elapsed_seconds,
            queries=queries,
            answered=counters.get(metrics.SEARCH_QUERIES, 0),
            matches_by_level={
                name[len(prefix) :]: value
                for name, value in sorted(counters.items())
                if name.startswith(prefix)
            },
            pages=counters.get(metrics.QIDO_PAGES, 0),
            splits=counters.get(metrics.QIDO_SPLITS, 0),
            **RequestCounts.fields_from(counters),
        )

    def render(self, outputs: str = "") -> str:
        seconds = max(self.elapsed_seconds, 1e-9)
        lines = [
            f"search finished in {self.elapsed_seconds:.1f} s (from launch)",
            f"  queries          {self.queries:>10,}  ({self.answered:,} answered completely)",
            f"  matches          {self.matches:>10,}",
        ]
        lines += [f"    {level:<22}{n:>8,}" for level, n in self.matches_by_level.items()]
        lines.append(f"  failed queries   {self.failed:>10,}")
        lines += reason_lines(self.failed_by_reason)
        lines += [
            f"  rate             {self.answered / seconds:>10,.1f} queries/s, "
            f"{self.matches / seconds:,.1f} matches/s",
            f"  pages            {self.pages:>10,}  ({self.splits:,} searches split past a cap)",
            self.request_line(),
        ]
        if outputs:
            lines.append(f"  outputs          {outputs}")
        return "\n".join(lines)


# delete family (pipelines/delete.py) ----------------------------------------------------------
@dataclass(frozen=True)
class DeleteSummary(RequestCounts):
    """Counts of a delete run: the plan (searches), the gate, then the deletes."""

    elapsed_seconds: float
    to_delete: int = 0
    planned_absent: int = 0
    deleted: int = 0
    already_absent: int = 0
    instances_deleted: int = 0
    operations: int = 0
    polls: int = 0
    note: str = ""

    @classmethod
    def from_counters(
        cls,
        counters: dict[str, int],
        elapsed_seconds: float,
        *,
        to_delete: int,
        planned_absent: int,
        note: str = "",
    ) -> DeleteSummary:
        return cls(
            elapsed_seconds=elapsed_seconds,
            to_delete=to_delete,
            planned_absent=planned_absent,
            deleted=counters.get(metrics.TARGETS_DELETED, 0),
            already_absent=counters.get(metrics.TARGETS_ALREADY_ABSENT, 0),
            instances_deleted=counters.get(metrics.INSTANCES_DELETED, 0),
            operations=counters.get(metrics.OPERATIONS, 0),
            polls=counters.get(metrics.OPERATION_POLLS, 0),
            **RequestCounts.fields_from(counters),
            note=note,
        )

    def render(self, outputs: str = "") -> str:
        seconds = max(self.elapsed_seconds, 1e-9)
        lines = [
            f"delete finished in {self.elapsed_seconds:.1f} s"
            + (f": {self.note}" if self.note else ""),
            f"  plan             {self.to_delete:>10,} to delete, "
            f"{self.planned_absent:,} already absent",
            f"  deleted          {self.deleted:>10,}  ({self.instances_deleted:,} instances)",
            f"  already absent   {self.already_absent:>10,}",
            f"  failed           {self.failed:>10,}",
        ]
        lines += reason_lines(self.failed_by_reason)
        lines += [
            f"  throughput       {self.deleted / seconds:>10,.1f} targets/s",
            f"  operations       {self.operations:>10,}  ({self.polls:,} polls)",
            self.request_line(),
        ]
        if outputs:
            lines.append(f"  outputs          {outputs}")
        return "\n".join(lines)


# --- retrieve (WADO-RS) family ---
@dataclass(frozen=True)
class RetrieveSummary(RequestCounts):
    elapsed_seconds: float
    retrieved: int = 0
    already_complete: int = 0
    bytes_retrieved: int = 0

    @classmethod
    def from_result(cls, result: PipelineResult, elapsed_seconds: float) -> RetrieveSummary:
        counters = counter_values(result)
        return cls(
            elapsed_seconds=elapsed_seconds,
            retrieved=counters.get(metrics.FILES_RETRIEVED, 0),
            already_complete=counters.get(metrics.FILES_ALREADY_COMPLETE, 0),
            bytes_retrieved=counters.get(metrics.BYTES_RETRIEVED, 0),
            **RequestCounts.fields_from(counters),
        )

    def render(self, outputs: str = "") -> str:
        seconds = max(self.elapsed_seconds, 1e-9)
        lines = [
            f"retrieve finished in {self.elapsed_seconds:.1f} s",
            f"  retrieved        {self.retrieved:>10,}  files "
            f"({self.bytes_retrieved / 1e6:,.1f} MB)",
            f"  already complete {self.already_complete:>10,}",
            f"  failed           {self.failed:>10,}",
        ]
        lines += reason_lines(self.failed_by_reason)
        lines += [
            f"  throughput       {self.retrieved / seconds:>10,.1f} files/s, "
            f"{self.bytes_retrieved / 1e6 / seconds:,.1f} MB/s",
            self.request_line(),
        ]
        if outputs:
            lines.append(f"  outputs          {outputs}")
        return "\n".join(lines)


# --- runners (pipelines/runner_checks.py): a runner that reports no metrics --------------------
class MetricsUnavailable(RuntimeError):
    """The runner's result has no metrics to query (a Dataflow ``--dry_run=True`` build returns
    such a result): the job's main says so instead of printing zeros (``runner_checks``)."""

    def __init__(self, result: PipelineResult) -> None:
        super().__init__(f"the runner's result ({type(result).__name__}) reports no metrics")
        self.result = result


def _metrics_of(result: PipelineResult) -> MetricResults:
    try:
        return result.metrics()
    except NotImplementedError:
        raise MetricsUnavailable(result) from None
