"""pipelines.store tried as a new user would and under faults (issue 9): it finishes with the
right accounting, refuses what would mix runs, and explains itself."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import factory
import pydicom
import pytest
from fault_proxy import FaultPlan, FaultProxy

from pipelines import store
from pipelines.local_orthanc import LocalOrthanc


def _lines(prefix: Path, name: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in sorted(prefix.glob(f"{name}-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def _argv(inputs: str | list[str], url: str, out: Path, *extra: str) -> list[str]:
    patterns = [inputs] if isinstance(inputs, str) else inputs
    args = [a for p in patterns for a in ("--input", p)]
    return [*args, "--dicomweb_url", url, "--output", str(out), *extra]


def _fuzzed_raw_dataset(path: Path) -> None:
    raw = bytearray(Path(factory.testdata("ExplVR_LitEndNoMeta.dcm")).read_bytes())
    at = raw.index(b"\x20\x00\x0d\x00UI") + 4  # StudyInstanceUID's VR
    raw[at : at + 2] = b"\x55\xfd"  # pydicom raises NotImplementedError reading it, lazily
    path.write_bytes(bytes(raw))


def test_a_fuzzed_header_is_a_dead_letter_and_the_file_beside_it_is_stored(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    (good,) = factory.write_ct_instances(tmp_path / "in", count=1)
    _fuzzed_raw_dataset(tmp_path / "in" / "fuzzed.dcm")
    code = store.main(_argv(str(tmp_path / "in"), orthanc.dicomweb_url, tmp_path / "out"))
    assert code == store.EXIT_DEAD_LETTERS
    assert [r["source"] for r in _lines(tmp_path / "out", "stored")] == [str(good)]
    (letter,) = _lines(tmp_path / "out", "dead_letter")
    assert (Path(str(letter["source"])).name, letter["reason"]) == ("fuzzed.dcm", "not_dicom")


def test_a_reused_output_prefix_is_refused_unless_overwrite(
    orthanc: LocalOrthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    factory.write_ct_instances(tmp_path / "in", count=2)
    argv = _argv(str(tmp_path / "in"), orthanc.dicomweb_url, tmp_path / "out")
    assert store.main(argv) == store.EXIT_OK
    capsys.readouterr()
    assert store.main(argv) == store.EXIT_USAGE
    err = capsys.readouterr().err
    assert "already holds results of another run" in err and "stored-00000-of-" in err
    assert "--overwrite" in err
    (tmp_path / "out" / "dead_letter-00000-of-00009.jsonl").write_text('{"stale": 1}\n')
    assert store.main([*argv, "--overwrite"]) == store.EXIT_OK
    assert _lines(tmp_path / "out", "dead_letter") == []  # the stale shard is gone
    assert [r["status"] for r in _lines(tmp_path / "out", "stored")] == ["already_present"] * 2


def test_an_unwritable_output_is_exit_2_before_anything_is_sent(
    orthanc: LocalOrthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    factory.write_ct_instances(tmp_path / "in", count=1)
    (tmp_path / "file").write_text("not a directory")
    out = tmp_path / "file" / "out"
    assert store.main(_argv(str(tmp_path / "in"), orthanc.dicomweb_url, out)) == store.EXIT_USAGE
    assert f"the output '{out}' cannot be written" in capsys.readouterr().err
    assert orthanc.instance_count() == 0


def test_an_empty_glob_is_exit_2_even_without_preflight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(str(tmp_path / "none-*.dcm"), "http://127.0.0.1:9/dw", tmp_path / "o")
    assert store.main([*argv, "--no_preflight"]) == store.EXIT_USAGE
    assert "no file matches" in capsys.readouterr().err


def test_overlapping_globs_globstar_and_identical_copies(
    orthanc: LocalOrthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    top = factory.write_ct_instances(tree, count=2, seed="top")
    # "zsub/..." sorts after "top-...": the files in tree/ are the first by path.
    (deep,) = factory.write_ct_instances(tree / "zsub", count=1, seed="deep")
    copy = tree / "zsub" / "copy-of-top.dcm"
    copy.write_bytes(top[0].read_bytes())
    edited = pydicom.dcmread(top[1])
    edited.InstanceNumber = 99  # same SOP Instance UID, other bytes
    edited.save_as(tree / "zsub" / "edited.dcm")
    patterns = [str(tree / "**" / "*.dcm"), str(top[0]), str(tree / "*")]
    code = store.main(_argv(patterns, orthanc.dicomweb_url, tmp_path / "out"))
    assert code == store.EXIT_DEAD_LETTERS  # only because of the conflicting copy
    rows = {str(r["source"]): r for r in _lines(tmp_path / "out", "stored")}
    assert sorted(rows) == sorted(str(p) for p in [*top, deep, copy])
    assert (rows[str(copy)]["duplicate_of"], rows[str(copy)]["bytes"]) == (str(top[0]), 0)
    assert rows[str(copy)]["status"] == "stored"
    (letter,) = _lines(tmp_path / "out", "dead_letter")
    assert letter["reason"] == "conflicting_duplicate"
    assert letter["source"] == str(tree / "zsub" / "edited.dcm")
    assert str(top[1]) in str(letter["message"])
    out = capsys.readouterr().out
    assert "files matched             5" in out
    assert "identical copies          1" in out
    assert "stored                    3" in out
    assert orthanc.instance_count() == 3


def test_redirects_fail_preflight_and_are_dead_letters_without_it(
    orthanc: LocalOrthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = factory.write_ct_instances(tmp_path / "in", count=2)
    with FaultProxy(orthanc.rest_url, FaultPlan(redirect_status=301)) as proxy:
        url = f"{proxy.base_url}/moved/dicom-web"
        assert store.main(_argv(str(tmp_path / "in"), url, tmp_path / "a")) == store.EXIT_USAGE
        assert "redirects: HTTP 301" in capsys.readouterr().err
        argv = _argv(str(tmp_path / "in"), url, tmp_path / "b", "--no_preflight")
        assert store.main(argv) == store.EXIT_DEAD_LETTERS
    letters = _lines(tmp_path / "b", "dead_letter")
    assert sorted(d["source"] for d in letters) == sorted(str(p) for p in paths)
    assert {(d["reason"], d["http_status"]) for d in letters} == {("redirected", 301)}
    assert all(f"{proxy.base_url}/dicom-web/studies/" in str(d["message"]) for d in letters)
    assert orthanc.instance_count() == 0


def test_a_capping_server_does_not_make_a_rerun_resend(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    factory.write_ct_instances(tmp_path / "in", count=5)
    assert store.main(_argv(str(tmp_path / "in"), orthanc.dicomweb_url, tmp_path / "a")) == 0
    with FaultProxy(orthanc.rest_url, FaultPlan(page_cap=2)) as proxy:
        url = f"{proxy.base_url}/dicom-web"
        assert store.main(_argv(str(tmp_path / "in"), url, tmp_path / "b")) == store.EXIT_OK
    rows = _lines(tmp_path / "b", "stored")
    assert [r["status"] for r in rows] == ["already_present"] * 5


def test_a_failing_lookup_is_made_once_per_study_counted_and_the_job_sends_anyway(
    orthanc: LocalOrthanc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    factory.write_ct_instances(tmp_path / "in", count=6, studies=2)
    plan = FaultPlan(p_503=1.0, methods=frozenset({"GET"}), retry_after="0")
    with FaultProxy(orthanc.rest_url, plan) as proxy:
        argv = _argv(
            str(tmp_path / "in"),
            f"{proxy.base_url}/dicom-web",
            tmp_path / "out",
            "--no_preflight",
            "--batch_size", "1",
            "--max_attempts", "1",
        )  # fmt: skip
        assert store.main(argv) == store.EXIT_OK
        lookups = proxy.counts["503"]
    assert lookups == 2  # one per study, not one per batch
    assert orthanc.instance_count() == 6
    assert "lookups failed            2" in capsys.readouterr().out
    warnings = [r for r in caplog.records if "could not check" in r.getMessage()]
    assert len(warnings) == 2


def test_the_summary_counts_from_launch(
    orthanc: LocalOrthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.summary import seconds_since_launch

    factory.write_ct_instances(tmp_path / "in", count=1)
    before = seconds_since_launch()
    assert store.main(_argv(str(tmp_path / "in"), orthanc.dicomweb_url, tmp_path / "o")) == 0
    out = capsys.readouterr().out
    seconds = float(out.split("store finished in ")[1].split(" s")[0])
    assert seconds >= before  # the whole process, not the pipeline alone
    assert "files matched             1" in out


def test_every_store_option_says_what_it_does() -> None:
    from pipelines.cli import help_parser

    for action in help_parser(store.SPEC)._actions:
        if action.option_strings == ["-h", "--help"]:
            continue
        text = action.help or ""
        assert text and not text.startswith("(default"), action.option_strings


def test_as_a_process_it_flushes_everything_before_its_fast_exit(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    import subprocess
    import sys

    (path,) = factory.write_ct_instances(tmp_path / "in", count=1)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.store", *_argv(str(path), orthanc.dicomweb_url, out)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == store.EXIT_OK, done.stderr
    assert "stored                    1" in done.stdout
    assert done.stdout.rstrip().endswith("dead_letter-*.jsonl")  # the last line made it out
    assert [r["source"] for r in _lines(out, "stored")] == [str(path)]


def test_a_crash_exits_1_with_a_message_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    factory.write_ct_instances(tmp_path / "in", count=1)

    def broken_build(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(store, "build", broken_build)  # stands for any bug in the job itself
    argv = _argv(str(tmp_path / "in"), "http://127.0.0.1:9/dw", tmp_path / "o", "--no_preflight")
    assert store.main(argv) == store.EXIT_CRASH == 1
    err = capsys.readouterr().err
    assert "error: the job crashed (RuntimeError: a bug)" in err


def test_credentials_that_cannot_be_built_on_the_workers_are_dead_letters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DWB_UNSET_TOKEN", raising=False)
    paths = factory.write_ct_instances(tmp_path / "in", count=2)
    argv = _argv(
        str(tmp_path / "in"), "http://127.0.0.1:9/dicom-web", tmp_path / "out",
        "--no_preflight", "--auth", "bearer", "--token_env", "DWB_UNSET_TOKEN",
    )  # fmt: skip
    assert store.main(argv) == store.EXIT_DEAD_LETTERS  # not a crash
    letters = _lines(tmp_path / "out", "dead_letter")
    assert sorted(d["source"] for d in letters) == sorted(str(p) for p in paths)
    assert {d["reason"] for d in letters} == {"credentials_error"}
    assert all("DWB_UNSET_TOKEN is not set" in str(d["message"]) for d in letters)


@pytest.mark.parametrize("option", ["--timeout", "--request_deadline"])
def test_a_deadline_that_is_not_positive_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    argv = _argv(str(tmp_path / "*.dcm"), "http://127.0.0.1:9/dw", tmp_path / "o", option, "0")
    assert store.main(argv) == store.EXIT_USAGE
    assert "must be positive" in capsys.readouterr().err
