"""pipelines.store_json_jpeg end to end: client mode against the real Orthanc (pixels, rendered
size, WADO metadata, QIDO), template + CSV, --build_only, and server mode against the Google
stand-in. Good and bad pairs share each run."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import jpeg_factory as jf
import numpy as np
import pydicom
import pytest
import requests
from factory import PATIENT_NAME, uid
from google_json_standin import GoogleJsonStandin
from PIL import Image
from wado import retrieve_instance_bytes

from pipelines import store_json_jpeg as job
from pipelines.local_orthanc import LocalOrthanc


def _lines(prefix: Path, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(prefix.glob(f"{name}-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def _reference_pixels(jpeg: bytes, colour: bool) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB" if colour else "L"))


KINDS: dict[str, dict[str, Any]] = {
    "colour420": {"subsampling": 2},
    "colour444": {"subsampling": 0},
    "grey": {"colour": False},
}


def _write_kinds(directory: Path) -> dict[str, tuple[Path, bytes]]:
    """One pair per kind of JPEG (and the 12-bit extended one); name -> (JSON path, JPEG)."""
    out = {}
    for n, (name, kwargs) in enumerate(KINDS.items()):
        data = jf.jpeg_bytes(48, 32, seed=n, **kwargs)
        meta = jf.metadata(name, **{"00080020": {"vr": "DA", "Value": ["20240102"]}})
        json_path, _ = jf.write_pair(directory, name, meta, data)
        out[name] = (json_path, data)
    twelve = jf.extended_12bit_jpeg()
    json_path, _ = jf.write_pair(directory, "twelve", jf.metadata("twelve"), twelve)
    out["twelve"] = (json_path, twelve)
    return out


def test_client_mode_creates_instances_orthanc_serves_and_dead_letters_bad_pairs(
    orthanc: LocalOrthanc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    good = _write_kinds(tmp_path / "in")
    bad = jf.write_bad_pairs(tmp_path / "in")
    # Another pair with the UIDs of "grey" (in a folder of its own): one of the two is stored.
    twin_jpeg = jf.jpeg_bytes(48, 32, colour=False, seed=5)
    twin, _ = jf.write_pair(tmp_path / "in" / "twin", "grey", jf.metadata("grey"), twin_jpeg)
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "in"), "--dicomweb_url", orthanc.dicomweb_url]
    code = job.main([*argv, "--output", str(out), "--batch_size", "2"])
    assert code == job.EXIT_DEAD_LETTERS
    letters = _lines(out, "dead_letter")
    duplicate = [(d["source"], d["reason"]) for d in letters if d["reason"] == "duplicate_input"]
    assert duplicate in (
        [(str(twin), "duplicate_input")],
        [(str(good["grey"][0]), "duplicate_input")],
    )
    if duplicate[0][0] != str(twin):  # the twin was kept: compare pixels with its JPEG
        good["grey"] = (twin, twin_jpeg)
    letters = [d for d in letters if d["reason"] != "duplicate_input"]
    assert sorted((d["source"], d["reason"]) for d in letters) == sorted(
        (str(b.source), b.reason) for b in bad
    )
    stored = {Path(r["source"]).stem: r for r in _lines(out, "stored")}
    assert set(stored) == set(good) and {r["status"] for r in stored.values()} == {"stored"}
    assert orthanc.instance_count() == len(good)
    assert not (out / ".staging").exists()  # built instances are not left behind

    for name, (json_path, jpeg) in good.items():
        row = stored[name]
        assert row["json_path"] == str(json_path)
        assert row["jpeg_path"] == str(json_path.with_suffix(".jpg"))
        url = row["retrieve_url"]
        ds = pydicom.dcmread(io.BytesIO(retrieve_instance_bytes(url)))
        if name == "twelve":
            assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51"
            original = pydicom.dcmread(jf.testdata("JPGExtended.dcm"))
            assert np.array_equal(ds.pixel_array, original.pixel_array)
        else:
            assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
            reference = _reference_pixels(jpeg, colour=name != "grey")
            assert np.abs(ds.pixel_array.astype(int) - reference.astype(int)).mean() < 2
        rendered = requests.get(f"{url}/rendered", headers={"Accept": "image/png"}, timeout=30)
        assert rendered.status_code == 200
        assert Image.open(io.BytesIO(rendered.content)).size == (ds.Columns, ds.Rows)
        # Every attribute of the JSON is in the store's metadata, with its value.
        meta = requests.get(
            f"{url}/metadata", headers={"Accept": "application/dicom+json"}, timeout=30
        ).json()[0]
        for tag, element in json.loads(json_path.read_text()).items():
            assert meta[tag]["Value"] == element["Value"], (name, tag)
        # ... and the instance is found by QIDO on them.
        found = requests.get(
            f"{orthanc.dicomweb_url}/instances",
            params={"PatientID": f"PID-{name}", "SOPInstanceUID": ds.SOPInstanceUID},
            headers={"Accept": "application/dicom+json"},
            timeout=30,
        ).json()
        assert [f["00080018"]["Value"] for f in found] == [[ds.SOPInstanceUID]]

    summary = capsys.readouterr().out
    assert "client mode" in summary and f"stored           {len(good):>10,}" in summary
    written = "".join(p.read_text() for p in out.glob("*.jsonl"))
    for text in (summary, caplog.text, written):
        assert PATIENT_NAME not in text


def test_generated_uids_are_reported_and_a_rerun_stores_nothing_twice(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    for i in range(3):
        meta = jf.metadata(f"gen-{i}", uids=False)
        jf.write_pair(tmp_path / "in" / "folder", f"p{i}", meta, jf.jpeg_bytes(seed=i))
    argv = [
        "--input", str(tmp_path / "in" / "**.json"), "--dicomweb_url", orthanc.dicomweb_url,
        "--generate_uids", "--uid_root", "1.2.826.0.1.3680043.10.999",
    ]  # fmt: skip
    assert job.main([*argv, "--output", str(tmp_path / "a")]) == job.EXIT_OK
    first = {r["source"]: r for r in _lines(tmp_path / "a", "stored")}
    assert len(first) == 3 and len({r["study_uid"] for r in first.values()}) == 1
    for r in first.values():
        assert r["generated_uids"] == {
            "StudyInstanceUID": r["study_uid"],
            "SeriesInstanceUID": r["series_uid"],
            "SOPInstanceUID": r["sop_uid"],
        }
        assert r["sop_uid"].startswith("1.2.826.0.1.3680043.10.999.")
    assert job.main([*argv, "--output", str(tmp_path / "b")]) == job.EXIT_OK
    second = {r["source"]: r for r in _lines(tmp_path / "b", "stored")}
    assert {r["status"] for r in second.values()} == {"already_present"}
    assert {s: r["sop_uid"] for s, r in second.items()} == {
        s: r["sop_uid"] for s, r in first.items()
    }
    assert orthanc.instance_count() == 3


def test_template_and_csv_run(orthanc: LocalOrthanc, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, kwargs in enumerate(KINDS.values()):
        (photos / f"img{i}.jpg").write_bytes(jf.jpeg_bytes(seed=i, **kwargs))
    template = jf.metadata("template", uids=False)
    template["00080060"] = {"vr": "CS", "Value": ["XC"]}
    (tmp_path / "template.json").write_text(json.dumps(template))
    study = uid("csv-study")
    (tmp_path / "meta.csv").write_text(
        "file,PatientID,StudyInstanceUID,InstanceNumber\n"
        + "".join(f"img{i}.jpg,CSV-{i},{study},{i + 1}\n" for i in range(3))
        + "lost.jpg,CSV-9,,9\n"
    )
    code = job.main(
        [
            "--input", str(photos / "*.jpg"), "--template", str(tmp_path / "template.json"),
            "--metadata_csv", str(tmp_path / "meta.csv"), "--generate_uids",
            "--dicomweb_url", orthanc.dicomweb_url, "--output", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert code == job.EXIT_DEAD_LETTERS
    letters = _lines(tmp_path / "out", "dead_letter")
    assert [(d["reason"], Path(d["source"]).name) for d in letters] == [
        ("missing_jpeg", "meta.csv")
    ]
    stored = _lines(tmp_path / "out", "stored")
    assert sorted(Path(r["jpeg_path"]).name for r in stored) == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert {r["study_uid"] for r in stored} == {study}  # from the CSV, not generated
    assert all("StudyInstanceUID" not in r["generated_uids"] for r in stored)
    for i in range(3):
        found = requests.get(
            f"{orthanc.dicomweb_url}/studies/{study}/instances",
            params={"PatientID": f"CSV-{i}", "includefield": "00200013"},
            headers={"Accept": "application/dicom+json"},
            timeout=30,
        ).json()
        assert [f["00200013"]["Value"] for f in found] == [[i + 1]]


def test_build_only_writes_part10_files_and_needs_no_store(tmp_path: Path) -> None:
    good = jf.write_good_pairs(tmp_path / "in", 2)
    jf.write_pair(tmp_path / "in", "wrong", jf.metadata("w"), jf.png_bytes())
    code = job.main(
        [
            "--input",
            str(tmp_path / "in" / "*.json"),
            "--output",
            str(tmp_path / "o"),
            "--build_only",
        ]
    )
    assert code == job.EXIT_DEAD_LETTERS
    built = _lines(tmp_path / "o", "built")
    assert sorted(r["source"] for r in built) == sorted(str(g) for g in good)
    for r in built:
        assert r["status"] == "built" and Path(r["dicom_path"]).parent == tmp_path / "o" / "dicom"
        ds = pydicom.dcmread(r["dicom_path"])
        assert ds.SOPInstanceUID == r["sop_uid"] and ds.pixel_array.shape == (24, 40, 3)
    assert [d["reason"] for d in _lines(tmp_path / "o", "dead_letter")] == ["not_jpeg"]


def test_server_mode_is_the_default_for_google_and_sends_json_and_jpeg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DWB_TEST_TOKEN", "standin-token")
    good = jf.write_good_pairs(tmp_path / "in", 3)
    bad = jf.write_bad_pairs(tmp_path / "in")
    # A second pair with the SOP Instance UID of good-0000: the first source (by path) wins.
    same = jf.metadata("dup", study=uid("good-study"), series=uid("good-series"))
    same["00080018"] = json.loads(good[0].read_text())["00080018"]
    dup, _ = jf.write_pair(tmp_path / "in", "zz-dup", same, jf.jpeg_bytes(seed=7))
    bad.append(jf.BadPair(dup, "duplicate_input"))
    with GoogleJsonStandin(expected_token="standin-token") as standin:
        argv = [
            "--input", str(tmp_path / "in" / "*.json"), "--dicomweb_url", standin.dicomweb_url,
            "--auth", "bearer", "--token_env", "DWB_TEST_TOKEN", "--storage_class", "COLDLINE",
            "--output", str(tmp_path / "o"),
        ]  # fmt: skip
        assert job.main(argv) == job.EXIT_DEAD_LETTERS
        (request,) = standin.json_requests  # three pairs of one study: one request
        assert request.headers["Storage-Class"] == "COLDLINE"
        assert request.body.count(b"Content-Type: image/jpeg; transfer-syntax=") == 3
        assert len(standin.instances) == 3
    stored = _lines(tmp_path / "o", "stored")
    assert sorted(r["source"] for r in stored) == sorted(str(g) for g in good)
    assert {r["status"] for r in stored} == {"stored"}
    letters = _lines(tmp_path / "o", "dead_letter")
    assert sorted((d["source"], d["reason"]) for d in letters) == sorted(
        (str(b.source), b.reason) for b in bad
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--single_part"], "--single_part does not apply"),
        (["--metadata_csv", "x.csv"], "--metadata_csv needs --template"),
        (["--uid_root", "1.2.x"], "--uid_root"),
        (["--build_only", "--mode", "server"], "needs --mode client"),
        (["--template", "/nonexistent/t.json"], "cannot read --template"),
    ],
)
def test_bad_options_exit_2(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--input", str(tmp_path), "--output", str(tmp_path / "o")]
    argv += ["--dicomweb_url", "http://127.0.0.1:1/dicom-web", *extra]
    assert job.main(argv) == job.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_help_lists_the_job_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert job.main(["--help"]) == job.EXIT_OK
    text = capsys.readouterr().out
    for option in ("--template", "--metadata_csv", "--mode", "--generate_uids", "--build_only"):
        assert option in text


def test_client_mode_on_google_sends_part10_with_the_storage_class(tmp_path: Path) -> None:
    good = jf.write_good_pairs(tmp_path / "in", 2)
    with GoogleJsonStandin() as standin:
        argv = [
            "--input", str(tmp_path / "in" / "*.json"), "--dicomweb_url", standin.dicomweb_url,
            "--auth", "none", "--mode", "client", "--storage_class", "ARCHIVE",
            "--output", str(tmp_path / "o"),
        ]  # fmt: skip
        assert job.main(argv) == job.EXIT_OK
        posts = [r for r in standin.requests if r.method == "POST"]
        assert standin.json_requests == [] and len(posts) == 1
        assert posts[0].headers["Storage-Class"] == "ARCHIVE"
        assert (
            posts[0]
            .headers["Content-Type"]
            .startswith('multipart/related; type="application/dicom"')
        )
        assert {b.storage_class for b in standin.instances.values()} == {"ARCHIVE"}
    stored = _lines(tmp_path / "o", "stored")
    assert sorted(r["source"] for r in stored) == sorted(str(g) for g in good)


def test_a_reused_output_is_refused_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As pipelines.store (what --help promises): one run's results are never mixed with an
    earlier run's under the same --output."""
    jf.write_good_pairs(tmp_path / "in", 2)
    argv = ["--input", str(tmp_path / "in" / "*.json"), "--output", str(tmp_path / "o")]
    assert job.main([*argv, "--build_only"]) == job.EXIT_OK
    earlier = sorted(p.name for p in (tmp_path / "o").glob("built-*.jsonl"))
    assert earlier
    capsys.readouterr()
    assert job.main([*argv, "--build_only"]) == job.EXIT_USAGE
    err = capsys.readouterr().err
    assert "already holds results of another run" in err and earlier[0] in err
    assert sorted(p.name for p in (tmp_path / "o").glob("built-*.jsonl")) == earlier
    # --overwrite deletes the earlier results first: the lines are this run's only.
    jf.write_good_pairs(tmp_path / "in" / "more", 1, seed="more")
    argv[1] = str(tmp_path / "in" / "**.json")
    assert job.main([*argv, "--build_only", "--overwrite"]) == job.EXIT_OK
    assert len(_lines(tmp_path / "o", "built")) == 3


def test_a_glob_matching_nothing_is_a_usage_error_even_without_preflight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--input", str(tmp_path / "nothing-*.json"), "--output", str(tmp_path / "o")]
    assert job.main([*argv, "--build_only", "--no_preflight"]) == job.EXIT_USAGE
    assert "no file matches" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.jsonl"))
