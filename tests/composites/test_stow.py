"""WriteToDicomStore on a TestPipeline against the real Orthanc, and the Google stand-in."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import factory
import requests
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.local_orthanc import LocalOrthanc
from pipelines.summary import counter_values
from transforms import metrics
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.stow import StowConfig
from transforms.read_dicom import ReadDicomFiles
from transforms.stow import WriteToDicomStore


def test_stores_every_instance_grouped_by_study(orthanc: LocalOrthanc, tmp_path: Path) -> None:
    paths = factory.write_ct_instances(tmp_path, count=12, studies=3)
    p = TestPipeline()
    files = (p | ReadDicomFiles([str(tmp_path / "*.dcm")])).files
    result = files | WriteToDicomStore(
        StowConfig(DicomwebEndpoint(orthanc.dicomweb_url)), batch_size=3, max_concurrency=2
    )
    assert_that(
        result.stored | beam.Map(lambda s: (s.source, s.status, s.bytes)),
        equal_to([(str(x), "stored", factory.file_size(x)) for x in paths]),
        label="AllStored",
    )
    assert_that(result.failed, equal_to([]), label="NoneFailed")
    run = p.run()
    run.wait_until_finish()
    counters = counter_values(run)
    assert orthanc.instance_count() == 12
    assert counters[metrics.INSTANCES_STORED] == 12
    # 3 studies x 4 instances, batches of 3: 2 STOW requests per study, plus 1 QIDO per study.
    assert counters[metrics.HTTP_REQUESTS] == 3 * 2 + 3
    assert counters[metrics.BYTES_STORED] == sum(factory.file_size(x) for x in paths)


def test_second_run_reports_already_present(orthanc: LocalOrthanc, tmp_path: Path) -> None:
    factory.write_ct_instances(tmp_path, count=4)
    config = StowConfig(DicomwebEndpoint(orthanc.dicomweb_url))
    for expected in ("stored", "already_present"):
        with TestPipeline() as p:
            files = (p | ReadDicomFiles([str(tmp_path / "*.dcm")])).files
            result = files | WriteToDicomStore(config)
            assert_that(result.stored | beam.Map(lambda s: s.status), equal_to([expected] * 4))
    assert orthanc.instance_count() == 4


def test_google_single_part_with_storage_class(google_standin: object, tmp_path: Path) -> None:
    paths = factory.write_ct_instances(tmp_path, count=3)
    config = StowConfig(
        DicomwebEndpoint(google_standin.dicomweb_url),  # type: ignore[attr-defined]
        single_part=True,
        storage_class="COLDLINE",
    )

    def session() -> requests.Session:
        s = requests.Session()
        s.headers["Authorization"] = "Bearer standin-token"
        return s

    with TestPipeline() as p:
        files = (p | ReadDicomFiles([str(tmp_path / "*.dcm")])).files
        result = files | WriteToDicomStore(config, session_factory=session)
        assert_that(result.stored | beam.Map(lambda s: s.source), equal_to([str(x) for x in paths]))
    posts = [r for r in google_standin.requests if r.method == "POST"]  # type: ignore[attr-defined]
    assert len(posts) == 3
    assert all(r.path.endswith("/dicomWeb/studies") for r in posts)
    assert all(r.headers["Content-Type"] == "application/dicom" for r in posts)
    stored = google_standin.instances.values()  # type: ignore[attr-defined]
    assert [b.storage_class for b in stored] == ["COLDLINE"] * 3


def test_constructor_rejects_bad_bounds() -> None:
    config = StowConfig(DicomwebEndpoint("http://127.0.0.1:1/dicom-web"))
    for kwargs in ({"batch_size": 0}, {"max_batch_bytes": 0}, {"max_concurrency": 0}):
        try:
            WriteToDicomStore(config, **kwargs)
        except ValueError:
            continue
        raise AssertionError(f"accepted {kwargs}")
