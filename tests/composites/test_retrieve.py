"""RetrieveFromDicomStore in a TestPipeline against Orthanc, directly or behind a proxy that
answers 500s or cuts answers: the right files, the right dead letters, never a partial file."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import factory
import pydicom
import pytest
import requests
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from wado_proxy import WadoProxy

from pipelines.local_orthanc import LocalOrthanc
from transforms import metrics
from transforms.dead_letter import DeadLetter
from transforms.dicomweb import http
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.wado import WadoConfig
from transforms.records import InstanceUids, RetrievedFile
from transforms.retrieve import RetrieveFromDicomStore
from transforms.targets import Target

pytestmark = pytest.mark.integration

FAST = http.RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


def _store(orthanc: LocalOrthanc, folder: Path, count: int, studies: int) -> dict[str, Path]:
    paths = factory.write_ct_instances(folder, count=count, studies=studies)
    by_sop = {}
    for path in paths:
        resp = requests.post(f"{orthanc.rest_url}/instances", data=path.read_bytes(), timeout=30)
        resp.raise_for_status()
        by_sop[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    return by_sop


def _targets(paths: dict[str, Path], level: str) -> list[Target]:
    out = set()
    for path in paths.values():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out.add(
            Target(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID).at_level(level)
        )
    return sorted(out)


def _run(
    url: str, targets: list[Target], out: Path, **config: object
) -> tuple[list[RetrievedFile], list[DeadLetter], dict[str, int]]:
    wado = WadoConfig(DicomwebEndpoint(url), retry=FAST, **config)  # type: ignore[arg-type]
    p = TestPipeline()
    result = p | beam.Create(targets) | RetrieveFromDicomStore(wado, str(out), max_concurrency=4)
    for name, pcoll in (("retrieved", result.retrieved), ("failed", result.failed)):
        _ = (
            pcoll
            | f"{name}ToJson" >> beam.Map(lambda r: r.to_json())
            | f"Write{name}" >> beam.io.WriteToText(str(out / "_results" / name))
        )
    run = p.run()
    run.wait_until_finish()
    counters = run.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))["counters"]
    totals: dict[str, int] = {}
    for c in counters:
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + c.committed
    lines = {
        name: [
            ln for f in (out / "_results").glob(f"{name}-*") for ln in f.read_text().splitlines()
        ]
        for name in ("retrieved", "failed")
    }
    retrieved = [_retrieved(json.loads(ln)) for ln in lines["retrieved"]]
    return retrieved, [DeadLetter.from_json(ln) for ln in lines["failed"]], totals


def _retrieved(data: dict[str, object]) -> RetrievedFile:
    uids = InstanceUids(
        str(data.pop("study_uid")), str(data.pop("series_uid")), str(data.pop("sop_uid"))
    )
    return RetrievedFile(uids=uids, **data)  # type: ignore[arg-type]


def _assert_complete(files: list[RetrievedFile], inputs: dict[str, Path]) -> None:
    for f in files:
        assert Path(f.path).read_bytes() == inputs[f.uids.sop].read_bytes()


def _final_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*.dcm") if ".retrieve-tmp" not in p.parts]


def test_study_targets_expand_and_unknown_ones_are_dead_letters(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    inputs = _store(orthanc, tmp_path / "in", count=6, studies=2)
    targets = [*_targets(inputs, "studies"), Target("1.2.3.999")]
    files, failed, totals = _run(orthanc.dicomweb_url, targets, tmp_path / "out")
    assert sorted(f.uids.sop for f in files) == sorted(inputs)
    _assert_complete(files, inputs)
    assert [(d.stage, d.reason, d.uids.study if d.uids else None) for d in failed] == [
        ("select", "not_found", "1.2.3.999")
    ]
    assert totals[metrics.FILES_RETRIEVED] == 6 and totals["failed_not_found"] == 1


def test_a_500_storm_is_retried_and_a_persistent_500_is_one_quick_dead_letter(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    inputs = _store(orthanc, tmp_path / "in", count=8, studies=2)
    targets = _targets(inputs, "instances")
    doomed = targets[3].sop or ""

    def rule(method: str, path: str, seen: int) -> str:
        if path.endswith(doomed):
            return "500"  # like a transcode Orthanc cannot do: every time
        if "/instances/" in path and seen == 1:
            return "500"  # the storm: every instance's first answer
        return "forward"

    with WadoProxy(orthanc.rest_url, rule) as proxy:
        files, failed, totals = _run(
            f"{proxy.base_url}/dicom-web", targets, tmp_path / "out", max_server_error_attempts=2
        )
        seen_doomed = sum(n for p, n in proxy.seen.items() if p.endswith(doomed))
    assert sorted(f.uids.sop for f in files) == sorted(set(inputs) - {doomed})
    _assert_complete(files, inputs)
    [letter] = failed
    assert (letter.reason, letter.http_status, letter.uids.sop) == ("server_error", 500, doomed)
    assert seen_doomed == 2  # the per-resource cap, not the job's six attempts
    assert totals[metrics.HTTP_RETRIES] >= len(targets) - 1
    assert not [p for p in _final_files(tmp_path / "out") if doomed in p.name]


@pytest.mark.parametrize("granularity", ["series", "instance"])
def test_a_truncated_answer_is_a_dead_letter_and_never_a_partial_file(
    orthanc: LocalOrthanc, tmp_path: Path, granularity: str
) -> None:
    inputs = _store(orthanc, tmp_path / "in", count=6, studies=1)
    level = "series" if granularity == "series" else "instances"
    targets = _targets(inputs, level)
    one_instance = len(next(iter(inputs.values())).read_bytes())

    def rule(method: str, path: str, seen: int) -> str:
        # Cut every answer in the middle of its third instance (or of the single instance).
        if "/series/" in path and "/metadata" not in path:
            return (
                f"cut:{int(2.5 * one_instance) if granularity == 'series' else one_instance // 2}"
            )
        return "forward"

    with WadoProxy(orthanc.rest_url, rule) as proxy:
        files, failed, _ = _run(
            f"{proxy.base_url}/dicom-web", targets, tmp_path / "out", granularity=granularity
        )
    assert {d.reason for d in failed} == {"truncated_response"}
    assert all(d.attempts == FAST.max_attempts for d in failed)
    _assert_complete(files, inputs)
    if granularity == "series":
        assert len(files) == 2 and len(failed) == 1  # the two whole parts before the cut
    else:
        assert files == [] and len(failed) == len(inputs)
    on_disk = _final_files(tmp_path / "out")
    assert sorted(p.name for p in on_disk) == sorted(Path(f.path).name for f in files)
    for path in on_disk:
        pydicom.dcmread(path)  # every file in place is whole


def test_an_answer_cut_once_is_fetched_again(orthanc: LocalOrthanc, tmp_path: Path) -> None:
    inputs = _store(orthanc, tmp_path / "in", count=5, studies=1)
    targets = _targets(inputs, "series")

    def rule(method: str, path: str, seen: int) -> str:
        return "cut:20000" if seen == 1 and "/series/" in path else "forward"

    with WadoProxy(orthanc.rest_url, rule) as proxy:
        files, failed, _ = _run(
            f"{proxy.base_url}/dicom-web", targets, tmp_path / "out", granularity="series"
        )
        assert proxy.actions["cut"] == 1
    assert failed == []
    assert sorted(f.uids.sop for f in files) == sorted(inputs)
    _assert_complete(files, inputs)


def test_a_persistent_503_exhausts_the_retries_of_that_instance_only(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    inputs = _store(orthanc, tmp_path / "in", count=3, studies=1)
    targets = _targets(inputs, "instances")
    busy = targets[0].sop or ""

    def rule(method: str, path: str, seen: int) -> str:
        return "503" if path.endswith(busy) else "forward"

    with WadoProxy(orthanc.rest_url, rule) as proxy:
        files, failed, _ = _run(f"{proxy.base_url}/dicom-web", targets, tmp_path / "out")
    assert sorted(f.uids.sop for f in files) == sorted(set(inputs) - {busy})
    assert [(d.reason, d.http_status, d.attempts) for d in failed] == [
        ("retries_exhausted", 503, FAST.max_attempts)
    ]


def test_a_listing_that_keeps_failing_is_one_dead_letter_and_no_unit(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    inputs = _store(orthanc, tmp_path / "in", count=4, studies=2)
    studies = _targets(inputs, "studies")
    broken = studies[0].study

    def rule(method: str, path: str, seen: int) -> str:
        # The second page of one study's listing fails, every time.
        failing = f"/studies/{broken}/instances" in path and "offset=0" not in path
        return "503" if failing else "forward"

    with WadoProxy(orthanc.rest_url, rule) as proxy:
        files, failed, _ = _run(f"{proxy.base_url}/dicom-web", studies, tmp_path / "out")
    assert {f.uids.study for f in files} == {studies[1].study}
    assert [(d.stage, d.reason, d.uids.study if d.uids else None) for d in failed] == [
        ("select", "retries_exhausted", broken)
    ]
