"""PlanDeletes and DeleteFromDicomStore on a TestPipeline, against the operations stand-in (what
only Google does: long-running operations) and the real Orthanc (its REST API)."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from typing import Any

import apache_beam as beam
import factory
import pydicom
import pytest
import requests
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from google_operations import GoogleOperationsStandin

from pipelines.summary import counter_values
from transforms import metrics
from transforms.delete import DeleteFromDicomStore, PlanDeletes
from transforms.dicomweb import http
from transforms.dicomweb.delete import DeleteConfig
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.records import InstanceUids, PlannedDelete
from transforms.targets import Target

FAST = http.RetryPolicy(max_attempts=2, initial_backoff=0.01, timeout=(5.0, 10.0))


def _study(n: int) -> tuple[bytes, str]:
    ds = pydicom.dcmread(factory.testdata("CT_small.dcm"))
    ds.StudyInstanceUID = factory.uid(f"cd-study-{n}")
    ds.SeriesInstanceUID = factory.uid(f"cd-series-{n}")
    ds.SOPInstanceUID = factory.uid(f"cd-sop-{n}")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), ds.StudyInstanceUID


@pytest.fixture
def standin() -> Iterator[GoogleOperationsStandin]:
    with GoogleOperationsStandin(done_after_seconds=0.3) as server:
        yield server


def test_operations_in_flight_stay_within_max_operations(
    standin: GoogleOperationsStandin,
) -> None:
    studies = []
    for n in range(8):
        data, study = _study(n)
        standin.preload(data)
        studies.append(study)
    config = DeleteConfig(
        DicomwebEndpoint(standin.dicomweb_url), retry=FAST, first_poll=0.05, max_poll=0.1
    )
    p = TestPipeline()
    planned = p | beam.Create(
        [PlannedDelete(InstanceUids(s, "", ""), "studies", 1, "to_delete") for s in studies]
    )
    result = planned | DeleteFromDicomStore(config, max_operations=2, max_concurrency=8)
    assert_that(
        result.deleted | beam.Map(lambda d: (d.uids.study, d.status, d.operation is not None)),
        equal_to([(s, "deleted", True) for s in studies]),
        label="AllDeleted",
    )
    assert_that(result.failed, equal_to([]), label="NoneFailed")
    run = p.run()
    run.wait_until_finish()
    assert standin.instances == {}
    assert standin.max_running == 2  # ran two at once, never more
    counters = counter_values(run)
    assert counters[metrics.OPERATIONS] == 8
    assert counters[metrics.TARGETS_DELETED] == 8
    assert counters[metrics.OPERATION_POLLS] >= 8


def test_plan_merges_duplicates_and_dead_letters_failed_searches(
    standin: GoogleOperationsStandin,
) -> None:
    data, study = _study(0)
    standin.preload(data)
    missing = factory.uid("cd-missing")
    broken = factory.uid("cd-broken")
    standin.inject("GET", "/series", 503, 503)  # the one series-level search fails twice
    config = DeleteConfig(DicomwebEndpoint(standin.dicomweb_url), retry=FAST)
    with TestPipeline() as p:
        targets = p | beam.Create(
            [Target(study), Target(study), Target(missing), Target(broken, broken)]
        )
        plan = targets | PlanDeletes(config)
        assert_that(
            plan.planned | beam.Map(lambda r: (r.uids.study, r.status, r.instances)),
            equal_to([(study, "to_delete", 1), (missing, "already_absent", None)]),
            label="Planned",
        )
        assert_that(
            plan.failed | beam.Map(lambda d: (d.stage, d.reason, d.uids.series)),
            equal_to([("plan", "retries_exhausted", broken)]),
            label="Failed",
        )


class _ExplodingSession(requests.Session):
    def request(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise RuntimeError("a bug, not a network failure")


def test_an_internal_error_is_a_dead_letter_not_a_failed_bundle() -> None:
    config = DeleteConfig(DicomwebEndpoint("http://127.0.0.1:9/dicom-web"), retry=FAST)
    planned = PlannedDelete(InstanceUids("1.2.3", "1.2.4", "1.2.5"), "instances", 1, "to_delete")
    with TestPipeline() as p:
        result = (
            p
            | beam.Create([planned])
            | DeleteFromDicomStore(config, session_factory=_ExplodingSession)
        )
        assert_that(result.deleted, equal_to([]), label="NoneDeleted")
        assert_that(
            result.failed | beam.Map(lambda d: (d.stage, d.reason, d.uids.sop)),
            equal_to([("delete", "internal_error", "1.2.5")]),
            label="Failed",
        )
