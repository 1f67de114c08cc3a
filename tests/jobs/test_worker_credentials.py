"""Credentials that cannot be built on a worker (here: a bearer token variable that is not set,
with --no_preflight so the launcher does not find out first) make every input of the job a
``credentials_error`` dead letter: the job finishes with exit 3 instead of crashing. The store
job has its own test of this (tests/jobs/test_store_hardening.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines import delete, retrieve, search

CLOSED = "http://127.0.0.1:9/dicom-web"  # never reached: nothing may be sent without credentials
NO_TOKEN = ["--no_preflight", "--auth", "bearer", "--token_env", "DWB_UNSET_TOKEN"]


def _letters(out: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted(out.glob("dead_letter-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def _search(tmp: Path) -> tuple[Callable[[list[str]], int], list[str], int]:
    return search.main, ["--level", "studies", "--filter", "PatientID=P1"], 1


def _retrieve(tmp: Path) -> tuple[Callable[[list[str]], int], list[str], int]:
    uids = tmp / "uids.txt"
    uids.write_text("1.2.3/1.2.3.4/1.2.3.4.5\n1.2.3/1.2.3.4/1.2.3.4.6\n1.2.9\n")
    return retrieve.main, ["--uids_file", str(uids)], 3


def _delete(tmp: Path) -> tuple[Callable[[list[str]], int], list[str], int]:
    return delete.main, ["--level", "studies", "--study", "1.2.3", "--yes"], 1


@pytest.mark.parametrize("job", [_search, _retrieve, _delete], ids=["search", "retrieve", "delete"])
def test_every_input_is_a_credentials_error_dead_letter_and_the_job_exits_3(
    job: Callable[[Path], tuple[Callable[[list[str]], int], list[str], int]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DWB_UNSET_TOKEN", raising=False)
    main, args, inputs = job(tmp_path)
    out = tmp_path / "out"
    code = main(["--dicomweb_url", CLOSED, "--output", str(out), *args, *NO_TOKEN])
    assert code == 3  # dead letters, not a crash (1)
    letters = _letters(out)
    assert len(letters) == inputs
    assert {d["reason"] for d in letters} == {"credentials_error"}
    assert all("DWB_UNSET_TOKEN is not set" in str(d["message"]) for d in letters)
