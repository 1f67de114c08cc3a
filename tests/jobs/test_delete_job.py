"""pipelines.delete end to end against the real Orthanc (``--delete_api orthanc`` for real deletes;
its DICOMweb DELETE answers 405), and against the operations stand-in for Google's form."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import factory
import pydicom
import pytest
import requests
from google_operations import GoogleOperationsStandin

from pipelines import delete
from pipelines.local_orthanc import LocalOrthanc

PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm")


def _lines(prefix: Path, name: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in sorted(prefix.glob(f"{name}-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def _dataset(seed: str, study: int, series: int, n: int) -> bytes:
    ds = pydicom.dcmread(factory.testdata("CT_small.dcm"))
    ds.PatientName = factory.PATIENT_NAME
    ds.StudyInstanceUID = factory.uid(f"{seed}-st{study}")
    ds.SeriesInstanceUID = factory.uid(f"{seed}-st{study}-se{series}")
    ds.SOPInstanceUID = factory.uid(f"{seed}-st{study}-se{series}-{n}")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


Key = tuple[str, str, str]


def _uids(data: bytes) -> Key:
    ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    return (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def _generated() -> list[bytes]:
    """Study 0: series 0 and 1 of two instances each; study 1: one series of two."""
    return [_dataset("dj", st, se, n) for st, se in [(0, 0), (0, 1), (1, 0)] for n in range(2)]


@pytest.fixture
def store(orthanc: LocalOrthanc) -> list[Key]:
    """Generated studies plus pydicom's own files, stored in Orthanc; their UIDs."""
    blobs = _generated() + [factory.testdata(n).read_bytes() for n in PYDICOM_FILES]
    for data in blobs:
        resp = requests.post(f"{orthanc.rest_url}/instances", data=data, timeout=30)
        resp.raise_for_status()
    return [_uids(b) for b in blobs]


def _in_store(orthanc: LocalOrthanc) -> set[Key]:
    """Every instance, by QIDO (what a DICOMweb client sees)."""
    rows = requests.get(f"{orthanc.dicomweb_url}/instances", timeout=30).json()
    return {
        tuple(r[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))  # type: ignore[misc]
        for r in rows
    }


def _argv(url: str, out: Path, *extra: str) -> list[str]:
    return ["--dicomweb_url", url, "--output", str(out), *extra]


