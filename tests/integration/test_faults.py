"""Storing through a proxy that answers 503/429 and drops connections: still exactly once."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import factory
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from fault_proxy import FaultPlan, FaultProxy

from pipelines.local_orthanc import LocalOrthanc
from transforms import metrics
from transforms.dicomweb import http
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.stow import StowConfig
from transforms.read_dicom import ReadDicomFiles
from transforms.stow import WriteToDicomStore

pytestmark = pytest.mark.integration

FAST_RETRIES = http.RetryPolicy(max_attempts=10, initial_backoff=0.02, max_backoff=0.2)


def _store(proxy_url: str, folder: Path, retry: http.RetryPolicy) -> tuple[object, object]:
    p = TestPipeline()
    files = (p | ReadDicomFiles([str(folder / "*.dcm")])).files
    config = StowConfig(DicomwebEndpoint(f"{proxy_url}/dicom-web"), retry=retry)
    result = files | WriteToDicomStore(config, batch_size=5, max_concurrency=4)
    return p, result


def test_every_instance_stored_exactly_once_despite_faults(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    paths = factory.write_ct_instances(tmp_path, count=60, studies=6)
    plan = FaultPlan(p_503=0.15, p_429=0.1, p_drop=0.05, p_drop_after_forward=0.1, seed=3)
    plan = FaultPlan(**{**plan.__dict__, "retry_after": "0"})
    with FaultProxy(orthanc.rest_url, plan) as proxy:
        p, result = _store(proxy.base_url, tmp_path, FAST_RETRIES)
        assert_that(
            result.stored | beam.Map(lambda s: s.source),  # type: ignore[attr-defined]
            equal_to([str(x) for x in paths]),
            label="AllStoredOnce",
        )
        assert_that(result.failed, equal_to([]), label="NoneFailed")  # type: ignore[attr-defined]
        run = p.run()  # type: ignore[attr-defined]
        run.wait_until_finish()
        counts = dict(proxy.counts)
    faults = sum(counts.get(k, 0) for k in ("503", "429", "drop", "drop_after_forward"))
    assert faults >= 3, counts  # the proxy really interfered
    retries = run.metrics().query(MetricsFilter().with_name(metrics.HTTP_RETRIES))["counters"]
    assert sum(c.committed for c in retries) == faults
    # Back-off time reaches Beam's own throttling counter (what Dataflow's autoscaler reads).
    throttled = run.metrics().query(MetricsFilter().with_name(metrics.BEAM_THROTTLING_SECONDS))[
        "counters"
    ]
    assert sum(c.committed for c in throttled) >= 1
    msecs = run.metrics().query(MetricsFilter().with_name(metrics.BEAM_THROTTLING_MSECS))
    assert sum(c.committed for c in msecs["counters"]) > 0
    assert orthanc.instance_count() == 60


def test_persistent_503_dead_letters_every_instance(orthanc: LocalOrthanc, tmp_path: Path) -> None:
    paths = factory.write_ct_instances(tmp_path, count=4, studies=2)
    policy = http.RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    with FaultProxy(orthanc.rest_url, FaultPlan(p_503=1.0)) as proxy:
        p, result = _store(proxy.base_url, tmp_path, policy)
        assert_that(
            result.failed  # type: ignore[attr-defined]
            | beam.Map(lambda d: (d.source, d.reason, d.http_status, d.attempts)),
            equal_to([(str(x), "retries_exhausted", 503, 3) for x in paths]),
        )
        p.run().wait_until_finish()  # type: ignore[attr-defined]
    assert orthanc.instance_count() == 0
