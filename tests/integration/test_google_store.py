"""The store job against the loopback stand-in for Google's store (what Orthanc cannot show)."""

from __future__ import annotations

import json
from pathlib import Path

import factory
import pytest

from pipelines import store

pytestmark = pytest.mark.integration


def _rows(prefix: Path, name: str) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted(prefix.glob(f"{name}-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_bearer_single_part_storage_class_and_409_already_exists(
    google_standin: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DWB_TEST_TOKEN", "standin-token")
    paths = factory.write_ct_instances(tmp_path / "in", count=3)
    base = [
        "--input", str(tmp_path / "in"),
        "--dicomweb_url", google_standin.dicomweb_url,  # type: ignore[attr-defined]
        "--auth", "bearer", "--token_env", "DWB_TEST_TOKEN",
    ]  # fmt: skip
    first = [*base, "--single_part", "--storage_class", "ARCHIVE", "--output", str(tmp_path / "a")]
    assert store.main(first) == store.EXIT_OK
    requests_seen = google_standin.requests  # type: ignore[attr-defined]
    posts = [r for r in requests_seen if r.method == "POST"]
    assert len(posts) == 3
    assert {r.headers["Storage-Class"] for r in posts} == {"ARCHIVE"}
    assert {r.headers["Authorization"] for r in requests_seen} == {"Bearer standin-token"}
    assert [r["status"] for r in _rows(tmp_path / "a", "stored")] == ["stored"] * 3

    # Without the existence check the store itself answers 409 "already exists" per instance.
    again = [*base, "--no_check_existing", "--output", str(tmp_path / "b")]
    assert store.main(again) == store.EXIT_OK
    rows = _rows(tmp_path / "b", "stored")
    assert sorted(str(r["source"]) for r in rows) == sorted(str(p) for p in paths)
    assert {r["status"] for r in rows} == {"already_present"}

    failing = [*base, "--no_check_existing", "--on_exists", "fail", "--output", str(tmp_path / "c")]
    assert store.main(failing) == store.EXIT_DEAD_LETTERS
    letters = _rows(tmp_path / "c", "dead_letter")
    assert {(d["reason"], d["server_reason"]) for d in letters} == {("already_exists", "0x0110")}
    assert all("already exists" in str(d["server_detail"]) for d in letters)


def test_wrong_token_fails_preflight(
    google_standin: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("DWB_TEST_TOKEN", "wrong")
    factory.write_ct_instances(tmp_path / "in", count=1)
    argv = [
        "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
        "--dicomweb_url", google_standin.dicomweb_url,  # type: ignore[attr-defined]
        "--auth", "bearer", "--token_env", "DWB_TEST_TOKEN",
    ]  # fmt: skip
    assert store.main(argv) == store.EXIT_USAGE
    err = capsys.readouterr().err
    assert "refused the credentials (HTTP 401)" in err
    assert "wrong" not in err
