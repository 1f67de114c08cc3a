"""The smallest real inputs of each job, for tests that run every job the same way (runners,
Dataflow builds, no request at launch, credentials on workers): the job's own options only; the
caller adds the store URL, the output and whatever it is testing."""

from __future__ import annotations

from pathlib import Path

import factory
import jpeg_factory as jf

JOBS = ("store", "store_json_jpeg", "search", "retrieve", "delete")

# What each job's inputs below become: one result or dead letter each.
INPUTS = {"store": 2, "store_json_jpeg": 1, "search": 1, "retrieve": 2, "delete": 2}


def job_inputs(job: str, tmp_path: Path) -> list[str]:
    """Options naming ``job``'s inputs, written under ``tmp_path``: 2 CT files (store), 1 JSON +
    JPEG pair (client mode), 1 query, 2 targets (a study and a series) to retrieve or delete."""
    targets = tmp_path / "targets.txt"
    targets.write_text("1.2.3.4\n1.2.3.5/1.2.3.6\n")
    if job == "store":
        factory.write_ct_instances(tmp_path / "in", count=2)
        return ["--input", str(tmp_path / "in")]
    if job == "store_json_jpeg":
        jf.write_good_pairs(tmp_path / "in", 1)
        return ["--input", str(tmp_path / "in" / "*.json"), "--mode", "client"]
    if job == "search":
        return ["--level", "series", "--filter", "Modality=CT"]
    if job in ("retrieve", "delete"):
        return ["--uids_file", str(targets)]
    raise ValueError(f"no inputs for job {job!r}")
