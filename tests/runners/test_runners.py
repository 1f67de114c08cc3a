"""The same job gives the same outcome on the in-process default runner, the DirectRunner in
multi_processing mode (2 worker processes: DoFns pickled, setup() per process, metrics sent
back), and the PortableRunner with Beam's embedded job service and the LOOPBACK environment:
the same records, the same summary counts, the same exit code. Against the real Orthanc."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import factory
import jpeg_factory as jf
import pydicom
import requests

from pipelines import delete, retrieve, search, store, store_json_jpeg
from pipelines.local_orthanc import LocalOrthanc

RUNNERS = {
    "default": [],
    "multi_processing": [
        "--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
        "--direct_num_workers", "2",
    ],
    "portable": ["--runner", "PortableRunner", "--job_endpoint", "embed",
                 "--environment_type", "LOOPBACK"],
}  # fmt: skip


def _rows(prefix: Path, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(prefix.glob(f"{name}-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line]
    return rows


def _counts(summary: Any) -> dict[str, Any]:
    """The summary's outcome counts, without its timings and request count.

    The number of HTTP requests depends on how the work spreads over worker processes: what a
    process learns is per process (the retrieve client's switch to multipart after Orthanc
    refuses single-part, for one), so two workers may each pay one request to learn it.
    """
    return {
        k: v
        for k, v in dataclasses.asdict(summary).items()
        if not k.endswith("seconds") and k not in ("elapsed_seconds", "requests")
    }


def test_store_gives_the_same_outcome_on_every_runner(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    good = factory.write_ct_instances(tmp_path / "in", count=4, studies=2)
    bad = factory.write_bad_inputs(tmp_path / "in")
    outcomes = {}
    for name, extra in RUNNERS.items():
        orthanc.delete_all()
        out = tmp_path / name
        argv = ["--input", str(tmp_path / "in"), "--dicomweb_url", orthanc.dicomweb_url,
                "--output", str(out), "--batch_size", "2", *extra]  # fmt: skip
        run = store.run(argv)
        assert run is not None
        assert orthanc.instance_count() == len(good)
        outcomes[name] = (
            run.exit_code,
            _counts(run.summary),
            sorted((r["source"], r["status"], r["sop_uid"]) for r in _rows(out, "stored")),
            sorted((d["source"], d["reason"]) for d in _rows(out, "dead_letter")),
        )
    expected = outcomes["default"]
    assert expected[0] == store.EXIT_DEAD_LETTERS
    assert expected[1]["stored"] == len(good) and expected[1]["failed_by_reason"]
    assert [r[0] for r in expected[2]] == sorted(str(p) for p in good)
    assert expected[3] == sorted((str(b.path), b.reason) for b in bad)
    for name, outcome in outcomes.items():
        assert outcome == expected, name


def test_search_gives_the_same_outcome_on_every_runner(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    factory.write_ct_instances(tmp_path / "in", count=5, studies=2)
    argv = ["--input", str(tmp_path / "in"), "--dicomweb_url", orthanc.dicomweb_url]
    assert store.main([*argv, "--output", str(tmp_path / "stored")]) == 0
    queries = tmp_path / "queries.csv"
    queries.write_text("Modality\nCT\nMR\n")
    outcomes = {}
    for name, extra in RUNNERS.items():
        out = tmp_path / name
        run = search.run(
            ["--dicomweb_url", orthanc.dicomweb_url, "--level", "instances",
             "--queries", str(queries), "--page_size", "2", "--output", str(out), *extra]
        )  # fmt: skip
        assert run is not None
        outcomes[name] = (
            run.exit_code,
            _counts(run.summary),
            sorted(json.dumps(r, sort_keys=True) for r in _rows(out, "results")),
            _rows(out, "dead_letter"),
        )
    expected = outcomes["default"]
    assert expected[0] == 0 and expected[1]["answered"] == 2
    assert len(expected[2]) == 5 and expected[3] == []
    for name, outcome in outcomes.items():
        assert outcome == expected, name


def _upload(orthanc: LocalOrthanc, paths: list[Path]) -> None:
    for path in paths:
        resp = requests.post(f"{orthanc.rest_url}/instances", data=path.read_bytes(), timeout=30)
        resp.raise_for_status()


def test_retrieve_delete_and_json_jpeg_give_the_same_outcome_on_every_runner(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    paths = factory.write_ct_instances(tmp_path / "in", count=3, studies=1)
    study = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    targets = tmp_path / "targets.txt"
    targets.write_text(f"{study}\n1.2.3.404\n")  # the second is in no store: a dead letter
    jf.write_good_pairs(tmp_path / "jpeg", 2)
    url = orthanc.dicomweb_url
    outcomes = {}
    for name, extra in RUNNERS.items():
        orthanc.delete_all()
        _upload(orthanc, paths)
        got = tmp_path / f"{name}-got"
        fetched = retrieve.run(["--dicomweb_url", url, "--uids_file", str(targets),
                                "--output", str(got), *extra])  # fmt: skip
        assert fetched is not None
        gone = tmp_path / f"{name}-deleted"
        argv = ["--dicomweb_url", url, "--uids_file", str(targets), "--yes",
                "--delete_api", "orthanc", "--output", str(gone), *extra]  # fmt: skip
        deleted = delete.run(argv)
        assert deleted is not None and orthanc.instance_count() == 0
        jpeg_out = tmp_path / f"{name}-jpeg"
        argv = ["--dicomweb_url", url, "--input", str(tmp_path / "jpeg"),
                "--mode", "client", "--output", str(jpeg_out), *extra]  # fmt: skip
        jpeg = store_json_jpeg.run(argv)
        assert jpeg is not None and orthanc.instance_count() == 2
        outcomes[name] = (
            (fetched.exit_code, _counts(fetched.summary)),
            sorted(factory.sha256(p) for p in got.rglob("*.dcm")),
            sorted((d["reason"], d["stage"]) for d in _rows(got, "dead_letter")),
            (deleted.exit_code, _counts(deleted.summary)),
            sorted(
                json.dumps({k: v for k, v in r.items() if k != "duration_seconds"}, sort_keys=True)
                for r in _rows(gone, "deleted")
            ),
            jpeg.exit_code,
            sorted((r["source"], r["status"]) for r in _rows(jpeg_out, "stored")),
        )
    expected = outcomes["default"]
    assert expected[0][0] == 3 and expected[0][1]["retrieved"] == 3
    assert expected[1] == sorted(factory.sha256(p) for p in paths)
    assert expected[3][1]["deleted"] == 1 and expected[5] == 0 and len(expected[6]) == 2
    for name, outcome in outcomes.items():
        assert outcome == expected, name


def test_the_delete_gate_refuses_and_allows_alike_on_every_runner(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    """--max_targets is checked inside the one delete pipeline (a count as a side input): past it
    every runner deletes nothing and dead-letters each target once; at it every runner deletes."""
    paths = factory.write_ct_instances(tmp_path / "in", count=2, studies=2)
    studies = sorted({str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID)
                      for p in paths})  # fmt: skip
    targets = tmp_path / "targets.txt"
    targets.write_text("".join(f"{s}\n" for s in studies) + "1.2.3.404\n")
    outcomes = {}
    for name, extra in RUNNERS.items():
        orthanc.delete_all()
        _upload(orthanc, paths)
        runs = []
        for limit in ("1", "2"):
            out = tmp_path / f"{name}-{limit}"
            argv = ["--dicomweb_url", orthanc.dicomweb_url, "--uids_file", str(targets),
                    "--yes", "--delete_api", "orthanc", "--max_targets", limit,
                    "--output", str(out), *extra]  # fmt: skip
            run = delete.run(argv)
            assert run is not None
            runs.append((
                run.exit_code, _counts(run.summary), orthanc.instance_count(),
                sorted((d["study_uid"], d["reason"]) for d in _rows(out, "dead_letter")),
                sorted((d["study_uid"], d["status"]) for d in _rows(out, "deleted")),
            ))  # fmt: skip
        outcomes[name] = runs
    refused, allowed = outcomes["default"]
    assert refused[0] == delete.EXIT_USAGE and refused[2] == 2
    assert refused[3] == [(s, "over_max_targets") for s in studies]
    assert refused[4] == [("1.2.3.404", "already_absent")]
    assert allowed[0] == delete.EXIT_OK and allowed[2] == 0 and allowed[1]["deleted"] == 2
    for name, outcome in outcomes.items():
        assert outcome == outcomes["default"], name
