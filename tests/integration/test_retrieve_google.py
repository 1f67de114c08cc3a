"""Retrieve from the Google stand-in: what Orthanc lacks, the single-part application/dicom
answer (used at once, no multipart fallback) and 403 for a missing instance."""

from __future__ import annotations

from pathlib import Path

import factory
import pydicom
import pytest

from pipelines import retrieve, store

pytestmark = pytest.mark.integration


def test_single_part_instances_and_403_for_missing(
    google_standin: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DWB_TEST_TOKEN", "standin-token")
    url = google_standin.dicomweb_url  # type: ignore[attr-defined]
    auth = ["--auth", "bearer", "--token_env", "DWB_TEST_TOKEN"]
    paths = factory.write_ct_instances(tmp_path / "in", count=3, studies=1)
    stored = ["--input", str(tmp_path / "in"), "--dicomweb_url", url, *auth, "--single_part"]
    assert store.main([*stored, "--output", str(tmp_path / "s")]) == 0
    ds = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    lines = [f"{d.StudyInstanceUID}/{d.SeriesInstanceUID}/{d.SOPInstanceUID}" for d in ds]
    lines.append(f"{ds[0].StudyInstanceUID}/{ds[0].SeriesInstanceUID}/1.2.3.4")
    (tmp_path / "uids.txt").write_text("\n".join(lines) + "\n")
    google_standin.requests.clear()  # type: ignore[attr-defined]
    argv = ["--uids_file", str(tmp_path / "uids.txt"), "--dicomweb_url", url, *auth, "--verify"]
    out = tmp_path / "out"
    assert retrieve.main([*argv, "--output", str(out)]) == retrieve.EXIT_DEAD_LETTERS
    for path, d in zip(paths, ds, strict=True):
        got = out / d.StudyInstanceUID / d.SeriesInstanceUID / f"{d.SOPInstanceUID}.dcm"
        assert got.read_bytes() == path.read_bytes()
    gets = [r for r in google_standin.requests if r.method == "GET" and "/series/" in r.path]  # type: ignore[attr-defined]
    assert len(gets) == 4  # one per instance: the single-part form works here
    assert {r.headers["Accept"] for r in gets} == {"application/dicom; transfer-syntax=*"}
    dead = (out / "dead_letter-00000-of-00001.jsonl").read_text()
    assert '"reason": "not_found"' in dead and '"http_status": 403' in dead