def _uids_file(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "targets.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_deletes_exactly_the_studies_series_and_instances_named(
    orthanc: LocalOrthanc, store: list[Key], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s0a, s0a2, s0b, _, s1a, _, ct, mr, _ = store
    lines = [
        "# a comment, then one target per level, one given twice, one already gone",
        s1a[0],  # study 1 (2 instances)
        f"{s0b[0]}/{s0b[1]}",  # series 1 of study 0 (2 instances)
        "/".join(s0a),  # one instance of series 0
        "/".join(s0a),
        mr[0],  # pydicom's MR study
        factory.uid("never-stored"),
    ]
    out = tmp_path / "out"
    argv = ["--uids_file", _uids_file(tmp_path, lines), "--delete_api", "orthanc", "--yes"]
    code = delete.main(_argv(orthanc.dicomweb_url, out, *argv, "--verify"))
    assert code == delete.EXIT_OK, capsys.readouterr()
    expected_left = {s0a2, ct, store[8]}
    assert _in_store(orthanc) == expected_left

    plan = {(p["level"], p["status"], p["instances"]) for p in _lines(out, "plan")}
    assert plan == {
        ("studies", "to_delete", 2),
        ("series", "to_delete", 2),
        ("instances", "to_delete", 1),
        ("studies", "to_delete", 1),
        ("studies", "already_absent", None),
    }
    deleted = _lines(out, "deleted")
    assert len(deleted) == 5  # the duplicate line is one target
    assert sorted(str(d["status"]) for d in deleted) == ["already_absent"] + ["deleted"] * 4
    assert {d["sop_uid"] for d in deleted if d["level"] == "instances"} == {s0a[2]}
    assert _lines(out, "dead_letter") == []
    summary = capsys.readouterr().out
    assert "deleted                   4  (6 instances)" in summary
    written = "".join(p.read_text() for p in out.glob("*.jsonl"))
    for text in (summary, written):
        assert factory.PATIENT_NAME not in text and "SENSITIVE" not in text


def test_level_cuts_targets_down(orthanc: LocalOrthanc, store: list[Key], tmp_path: Path) -> None:
    # Instance lines with --level series delete their whole series.
    lines = ["/".join(store[0]), "/".join(store[4])]
    argv = ["--uids_file", _uids_file(tmp_path, lines), "--level", "series"]
    code = delete.main(
        _argv(orthanc.dicomweb_url, tmp_path / "o", *argv, "--delete_api", "orthanc", "--yes")
    )
    assert code == delete.EXIT_OK
    assert _in_store(orthanc) == set(store) - {store[0], store[1], store[4], store[5]}


def test_plan_only_deletes_nothing(
    orthanc: LocalOrthanc, store: list[Key], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [store[0][0], store[6][0]]
    argv = ["--uids_file", _uids_file(tmp_path, lines), "--plan_only", "--delete_api", "orthanc"]
    assert delete.main(_argv(orthanc.dicomweb_url, tmp_path / "o", *argv)) == delete.EXIT_OK
    assert _in_store(orthanc) == set(store)
    assert sorted(p["instances"] for p in _lines(tmp_path / "o", "plan")) == [1, 4]
    assert not list((tmp_path / "o").glob("deleted-*"))
    assert "plan only: 2 targets would be deleted" in capsys.readouterr().out


def test_refuses_past_max_targets_and_deletes_nothing(
    orthanc: LocalOrthanc, store: list[Key], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["/".join(k) for k in store[:3]]
    argv = ["--uids_file", _uids_file(tmp_path, lines), "--yes", "--max_targets", "2"]
    argv += ["--delete_api", "orthanc"]
    code = delete.main(_argv(orthanc.dicomweb_url, tmp_path / "o", *argv))
    assert code == delete.EXIT_USAGE
    captured = capsys.readouterr()
    assert "the plan has 3 targets to delete, more than --max_targets 2" in captured.err
    assert "deleting refused: nothing deleted" in captured.out
    assert "over_max_targets" in captured.out
    assert _in_store(orthanc) == set(store)
    assert len(_lines(tmp_path / "o", "plan")) == 3  # the plan is written all the same
    # One pipeline: the gate inside it turned each target to delete into one dead letter.
    letters = _lines(tmp_path / "o", "dead_letter")
    assert sorted(d["sop_uid"] for d in letters) == sorted(k[2] for k in store[:3])
    assert {(d["stage"], d["reason"]) for d in letters} == {("delete", "over_max_targets")}
    assert all("3 targets to delete, more than max_targets 2" in d["message"] for d in letters)
    assert _lines(tmp_path / "o", "deleted") == []


def test_the_gate_counts_only_targets_to_delete_and_allows_the_limit(
    orthanc: LocalOrthanc, store: list[Key], tmp_path: Path
) -> None:
    """Two targets present and one absent with --max_targets 2: exactly at the limit, deleted;
    with --max_targets 1 the two are refused while the absent one still passes through."""
    lines = ["/".join(store[0]), "/".join(store[1]), f"{store[0][0]}/{store[0][1]}/1.2.3.404"]
    argv = ["--uids_file", _uids_file(tmp_path, lines), "--yes", "--delete_api", "orthanc"]
    refused = delete.run(_argv(orthanc.dicomweb_url, tmp_path / "r", *argv, "--max_targets", "1"))
    assert refused is not None and refused.exit_code == delete.EXIT_USAGE
    assert (refused.summary.to_delete, refused.summary.planned_absent) == (2, 1)
    assert refused.summary.failed_by_reason == {"over_max_targets": 2}
    assert refused.summary.deleted == 0 and refused.summary.already_absent == 1
    assert _in_store(orthanc) == set(store)
    allowed = delete.run(_argv(orthanc.dicomweb_url, tmp_path / "a", *argv, "--max_targets", "2"))
    assert allowed is not None and allowed.exit_code == delete.EXIT_OK
    assert (allowed.summary.deleted, allowed.summary.already_absent) == (2, 1)
    assert _in_store(orthanc) == set(store) - {store[0], store[1]}


def test_without_delete_api_orthanc_answers_405_and_nothing_is_deleted(
    orthanc: LocalOrthanc, store: list[Key], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [store[0][0], "/".join(store[6])]
    argv = ["--uids_file", _uids_file(tmp_path, lines), "--yes"]
    assert delete.main(_argv(orthanc.dicomweb_url, tmp_path / "o", *argv)) == 3
    letters = _lines(tmp_path / "o", "dead_letter")
    assert (
        sorted((d["reason"], d["http_status"]) for d in letters)
        == [("delete_unsupported", 405)] * 2
    )
    assert all("does not support DICOMweb deletes" in str(d["message"]) for d in letters)
    assert _in_store(orthanc) == set(store)
    assert "delete_unsupported" in capsys.readouterr().out


def test_all_deletes_every_study(orthanc: LocalOrthanc, store: list[Key], tmp_path: Path) -> None:
    argv = ["--all", "--yes", "--delete_api", "orthanc"]
    assert delete.main(_argv(orthanc.dicomweb_url, tmp_path / "o", *argv)) == delete.EXIT_OK
    assert _in_store(orthanc) == set()
    assert orthanc.instance_count() == 0


def test_empty_selection_is_not_an_error(
    orthanc: LocalOrthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--uids_file", _uids_file(tmp_path, ["# nothing here"]), "--yes"]
    assert delete.main(_argv(orthanc.dicomweb_url, tmp_path / "o", *argv)) == delete.EXIT_OK
    assert "the selection is empty: nothing to delete" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "nothing selected"),
        (["--uids_file", "{f}"], "needs --yes"),
        (["--all", "--uids_file", "{f}", "--yes"], "give one selection"),
        (["--filter", "Modality=CT", "--uids_file", "{f}", "--yes"], "give one selection"),
        (["--filter", "Modality", "--yes"], "KEY=VALUE"),
        (["--uids_file", "{bad}", "--yes"], "line 2"),
        (["--uids_file", "{f}", "--yes", "--level", "instances"], "cannot name instances"),
        (["--uids_file", "{f}", "--yes", "--level", "patients"], "level must be one of"),
        (["--uids_file", "{f}", "--yes", "--max_operations", "0"], "bad command line"),
    ],
)
def test_usage_errors_exit_2_before_anything_is_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    good = _uids_file(tmp_path, ["1.2.3"])
    bad = tmp_path / "bad.txt"
    bad.write_text("1.2.3\n1.2.x.4\n")
    argv = [a.format(f=good, bad=bad) for a in extra]
    assert delete.main(_argv("http://127.0.0.1:9/dicom-web", tmp_path / "o", *argv)) == 2
    assert message in capsys.readouterr().err


def test_google_operations_with_throttling(tmp_path: Path) -> None:
    """Google's form through the whole job: study operations, an instance {}, 429/503."""
    with GoogleOperationsStandin(done_after_polls=2) as standin:
        blobs = _generated()
        for data in blobs:
            standin.preload(data)
        keys = [_uids(b) for b in blobs]
        standin.inject("DELETE", "/studies/", 429, 503)
        standin.inject("GET", "/operations/", 503)
        lines = [keys[0][0], "/".join(keys[4])]
        argv = ["--uids_file", _uids_file(tmp_path, lines), "--yes", "--max_attempts", "4"]
        code = delete.main(_argv(standin.dicomweb_url, tmp_path / "o", *argv, "--verify"))
        assert code == delete.EXIT_OK
        assert set(standin.instances) == {keys[5]}
        deleted = {d["level"]: d for d in _lines(tmp_path / "o", "deleted")}
        assert str(deleted["studies"]["operation"]).endswith("/operations/1")
        assert deleted["instances"]["operation"] is None
        assert float(deleted["studies"]["duration_seconds"]) >= 2.5  # polls at 1 s and 2.5 s


def test_search_selection_deletes_what_the_search_finds(
    orthanc: LocalOrthanc, store: list[Key], tmp_path: Path
) -> None:
    """--level series --filter Modality=MR: pydicom's MR series only."""
    mr = store[7]
    argv = ["--level", "series", "--filter", "Modality=MR", "--delete_api", "orthanc", "--yes"]
    assert delete.main(_argv(orthanc.dicomweb_url, tmp_path / "o", *argv)) == delete.EXIT_OK
    assert _in_store(orthanc) == set(store) - {mr}
    plan = _lines(tmp_path / "o", "plan")
    assert [(p["level"], p["series_uid"], p["instances"]) for p in plan] == [("series", mr[1], 1)]
    # A search scoped to a study, at instance level, plan only.
    argv = ["--level", "instances", "--study", store[0][0], "--plan_only"]
    assert delete.main(_argv(orthanc.dicomweb_url, tmp_path / "p", *argv)) == delete.EXIT_OK
    assert sorted(p["sop_uid"] for p in _lines(tmp_path / "p", "plan")) == sorted(
        k[2] for k in store[:4]
    )
    assert _in_store(orthanc) == set(store) - {mr}


def test_search_results_file_as_uids_file(
    orthanc: LocalOrthanc, store: list[Key], tmp_path: Path
) -> None:
    """The results-*.jsonl of pipelines.search, fed back with --uids_file."""
    from pipelines import search

    found = tmp_path / "found"
    argv = ["--dicomweb_url", orthanc.dicomweb_url, "--output", str(found)]
    assert search.main([*argv, "--level", "instances", "--study", store[4][0]]) == 0
    results = sorted(found.glob("results-*.jsonl"))
    assert results
    targets = tmp_path / "targets.jsonl"
    targets.write_text("".join(p.read_text() for p in results))
    argv = ["--uids_file", str(targets), "--delete_api", "orthanc", "--yes"]
    assert delete.main(_argv(orthanc.dicomweb_url, tmp_path / "o", *argv)) == delete.EXIT_OK
    assert _in_store(orthanc) == set(store) - {store[4], store[5]}
    assert {d["level"] for d in _lines(tmp_path / "o", "deleted")} == {"instances"}


def test_an_empty_search_is_not_an_error(
    orthanc: LocalOrthanc, store: list[Key], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--filter", "Modality=XA", "--yes", "--delete_api", "orthanc"]
    assert delete.main(_argv(orthanc.dicomweb_url, tmp_path / "o", *argv)) == delete.EXIT_OK
    assert "the selection is empty" in capsys.readouterr().out
    assert _in_store(orthanc) == set(store)


def test_a_uid_orthanc_holds_twice_is_not_deleted(orthanc: LocalOrthanc, tmp_path: Path) -> None:
    """The same StudyInstanceUID under two PatientIDs is two studies in Orthanc: which one the
    user meant is unknown, so neither is deleted."""
    for n, patient in enumerate(("PAT-A", "PAT-B")):
        ds = pydicom.dcmread(BytesIO(_dataset("amb", 0, 0, n)))
        ds.PatientID = patient
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
        requests.post(f"{orthanc.rest_url}/instances", data=out.getvalue(), timeout=30)
    study = factory.uid("amb-st0")
    argv = ["--uids_file", _uids_file(tmp_path, [study]), "--delete_api", "orthanc", "--yes"]
    assert delete.main(_argv(orthanc.dicomweb_url, tmp_path / "o", *argv)) == 3
    assert [d["reason"] for d in _lines(tmp_path / "o", "dead_letter")] == ["ambiguous_target"]
    assert orthanc.instance_count() == 2


def test_queries_file_selects_many_searches(
    orthanc: LocalOrthanc, store: list[Key], tmp_path: Path
) -> None:
    queries = tmp_path / "queries.jsonl"
    lines = [{"StudyInstanceUID": store[4][0]}, {"StudyInstanceUID": store[6][0]}]
    lines.append({"StudyInstanceUID": factory.uid("matches-nothing")})
    queries.write_text("".join(json.dumps(q) + "\n" for q in lines))
    argv = ["--queries", str(queries), "--delete_api", "orthanc", "--yes"]
    assert delete.main(_argv(orthanc.dicomweb_url, tmp_path / "o", *argv)) == delete.EXIT_OK
    assert _in_store(orthanc) == set(store) - {store[4], store[5], store[6]}
    assert sorted(p["instances"] for p in _lines(tmp_path / "o", "plan")) == [1, 2]


@pytest.mark.parametrize(
    "settings, reason",
    [({"never_done": True}, "operation_timeout"), ({"error": (13, "boom")}, "operation_failed")],
)
def test_operations_that_fail_or_never_finish_exit_3(
    tmp_path: Path, settings: dict[str, object], reason: str
) -> None:
    with GoogleOperationsStandin(**settings) as standin:  # type: ignore[arg-type]
        data = _generated()[0]
        standin.preload(data)
        study = _uids(data)[0]
        argv = ["--uids_file", _uids_file(tmp_path, [study]), "--yes"]
        argv += ["--operation_timeout", "1.5"]
        assert delete.main(_argv(standin.dicomweb_url, tmp_path / "o", *argv)) == 3
        letters = _lines(tmp_path / "o", "dead_letter")
        assert [(d["reason"], d["study_uid"]) for d in letters] == [(reason, study)]
        assert _lines(tmp_path / "o", "deleted") == []
        assert len(standin.instances) == 1


def test_a_failed_plan_deletes_nothing_and_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = "http://127.0.0.1:9/dicom-web"  # nothing listens: every search fails
    argv = ["--uids_file", _uids_file(tmp_path, ["1.2.3"]), "--yes", "--no_preflight"]
    assert delete.main(_argv(dead, tmp_path / "o", *argv, "--max_attempts", "1")) == 3
    letters = _lines(tmp_path / "o", "dead_letter")
    assert [(d["stage"], d["reason"]) for d in letters] == [("plan", "retries_exhausted")]
    assert "the selection failed" in capsys.readouterr().out
    assert _lines(tmp_path / "o", "deleted") == []  # one pipeline: the file is there, empty
