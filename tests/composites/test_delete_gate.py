"""The --max_targets gate inside the delete pipeline (GateDeletes, and DeleteFromDicomStore with
max_targets): the targets to delete are counted as a side input; past the limit not one DELETE
is sent and each target to delete is exactly one over_max_targets dead letter."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.summary import counter_values
from transforms import metrics
from transforms.delete import DeleteFromDicomStore, GateDeletes, is_refused
from transforms.dicomweb import http
from transforms.dicomweb.delete import DeleteConfig
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.records import PLAN_TO_DELETE, STATUS_ALREADY_ABSENT, InstanceUids, PlannedDelete

# Nothing listens on port 9: any request would end as retries_exhausted, not over_max_targets.
DEAD = DicomwebEndpoint("http://127.0.0.1:9/dicom-web")


def _plan(present: int, absent: int) -> list[PlannedDelete]:
    rows = [PlannedDelete(InstanceUids(f"1.2.{n}", "", ""), "studies", 1, PLAN_TO_DELETE)
            for n in range(present)]  # fmt: skip
    rows += [PlannedDelete(InstanceUids(f"1.3.{n}", "", ""), "studies", None, STATUS_ALREADY_ABSENT)
             for n in range(absent)]  # fmt: skip
    return rows


def test_the_policy_refuses_only_past_the_limit() -> None:
    assert not is_refused(0, 0) and not is_refused(1000, 1000)
    assert is_refused(1001, 1000) and is_refused(1, 0)


@pytest.mark.parametrize("max_targets", [3, 10])
def test_at_or_under_the_limit_every_target_passes(max_targets: int) -> None:
    plan = _plan(3, 2)
    with TestPipeline(runner="FnApiRunner") as p:
        gated = p | beam.Create(plan) | GateDeletes(DEAD, max_targets)
        assert_that(gated.planned, equal_to(plan), label="all")
        assert_that(gated.failed, equal_to([]), label="none")


def test_past_the_limit_each_target_to_delete_is_one_dead_letter() -> None:
    plan = _plan(3, 2)
    with TestPipeline(runner="FnApiRunner") as p:
        gated = p | beam.Create(plan) | GateDeletes(DEAD, 2)
        assert_that(gated.planned, equal_to(plan[3:]), label="absent pass")
        letters = gated.failed | beam.Map(lambda d: (d.uids.study, d.reason, d.stage, d.message))
        message = "not deleted: the plan has 3 targets to delete, more than max_targets 2, "
        message += "so none of them was deleted"
        expected = [(f"1.2.{n}", "over_max_targets", "delete", message) for n in range(3)]
        assert_that(letters, equal_to(expected), label="refused")


def test_an_empty_plan_passes_the_gate() -> None:
    with TestPipeline(runner="FnApiRunner") as p:
        gated = p | beam.Create(_plan(0, 0)) | GateDeletes(DEAD, 0)
        assert_that(gated.planned, equal_to([]), label="nothing")
        assert_that(gated.failed, equal_to([]), label="no letters")


def test_delete_past_max_targets_sends_no_request() -> None:
    plan = _plan(2, 1)
    config = DeleteConfig(DEAD, retry=http.RetryPolicy(max_attempts=1, timeout=(1.0, 1.0)))
    p = TestPipeline(runner="FnApiRunner")
    result = p | beam.Create(plan) | DeleteFromDicomStore(config, max_targets=1)
    assert_that(
        result.failed | beam.Map(lambda d: (d.uids.study, d.reason)),
        equal_to([("1.2.0", "over_max_targets"), ("1.2.1", "over_max_targets")]),
        label="refused",
    )
    assert_that(
        result.deleted | beam.Map(lambda d: (d.uids.study, d.status)),
        equal_to([("1.3.0", "already_absent")]),
        label="absent",
    )
    counters = counter_values(p.run())
    assert counters.get(metrics.HTTP_REQUESTS, 0) == 0
    assert counters[metrics.FAILED_PREFIX + "over_max_targets"] == 2
    assert counters[metrics.DEAD_LETTERS] == 2
