"""Benchmark of ``pipelines.delete`` against ideal raw clients doing the same deletes.

    .venv/bin/python benchmarks/bench_delete.py [--scenario orthanc|operations|all] \\
        [--instances 2000] [--concurrency 8] [--studies 500] [--operation-seconds 2] \\
        [--max-operations 20] [--json out.json]

* ``orthanc``: ``--instances`` instances (one study per 100) are stored in a real Orthanc, then
  deleted one by one, alternately by
  - ``raw``: ``--concurrency`` threads over one pooled session, each instance
    ``POST /tools/lookup`` + ``DELETE /instances/{id}`` (what ``--delete_api orthanc`` sends);
  - ``raw+check``: the same plus the one QIDO search per instance that the job's plan makes;
  - ``job``: the whole ``pipelines.delete`` run in this process (``--uids_file`` of instance
    lines, ``--delete_api orthanc --yes``, the same ``--max_concurrency``): preflight, then one
    pipeline: plan (QIDO per target, plan file), the ``--max_targets`` gate (a count as a side
    input), the deletes, outputs.
  ``job delete phase`` is an estimate, since plan and deletes are one pipeline: the whole job
  minus a ``--plan_only`` run of the same targets made just before (which deletes nothing; both
  pay Beam's start-up once). The plan-only run is made twice and the second is used: Orthanc
  reads each instance's file to answer a search, and a first search of cold files would inflate
  the plan's share.
  Target: job >= 0.9 of raw. Instances/s and ratios are printed; wall clock includes start-up.
* ``operations``: ``--studies`` studies in the Google stand-in (``tests/fakes/
  google_operations.py``), whose delete operations each take ``--operation-seconds``; the job
  deletes them with ``--max_operations``. The ideal is ``ceil(studies / max_operations) *
  operation_seconds`` (operations back to back, at most ``max_operations`` at once, no polling
  delay, no start-up). Target: job <= 1.5x the ideal.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "tests", ROOT / "tests" / "fakes"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import pydicom  # noqa: E402
import requests  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

from pipelines import delete as delete_job  # noqa: E402
from pipelines.local_orthanc import LocalOrthanc  # noqa: E402
from tests.factory import testdata, uid  # noqa: E402

Key = tuple[str, str, str]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_instances(count: int, per_study: int, seed: str) -> list[tuple[Key, bytes]]:
    template = pydicom.dcmread(testdata("CT_small.dcm"))
    out = []
    for i in range(count):
        study = i // per_study
        template.StudyInstanceUID = uid(f"{seed}-study-{study}")
        template.SeriesInstanceUID = uid(f"{seed}-series-{study}")
        template.SOPInstanceUID = uid(f"{seed}-sop-{i}")
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        buf = BytesIO()
        template.save_as(buf, enforce_file_format=True)
        key = (template.StudyInstanceUID, template.SeriesInstanceUID, template.SOPInstanceUID)
        out.append((key, buf.getvalue()))
    return out


def _session(pool: int) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool, max_retries=0)
    session.mount("http://", adapter)
    return session


def store_all(orthanc: LocalOrthanc, instances: list[tuple[Key, bytes]]) -> None:
    orthanc.delete_all()
    session = _session(4)

    def post(data: bytes) -> None:
        session.post(f"{orthanc.rest_url}/instances", data=data, timeout=60).raise_for_status()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(post, [d for _, d in instances]))
    if orthanc.instance_count() != len(instances):
        raise RuntimeError("not every instance was stored")


def raw_delete(orthanc: LocalOrthanc, keys: list[Key], concurrency: int, check: bool) -> float:
    session = _session(concurrency)

    def one(key: Key) -> None:
        study, series, sop = key
        if check:
            url = f"{orthanc.dicomweb_url}/studies/{study}/series/{series}/instances"
            rows = session.get(url, params={"SOPInstanceUID": sop}, timeout=60).json()
            if not rows:
                raise RuntimeError("instance missing before its delete")
        found = session.post(f"{orthanc.rest_url}/tools/lookup", data=sop, timeout=60).json()
        ids = [f["ID"] for f in found if f["Type"] == "Instance"]
        session.delete(f"{orthanc.rest_url}/instances/{ids[0]}", timeout=60).raise_for_status()

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, keys))
    elapsed = time.monotonic() - start
    session.close()
    if orthanc.instance_count() != 0:
        raise RuntimeError("raw client left instances behind")
    return elapsed


def job_delete(
    argv_tail: list[str], keys: list[tuple[str, ...]], workdir: Path, expected_deleted: int
) -> tuple[float, float]:
    """(whole job, its delete phase) seconds; the delete phase is the whole job minus a
    ``--plan_only`` run of the same targets (plan and deletes are one pipeline)."""
    uids_file = workdir / f"targets-{time.monotonic_ns()}.txt"
    uids_file.write_text("".join("/".join(k) + "\n" for k in keys))
    argv = ["--uids_file", str(uids_file), *argv_tail, "--max_targets", str(len(keys))]
    for _ in range(2):  # the second run searches warm files, as the job's own plan then does
        start = time.monotonic()
        planned = delete_job.run([*argv, "--output", str(workdir / f"p-{start}"), "--plan_only"])
        plan_only = time.monotonic() - start
    if planned is None or planned.exit_code != 0 or planned.summary.to_delete != len(keys):
        raise RuntimeError(f"the plan-only run did not plan everything: {planned}")
    start = time.monotonic()
    run = delete_job.run([*argv, "--output", str(workdir / f"out-{start}"), "--yes"])
    elapsed = time.monotonic() - start
    if run is None or run.exit_code != 0 or run.summary.deleted != expected_deleted:
        raise RuntimeError(f"the job did not delete everything: {run and run.summary}")
    log(f"plan only {plan_only:.1f} s, whole job {elapsed:.1f} s")
    return elapsed, elapsed - plan_only


def scenario_orthanc(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    instances = make_instances(args.instances, 100, "bench-del")
    keys = [k for k, _ in instances]
    times: dict[str, float] = {}
    with LocalOrthanc() as orthanc:
        for name in ("raw", "job", "raw+check"):
            store_all(orthanc, instances)
            log(f"orthanc: {name} deleting {len(keys)} instances")
            if name == "job":
                tail = ["--dicomweb_url", orthanc.dicomweb_url, "--delete_api", "orthanc"]
                tail += ["--max_concurrency", str(args.concurrency)]
                times[name], times["job delete phase"] = job_delete(
                    tail, list(keys), workdir, len(keys)
                )
                if orthanc.instance_count() != 0:
                    raise RuntimeError("the job left instances behind")
            else:
                times[name] = raw_delete(orthanc, keys, args.concurrency, name == "raw+check")
    rates = {k: len(keys) / v for k, v in times.items()}
    return {
        "instances": len(keys),
        "concurrency": args.concurrency,
        "seconds": times,
        "instances_per_second": rates,
        "job_vs_raw": rates["job"] / rates["raw"],
        "job_delete_phase_vs_raw": rates["job delete phase"] / rates["raw"],
        "job_vs_raw_check": rates["job"] / rates["raw+check"],
        "target": ">= 0.9 of raw",
    }


def scenario_operations(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from google_operations import GoogleOperationsStandin

    instances = make_instances(args.studies, 1, "bench-ops")
    keys = [(k[0],) for k, _ in instances]
    with GoogleOperationsStandin(done_after_seconds=args.operation_seconds) as standin:
        for _, data in instances:
            standin.preload(data)
        tail = ["--dicomweb_url", standin.dicomweb_url]
        tail += ["--max_operations", str(args.max_operations)]
        log(f"operations: job deleting {len(keys)} studies, {args.max_operations} at once")
        elapsed, delete_phase = job_delete(tail, list(keys), workdir, len(keys))
        if standin.instances:
            raise RuntimeError("the job left studies behind")
        max_running = standin.max_running
    ideal = math.ceil(len(keys) / args.max_operations) * args.operation_seconds
    return {
        "studies": len(keys),
        "operation_seconds": args.operation_seconds,
        "max_operations": args.max_operations,
        "most_operations_at_once": max_running,
        "ideal_seconds": ideal,
        "job_seconds": elapsed,
        "job_delete_phase_seconds": delete_phase,
        "job_vs_ideal": elapsed / ideal,
        "target": "<= 1.5x ideal",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("orthanc", "operations", "all"), default="all")
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--operation-seconds", type=float, default=2.0)
    parser.add_argument("--max-operations", type=int, default=20)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-delete-") as tmp:
        if args.scenario in ("orthanc", "all"):
            results["orthanc"] = scenario_orthanc(args, Path(tmp))
        if args.scenario in ("operations", "all"):
            results["operations"] = scenario_operations(args, Path(tmp))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
