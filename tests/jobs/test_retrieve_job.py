"""pipelines.retrieve end to end: options and exit codes, manifest and summary, selection by
--uids_file or by search, and a killed run that a second run finishes without fetching twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import factory
import pydicom
import pytest
import requests
from wado_proxy import WadoProxy

from pipelines import retrieve
from pipelines.cli import help_parser
from pipelines.local_orthanc import LocalOrthanc

ROOT = Path(__file__).resolve().parents[2]


def _rows(prefix: Path, name: str) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted(prefix.glob(f"{name}-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def _store(orthanc: LocalOrthanc, folder: Path, count: int, studies: int) -> dict[str, Path]:
    by_sop = {}
    for path in factory.write_ct_instances(folder, count=count, studies=studies):
        resp = requests.post(f"{orthanc.rest_url}/instances", data=path.read_bytes(), timeout=30)
        resp.raise_for_status()
        by_sop[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    return by_sop


def _uids_file(path: Path, inputs: dict[str, Path], level: str = "series") -> Path:
    lines = set()
    for p in inputs.values():
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        uids = [ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID]
        lines.add("/".join(uids[: {"studies": 1, "series": 2, "instances": 3}[level]]))
    path.write_text("# targets\n" + "\n".join(sorted(lines)) + "\n")
    return path


def test_help_lists_retrieve_selection_and_store_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.retrieve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    names = {s for a in help_parser(retrieve.SPEC)._actions for s in a.option_strings}
    expected = ["--uids_file", "--what", "--granularity", "--layout", "--verify", "--filter"]
    expected += ["--queries", "--level", "--dicomweb_url", "--output", "--bulkdata_path"]
    for name in expected:
        assert name in names and name in out.stdout
    assert "usage: python -m pipelines.retrieve" in out.stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "say what to retrieve"),
        (["--uids_file", "x.txt", "--level", "studies"], "either --uids_file or search"),
        (["--level", "studies", "--layout", "{study}/{series}"], "{instance}"),
        (["--level", "studies", "--what", "rendered", "--granularity", "series"], "granularity"),
        (["--level", "studies", "--frames", "0"], "frame"),
        (["--level", "planets"], "level"),
        (["--level", "studies", "--bulkdata_path", "7FE0"], "bulk data path"),
        (["--level", "studies", "--what", "thumbnails"], ""),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["--dicomweb_url", "http://127.0.0.1:9/dicom-web", "--output", str(tmp_path / "o")]
    assert retrieve.main([*argv, *extra]) == retrieve.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_bad_uids_file_line_exits_2_naming_the_line(
    orthanc: LocalOrthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uids = tmp_path / "uids.txt"
    uids.write_text("1.2.3\n1.2.3/4.5\nnot a uid\n")
    argv = ["--uids_file", str(uids), "--dicomweb_url", orthanc.dicomweb_url]
    assert retrieve.main([*argv, "--output", str(tmp_path / "o")]) == retrieve.EXIT_USAGE
    err = capsys.readouterr().err
    assert "line 3" in err and "not a uid" not in err


def test_retrieve_by_uids_file_then_rerun_skips_everything(
    orthanc: LocalOrthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = _store(orthanc, tmp_path / "in", count=6, studies=2)
    uids = _uids_file(tmp_path / "uids.txt", inputs, "series")
    argv = ["--uids_file", str(uids), "--dicomweb_url", orthanc.dicomweb_url, "--verify"]
    out = tmp_path / "out"
    assert retrieve.main([*argv, "--output", str(out)]) == retrieve.EXIT_OK
    rows = _rows(out, "retrieved")
    assert sorted(str(r["sop_uid"]) for r in rows) == sorted(inputs)
    for row in rows:
        data = Path(str(row["path"])).read_bytes()
        assert data == inputs[str(row["sop_uid"])].read_bytes()
        assert row["bytes"] == len(data) and row["content_type"] == "application/dicom"
        assert row["status"] == "retrieved" and len(str(row["sha256"])) == 64
    assert _rows(out, "dead_letter") == []
    summary = capsys.readouterr().out
    assert "retrieved                 6  files" in summary and "files/s" in summary

    assert retrieve.main([*argv, "--output", str(out)]) == retrieve.EXIT_OK
    again = _rows(out, "retrieved")
    assert {r["status"] for r in again} == {"already_complete"} and len(again) == 6
    assert "already complete          6" in capsys.readouterr().out


def test_manifest_resumes_non_dicom_files_and_missing_targets_exit_3(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    inputs = _store(orthanc, tmp_path / "in", count=3, studies=1)
    uids = _uids_file(tmp_path / "uids.txt", inputs, "instances")
    with uids.open("a") as f:
        f.write(next(iter(uids.read_text().splitlines()[1:])).rsplit("/", 1)[0] + "/1.2.3.4.5\n")
    argv = ["--uids_file", str(uids), "--dicomweb_url", orthanc.dicomweb_url, "--what", "rendered"]
    out = tmp_path / "out"
    assert retrieve.main([*argv, "--output", str(out)]) == retrieve.EXIT_DEAD_LETTERS
    [letter] = _rows(out, "dead_letter")
    assert (letter["reason"], letter["sop_uid"], letter["http_status"]) == (
        "not_found",
        "1.2.3.4.5",
        404,
    )
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 3
    # A file changed since (not what the manifest says) is fetched again; the others are not.
    pngs[0].write_bytes(b"not the image")
    assert retrieve.main([*argv, "--output", str(out)]) == retrieve.EXIT_DEAD_LETTERS
    statuses = {Path(str(r["path"])).name: r["status"] for r in _rows(out, "retrieved")}
    assert statuses.pop(pngs[0].name) == "retrieved"
    assert set(statuses.values()) == {"already_complete"}
    assert pngs[0].read_bytes().startswith(b"\x89PNG")


def test_a_clean_rerun_leaves_no_dead_letters_of_the_run_before(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    """A re-run's result files are its own: the first run's dead letters do not linger beside a
    second run that had none (the README's glob would read them as this run's)."""
    inputs = _store(orthanc, tmp_path / "in", count=2, studies=1)
    uids = _uids_file(tmp_path / "uids.txt", inputs, "instances")
    good = uids.read_text()
    missing = good.splitlines()[1].rsplit("/", 1)[0] + "/1.2.3.4.5\n"
    uids.write_text(good + missing)
    argv = ["--uids_file", str(uids), "--dicomweb_url", orthanc.dicomweb_url]
    out = tmp_path / "out"
    assert retrieve.main([*argv, "--output", str(out)]) == retrieve.EXIT_DEAD_LETTERS
    assert [d["reason"] for d in _rows(out, "dead_letter")] == ["not_found"]
    uids.write_text(good)  # the user drops the target that does not exist
    assert retrieve.main([*argv, "--output", str(out)]) == retrieve.EXIT_OK
    assert _rows(out, "dead_letter") == []
    assert sorted(str(r["sop_uid"]) for r in _rows(out, "retrieved")) == sorted(inputs)


def test_retrieve_selected_by_a_search(orthanc: LocalOrthanc, tmp_path: Path) -> None:
    inputs = _store(orthanc, tmp_path / "in", count=4, studies=2)
    study = str(pydicom.dcmread(next(iter(inputs.values()))).StudyInstanceUID)
    argv = ["--study", study, "--level", "series", "--dicomweb_url", orthanc.dicomweb_url]
    out = tmp_path / "out"
    assert retrieve.main([*argv, "--output", str(out), "--granularity", "series"]) == 0
    rows = _rows(out, "retrieved")
    expected = {sop for sop, p in inputs.items() if pydicom.dcmread(p).StudyInstanceUID == study}
    assert {str(r["sop_uid"]) for r in rows} == expected and len(rows) == 2


def test_a_killed_run_is_finished_by_the_next_without_fetching_twice(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    inputs = _store(orthanc, tmp_path / "in", count=16, studies=1)
    uids = _uids_file(tmp_path / "uids.txt", inputs, "instances")
    out = tmp_path / "out"

    def slow(method: str, path: str, seen: int) -> str:
        return "slow:0.4" if "/instances/" in path else "forward"

    with WadoProxy(orthanc.rest_url, slow) as proxy:
        job = subprocess.Popen(
            [sys.executable, "-m", "pipelines.retrieve", "--uids_file", str(uids),
             "--dicomweb_url", f"{proxy.base_url}/dicom-web", "--output", str(out),
             "--max_concurrency", "2"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while len(list(out.rglob("*.dcm"))) < 4 and time.monotonic() < deadline:
                assert job.poll() is None, "the job ended before it could be killed"
                time.sleep(0.05)
        finally:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    before = {p for p in out.rglob("*.dcm") if ".retrieve-tmp" not in p.parts}
    assert 4 <= len(before) < len(inputs)
    assert not list(out.glob("retrieved-*.jsonl"))  # killed before the manifest
    for path in before:  # whatever is at a final name is whole
        assert path.read_bytes() == inputs[path.stem].read_bytes()

    argv = ["--uids_file", str(uids), "--dicomweb_url", orthanc.dicomweb_url]
    assert retrieve.main([*argv, "--output", str(out)]) == retrieve.EXIT_OK
    rows = _rows(out, "retrieved")
    done_before = {p.stem for p in before}
    assert sorted(str(r["sop_uid"]) for r in rows) == sorted(inputs)
    for row in rows:
        expected = "already_complete" if row["sop_uid"] in done_before else "retrieved"
        assert row["status"] == expected
        assert Path(str(row["path"])).read_bytes() == inputs[str(row["sop_uid"])].read_bytes()


def test_verify_checks_sizes_and_hashes_of_store_records_and_manifests(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    from pipelines import store

    factory.write_ct_instances(tmp_path / "in", count=3, studies=1)
    argv = ["--dicomweb_url", orthanc.dicomweb_url]
    assert (
        store.main(["--input", str(tmp_path / "in"), *argv, "--output", str(tmp_path / "s")]) == 0
    )
    records = _rows(tmp_path / "s", "stored")
    records[0]["bytes"] = int(records[0]["bytes"]) + 1  # type: ignore[call-overload]
    uids = tmp_path / "stored.jsonl"
    uids.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    code = retrieve.main(["--uids_file", str(uids), *argv, "--output", str(out), "--verify"])
    assert code == retrieve.EXIT_DEAD_LETTERS
    [letter] = _rows(out, "dead_letter")
    assert (letter["reason"], letter["sop_uid"]) == ("size_mismatch", records[0]["sop_uid"])
    assert len(_rows(out, "retrieved")) == 2
    assert not list(out.rglob(f"{records[0]['sop_uid']}.dcm"))  # never in place

    # An earlier manifest as the selection: a hash that differs is a verify failure.
    manifest = _rows(out, "retrieved")
    manifest[0]["sha256"] = "0" * 64
    uids.write_text("".join(json.dumps(r) + "\n" for r in manifest))
    out2 = tmp_path / "out2"
    code = retrieve.main(["--uids_file", str(uids), *argv, "--output", str(out2), "--verify"])
    assert code == retrieve.EXIT_DEAD_LETTERS
    assert [d["reason"] for d in _rows(out2, "dead_letter")] == ["verify_failed"]


@pytest.mark.parametrize("granularity", ["series", "study"])
def test_a_rerun_does_not_fetch_a_complete_series_or_study_again(
    orthanc: LocalOrthanc, tmp_path: Path, granularity: str
) -> None:
    inputs = _store(orthanc, tmp_path / "in", count=4, studies=2)
    uids = _uids_file(tmp_path / "uids.txt", inputs, "studies")
    out = tmp_path / "out"
    with WadoProxy(orthanc.rest_url, lambda method, path, seen: "forward") as proxy:
        argv = ["--uids_file", str(uids), "--dicomweb_url", f"{proxy.base_url}/dicom-web"]
        argv += ["--output", str(out), "--granularity", granularity]
        assert retrieve.main(argv) == retrieve.EXIT_OK
        first = sum(n for p, n in proxy.seen.items() if not p.split("?")[0].endswith("instances"))
        proxy.seen.clear()
        (Path(str(_rows(out, "retrieved")[0]["path"]))).unlink()  # one file lost since
        assert retrieve.main(argv) == retrieve.EXIT_OK
        listings = ("studies", "instances", "series")  # preflight and QIDO, not WADO
        wado = [p for p in proxy.seen if not p.split("?")[0].endswith(listings)]
    rows = _rows(out, "retrieved")
    assert sorted(str(r["sop_uid"]) for r in rows) == sorted(inputs)
    assert sorted(str(r["status"]) for r in rows).count("already_complete") >= 1
    assert first >= 2 and len(wado) == 1  # only the incomplete unit is fetched again
    for row in rows:
        assert Path(str(row["path"])).read_bytes() == inputs[str(row["sop_uid"])].read_bytes()


def test_the_results_of_pipelines_search_are_a_uids_file(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    from pipelines import search

    inputs = _store(orthanc, tmp_path / "in", count=4, studies=2)
    url = ["--dicomweb_url", orthanc.dicomweb_url]
    assert search.main(["--level", "series", *url, "--output", str(tmp_path / "found")]) == 0
    [results] = list((tmp_path / "found").glob("results-*.jsonl"))
    out = tmp_path / "out"
    assert retrieve.main(["--uids_file", str(results), *url, "--output", str(out)]) == 0
    assert sorted(str(r["sop_uid"]) for r in _rows(out, "retrieved")) == sorted(inputs)
