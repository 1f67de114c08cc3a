"""pipelines.store end to end on the DirectRunner: exit codes, output files, summary, privacy."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import factory
import pytest

from pipelines import store
from pipelines.local_orthanc import LocalOrthanc, free_port


def _lines(prefix: Path, name: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in sorted(prefix.glob(f"{name}-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def _argv(inputs: str, url: str, out: Path, *extra: str) -> list[str]:
    return ["--input", inputs, "--dicomweb_url", url, "--output", str(out), *extra]


def test_all_stored_exits_0_and_writes_one_line_per_instance(
    orthanc: LocalOrthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = factory.write_ct_instances(tmp_path / "in", count=6, studies=2)
    code = store.main(_argv(str(tmp_path / "in"), orthanc.dicomweb_url, tmp_path / "out"))
    assert code == store.EXIT_OK
    stored = _lines(tmp_path / "out", "stored")
    assert sorted(r["source"] for r in stored) == sorted(str(p) for p in paths)
    assert {r["status"] for r in stored} == {"stored"}
    assert all(str(r["retrieve_url"]).startswith(orthanc.dicomweb_url) for r in stored)
    assert _lines(tmp_path / "out", "dead_letter") == []
    summary = capsys.readouterr().out
    assert "stored                    6" in summary
    assert "instances/s" in summary and "MB/s" in summary


def test_dead_letters_exit_3_and_rerun_stores_nothing_twice(
    orthanc: LocalOrthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = factory.write_ct_instances(tmp_path / "in", count=4)
    bad = factory.write_bad_inputs(tmp_path / "in")
    first = store.main(_argv(str(tmp_path / "in"), orthanc.dicomweb_url, tmp_path / "run1"))
    assert first == store.EXIT_DEAD_LETTERS
    letters = _lines(tmp_path / "run1", "dead_letter")
    assert sorted((d["source"], d["reason"]) for d in letters) == sorted(
        (str(b.path), b.reason) for b in bad
    )

    second = store.main(_argv(str(tmp_path / "in"), orthanc.dicomweb_url, tmp_path / "run2"))
    assert second == store.EXIT_DEAD_LETTERS
    rerun = _lines(tmp_path / "run2", "stored")
    assert sorted(r["source"] for r in rerun) == sorted(str(p) for p in good)
    assert {r["status"] for r in rerun} == {"already_present"}
    assert orthanc.instance_count() == len(good)


def test_summary_counts_failures_by_reason(
    orthanc: LocalOrthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    factory.write_ct_instances(tmp_path / "in", count=2)
    bad = factory.write_bad_inputs(tmp_path / "in")
    store.main(_argv(str(tmp_path / "in"), orthanc.dicomweb_url, tmp_path / "out"))
    out = capsys.readouterr().out
    assert f"failed           {len(bad):>10,}" in out
    for reason in {b.reason for b in bad}:
        count = sum(b.reason == reason for b in bad)
        assert f"    {reason:<22}{count:>8,}" in out


def test_on_exists_fail_dead_letters_instances_already_there(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    factory.write_ct_instances(tmp_path / "in", count=2)
    assert store.main(_argv(str(tmp_path / "in"), orthanc.dicomweb_url, tmp_path / "a")) == 0
    code = store.main(
        _argv(str(tmp_path / "in"), orthanc.dicomweb_url, tmp_path / "b", "--on_exists", "fail")
    )
    assert code == store.EXIT_DEAD_LETTERS
    assert [d["reason"] for d in _lines(tmp_path / "b", "dead_letter")] == ["already_exists"] * 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output", "/tmp/x", "--dicomweb_url", "http://127.0.0.1:1/dw"], "--input is required"),
        (["--input", "x", "--dicomweb_url", "http://127.0.0.1:1/dw"], "--output is required"),
        (["--input", "x", "--output", "/tmp/x"], "--dicomweb_url"),
        (["--input", "x", "--output", "o", "--dicomweb_url", "http://u:p@h/dw"], "credentials"),
        (
            ["--input", "x", "--output", "o", "--location", "l", "--dicomweb_url", "http://h/"],
            "either",
        ),
    ],
)
def test_bad_options_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert store.main(argv) == store.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_preflight_refuses_an_empty_glob_and_an_unreachable_store(
    orthanc: LocalOrthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = store.main(_argv(str(tmp_path / "nothing-*.dcm"), orthanc.dicomweb_url, tmp_path / "o"))
    assert code == store.EXIT_USAGE
    assert "no file matches" in capsys.readouterr().err
    factory.write_ct_instances(tmp_path / "in", count=1)
    dead_url = f"http://127.0.0.1:{free_port()}/dicom-web"
    code = store.main(_argv(str(tmp_path / "in"), dead_url, tmp_path / "o", "--max_attempts", "1"))
    assert code == store.EXIT_USAGE
    assert "does not answer" in capsys.readouterr().err


def test_patient_name_never_reaches_outputs_or_logs(
    orthanc: LocalOrthanc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every failure path with a planted PatientName: it must not appear anywhere we write."""
    caplog.set_level(logging.DEBUG)
    factory.write_ct_instances(tmp_path / "in", count=3)
    factory.write_bad_inputs(tmp_path / "in")
    code = store.main(
        _argv(str(tmp_path / "in"), orthanc.dicomweb_url, tmp_path / "out", "--on_exists", "fail")
    )
    store.main(
        _argv(str(tmp_path / "in"), orthanc.dicomweb_url, tmp_path / "out2", "--on_exists", "fail")
    )
    assert code == store.EXIT_DEAD_LETTERS
    captured = capsys.readouterr()
    written = "".join(p.read_text() for p in tmp_path.glob("out*/*.jsonl"))
    assert "already_exists" in written and "truncated" in written
    for text in (captured.out, captured.err, caplog.text, written):
        assert factory.PATIENT_NAME not in text
        assert "SENSITIVE" not in text
