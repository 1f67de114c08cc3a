"""Credentials that cannot be built on a worker (here: a bearer token variable that is not set,
with --no_preflight so the launcher does not find out first) make every input of the job a
``credentials_error`` dead letter: each job finishes with exit 3 instead of crashing."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from job_inputs import INPUTS, JOBS, job_inputs

CLOSED = "http://127.0.0.1:9/dicom-web"  # never reached: nothing may be sent without credentials
NO_TOKEN = ["--no_preflight", "--auth", "bearer", "--token_env", "DWB_UNSET_TOKEN"]


def _letters(out: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted(out.glob("dead_letter-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


@pytest.mark.parametrize("job", JOBS)
def test_every_input_is_a_credentials_error_dead_letter_and_the_job_exits_3(
    job: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DWB_UNSET_TOKEN", raising=False)
    main = importlib.import_module(f"pipelines.{job}").main
    out = tmp_path / "out"
    extra = ["--yes"] if job == "delete" else []
    argv = ["--dicomweb_url", CLOSED, "--output", str(out), *NO_TOKEN, *extra]
    assert main([*argv, *job_inputs(job, tmp_path)]) == 3  # dead letters, not a crash (1)
    letters = _letters(out)
    assert len(letters) == INPUTS[job]
    assert {d["reason"] for d in letters} == {"credentials_error"}
    assert all("DWB_UNSET_TOKEN is not set" in str(d["message"]) for d in letters)
