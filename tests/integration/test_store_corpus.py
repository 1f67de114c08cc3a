"""The store job on every file pydicom and pydicom-data ship, plus generated junk, into Orthanc.

Every input must end exactly once in ``stored`` or in a dead letter; every stored instance must
come back byte-exact with ``transfer-syntax=*``; a second run must store nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import factory
import pytest
import wado

from pipelines import store
from pipelines.local_orthanc import LocalOrthanc

pytestmark = pytest.mark.integration

SERVER_SIDE_REASONS = {"http_error", "rejected"}


def _rows(prefix: Path, name: str) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted(prefix.glob(f"{name}-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def _transfer_syntax(path: Path) -> str:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "raw")) if meta is not None else "raw"


def _all_files(*folders: Path) -> set[str]:
    return {
        str(Path(root) / name) for folder in folders for root, _, names in os.walk(folder)
        for name in names
    }  # fmt: skip


def test_corpus_round_trip(orthanc: LocalOrthanc, tmp_path: Path) -> None:
    data_dir = factory.pydicom_data_dir()
    assert data_dir is not None, "pydicom-data is a test dependency"
    bad = factory.write_bad_inputs(tmp_path / "junk")
    folders = [factory.pydicom_test_files_dir(), data_dir, tmp_path / "junk"]
    argv = [arg for folder in folders for arg in ("--input", f"{folder}/**")]
    argv += ["--dicomweb_url", orthanc.dicomweb_url, "--max_concurrency", "4"]

    code = store.main([*argv, "--output", str(tmp_path / "run1")])
    stored = _rows(tmp_path / "run1", "stored")
    letters = _rows(tmp_path / "run1", "dead_letter")

    # Exactly once: every input is in one output, none twice, none missing.
    sources = [str(r["source"]) for r in stored + letters]
    assert len(sources) == len(set(sources))
    assert set(sources) == _all_files(*folders)
    assert code == store.EXIT_DEAD_LETTERS  # the corpus holds junk on purpose

    by_source = {str(d["source"]): d for d in letters}
    for b in bad:
        assert by_source[str(b.path)]["reason"] == b.reason, b.path.name
    for letter in letters:
        assert letter["message"], letter
        if letter["stage"] == "store" and letter["reason"] in SERVER_SIDE_REASONS:
            assert letter["http_status"] is not None  # the server said no: say what it said
    # Each repeated SOP Instance UID names the file sent in its place, which has an outcome of
    # its own: a byte-identical copy shares it (duplicate_of), other bytes are a dead letter.
    stored_sources = {str(r["source"]) for r in stored}
    sent_and_refused = {str(d["source"]) for d in letters if d["stage"] == "store"}
    duplicates = [d for d in letters if d["reason"] == "conflicting_duplicate"]
    assert duplicates  # pydicom-data repeats pydicom's datasets in other transfer syntaxes
    for d in duplicates:
        kept = str(d["message"]).rsplit(": ", 1)[1]
        assert kept in stored_sources or kept in sent_and_refused - {str(d["source"])}
    copies = [r for r in stored if r["duplicate_of"]]
    for r in copies:
        assert str(r["duplicate_of"]) in stored_sources and r["bytes"] == 0
        assert factory.sha256(str(r["source"])) == factory.sha256(str(r["duplicate_of"]))
    sent = [r for r in stored if not r["duplicate_of"]]
    # A real spread of transfer syntaxes was stored, not a token few.
    syntaxes = {_transfer_syntax(Path(str(r["source"]))) for r in sent}
    assert len(sent) >= 120 and len(syntaxes) >= 8, syntaxes
    assert all(r["status"] == "stored" for r in stored)
    assert orthanc.instance_count() == len(sent)

    for row in sent:
        got = wado.retrieve_instance_bytes(str(row["retrieve_url"]))
        source = Path(str(row["source"]))
        expected = source.read_bytes()
        if got != expected:  # raw datasets were sent with a generated File Meta header
            assert got.endswith(expected) and got[128:132] == b"DICM", source.name
        assert row["bytes"] == len(got), source.name

    code = store.main([*argv, "--output", str(tmp_path / "run2")])
    rerun = _rows(tmp_path / "run2", "stored")
    assert {r["status"] for r in rerun} == {"already_present"}
    assert sorted(str(r["source"]) for r in rerun) == sorted(str(r["source"]) for r in stored)
    assert orthanc.instance_count() == len(sent)


def test_every_transfer_syntax_round_trips(orthanc: LocalOrthanc, tmp_path: Path) -> None:
    """One file per transfer syntax in the corpus, with fresh UIDs so none is a duplicate."""
    import pydicom

    data_dir = factory.pydicom_data_dir()
    assert data_dir is not None
    chosen: dict[str, Path] = {}
    for source in sorted(_all_files(factory.pydicom_test_files_dir(), data_dir)):
        try:
            ds = pydicom.dcmread(source)
        except Exception:
            continue
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax and "SOPInstanceUID" in ds and "PixelData" in ds and syntax not in chosen:
            ds.StudyInstanceUID = factory.uid(f"ts-study-{syntax}")
            ds.SeriesInstanceUID = factory.uid(f"ts-series-{syntax}")
            ds.SOPInstanceUID = factory.uid(f"ts-sop-{syntax}")
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            target = tmp_path / "in" / f"{len(chosen):02d}.dcm"
            target.parent.mkdir(exist_ok=True)
            ds.save_as(target, enforce_file_format=True)
            chosen[str(syntax)] = target
    assert len(chosen) >= 12, sorted(chosen)

    code = store.main(
        ["--input", str(tmp_path / "in"), "--dicomweb_url", orthanc.dicomweb_url,
         "--output", str(tmp_path / "out")]
    )  # fmt: skip
    stored = {str(r["source"]): r for r in _rows(tmp_path / "out", "stored")}
    letters = _rows(tmp_path / "out", "dead_letter")
    refused = {str(d["source"]): d for d in letters}
    assert set(stored) | set(refused) == {str(p) for p in chosen.values()}
    # Orthanc refuses some syntaxes; those must be server verdicts, never client guesses.
    assert all(d["stage"] == "store" and d["http_status"] for d in letters), letters
    assert code == (store.EXIT_OK if not letters else store.EXIT_DEAD_LETTERS)
    assert len(stored) >= 10
    for source, row in stored.items():
        assert wado.retrieve_instance_bytes(str(row["retrieve_url"])) == Path(source).read_bytes()
