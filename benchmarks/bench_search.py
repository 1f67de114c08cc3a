"""Benchmark of ``pipelines.search`` against ideal raw QIDO clients on the same Orthanc.

    .venv/bin/python benchmarks/bench_search.py [--instances 20000] [--studies 2000] \\
        [--queries 2000] [--repeat 2] [--scenario listing|queries|memory|all] [--json out.json]

The store is filled once with ``--instances`` small instances (no pixel data) spread over
``--studies`` studies, each study with its own AccessionNumber. Then (docs/benchmarks.md says why
each comparison is fair):

* ``listing``: every instance of the store at instance level. Raw: one pooled session paging
  ``/instances`` with the job's default limit (1,000) until an empty page (Orthanc is not known to
  honour the limit), parsing each page. Pipeline: ``pipelines.search.run`` in this process (default
  runner), timed wall-clock around ``run()``: start-up, paging, the spool, writing
  ``results-*.jsonl``. Target: pipeline/raw >= 0.9.
* ``queries``: ``--queries`` single-match queries (one AccessionNumber each, study level). Raw: 8
  threads, one pooled session, each query paged with the same rule (a page, then the empty page).
  Pipeline: the job with ``--queries FILE --max_concurrency 8``. Target: pipeline/raw >= 0.9.
* ``memory``: peak RSS of a child ``python -m pipelines.search`` listing a tenth of the instances,
  then all of them: flat means the difference stays small as the result grows.

Orthanc and temporary files are removed on exit.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pydicom  # noqa: E402
import requests  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage  # noqa: E402

from pipelines.local_orthanc import LocalOrthanc, orthanc_available  # noqa: E402
from pipelines.search import run as run_search_job  # noqa: E402
from tests.factory import uid  # noqa: E402

SCENARIOS = ("listing", "queries", "memory")
RATIO_TARGET = 0.9
INSTANCE_PAGE = 1000  # the job's default limit at instance level
STUDY_PAGE = 100  # ... and at study level
RAW_THREADS = 8

# Runs argv[2:] and writes its peak RSS (KiB) and exit code to argv[1]; a small parent, so the
# child's ru_maxrss does not count this benchmark's own memory.
RSS_WRAPPER_CODE = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
open(sys.argv[1], "w").write(f"{usage.ru_maxrss} {code}")
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def accession(study: int) -> str:
    return f"BENCH{study:06d}"


def instance_bytes(study: int, index: int) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid(f"bench-search-sop-{study}-{index}")
    ds.StudyInstanceUID = uid(f"bench-search-study-{study}")
    ds.SeriesInstanceUID = uid(f"bench-search-series-{study}")
    ds.PatientName = f"BENCH^PATIENT{study % 97}"
    ds.PatientID = f"P{study % 10}"
    ds.AccessionNumber = accession(study)
    ds.StudyDate = "20240101"
    ds.Modality = "OT"
    ds.InstanceNumber = index + 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def fill(orthanc: LocalOrthanc, instances: int, studies: int) -> None:
    """Store the corpus with STOW (one request per study), 4 requests in flight."""
    per_study = max(1, instances // studies)
    boundary = "benchsearchboundary"

    def post(study: int) -> None:
        parts = b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + instance_bytes(study, i)
            + b"\r\n"
            for i in range(per_study)
        )
        body = parts + f"--{boundary}--\r\n".encode()
        ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
        r = session.post(
            f"{orthanc.dicomweb_url}/studies", data=body, headers={"Content-Type": ctype}
        )
        r.raise_for_status()

    session = pooled_session(4)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(post, range(studies)))
    log(f"stored {per_study * studies:,} instances in {time.perf_counter() - start:.0f} s")


def pooled_session(size: int) -> requests.Session:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=size, max_retries=0)
    session.mount("http://", adapter)
    return session


def raw_pages(session: requests.Session, url: str, params: str, limit: int) -> int:
    """The ideal paging client: limit/offset until an empty page; returns the rows seen."""
    rows, offset = 0, 0
    while True:
        r = session.get(
            f"{url}?{params}&limit={limit}&offset={offset}",
            headers={"Accept": "application/dicom+json"},
        )
        r.raise_for_status()
        page = r.json() if r.status_code == 200 and r.content.strip() else []
        if not page:
            return rows
        rows += len(page)
        offset += len(page)


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def count_lines(prefix: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in prefix.glob("results-*.jsonl"))


@dataclass
class Comparison:
    what: str
    items: int
    raw_seconds: list[float]
    pipeline_seconds: list[float]

    @property
    def raw_rate(self) -> float:
        return self.items / statistics.median(self.raw_seconds)

    @property
    def pipeline_rate(self) -> float:
        return self.items / statistics.median(self.pipeline_seconds)

    @property
    def ratio(self) -> float:
        return self.pipeline_rate / self.raw_rate

    def as_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "items": self.items,
            "raw_seconds": self.raw_seconds,
            "pipeline_seconds": self.pipeline_seconds,
            "raw_rate": self.raw_rate,
            "pipeline_rate": self.pipeline_rate,
            "ratio": self.ratio,
        }


def scenario_listing(orthanc: LocalOrthanc, n: int, repeat: int, work: Path) -> Comparison:
    session = pooled_session(1)
    raw: list[float] = []
    job: list[float] = []
    for r in range(repeat):
        seconds, rows = timed(
            lambda: raw_pages(session, f"{orthanc.dicomweb_url}/instances", "", INSTANCE_PAGE)
        )
        assert rows == n, f"raw client saw {rows} rows, expected {n}"
        raw.append(seconds)
        out = work / f"listing-{r}"
        argv = ["--dicomweb_url", orthanc.dicomweb_url, "--output", str(out)]
        seconds, _ = timed(lambda a=argv: _job(a + ["--level", "instances"]))  # type: ignore[misc]
        assert count_lines(out) == n, "the job did not write every match"
        job.append(seconds)
        log(f"listing round {r + 1}: raw {raw[-1]:.2f} s, pipeline {job[-1]:.2f} s")
    return Comparison("listing instances", n, raw, job)


def _job(argv: list[str]) -> int:
    result = run_search_job(argv)
    assert result is not None and result.exit_code == 0, "the job reported failures"
    return result.summary.matches


def scenario_queries(
    orthanc: LocalOrthanc, queries: int, studies: int, repeat: int, work: Path
) -> Comparison:
    chosen = [accession(i * studies // queries) for i in range(queries)]
    path = work / "accessions.csv"
    path.write_text("AccessionNumber\n" + "\n".join(chosen) + "\n")
    session = pooled_session(RAW_THREADS)
    url = f"{orthanc.dicomweb_url}/studies"

    def raw_all() -> int:
        with concurrent.futures.ThreadPoolExecutor(RAW_THREADS) as pool:
            found = list(
                pool.map(lambda a: raw_pages(session, url, f"00080050={a}", STUDY_PAGE), chosen)
            )
        assert all(n == 1 for n in found), "every query must match one study"
        return sum(found)

    raw: list[float] = []
    job: list[float] = []
    for r in range(repeat):
        raw.append(timed(raw_all)[0])
        out = work / f"queries-{r}"
        argv = ["--dicomweb_url", orthanc.dicomweb_url, "--output", str(out)]
        argv += ["--queries", str(path), "--max_concurrency", str(RAW_THREADS)]
        seconds, matches = timed(lambda a=argv: _job(a))  # type: ignore[misc]
        assert matches == queries and count_lines(out) == queries
        job.append(seconds)
        log(f"queries round {r + 1}: raw {raw[-1]:.2f} s, pipeline {job[-1]:.2f} s")
    return Comparison(f"{queries:,} single-match queries", queries, raw, job)


def peak_rss_mib(argv: list[str], work: Path, name: str) -> float:
    result = work / f"{name}.rss"
    cmd = [sys.executable, "-m", "pipelines.search", *argv]
    wrapped = [sys.executable, "-S", "-c", RSS_WRAPPER_CODE, str(result), *cmd]
    with open(work / f"{name}.log", "wb") as out:
        subprocess.run(wrapped, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=True)
    maxrss_kib, code = (int(v) for v in result.read_text().split())
    if code != 0:
        raise RuntimeError(f"{name} exited with {code}; see {work / (name + '.log')}")
    return maxrss_kib / 1024


def scenario_memory(orthanc: LocalOrthanc, n: int, work: Path) -> dict[str, float]:
    base = ["--dicomweb_url", orthanc.dicomweb_url, "--level", "instances"]
    small = peak_rss_mib(
        [*base, "--filter", "PatientID=P0", "--output", str(work / "m1")], work, "tenth"
    )
    full = peak_rss_mib([*base, "--output", str(work / "m2")], work, "all")
    return {"tenth_mib": small, "all_mib": full, "delta_mib": full - small, "instances": n}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so Orthanc and the temp dir are cleaned up on SIGTERM too


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=20000)
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not orthanc_available():
        print("Orthanc is missing (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    n = (args.instances // args.studies) * args.studies
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "instances": n,
        "studies": args.studies,
    }
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp, LocalOrthanc() as orthanc:
        work = Path(tmp)
        fill(orthanc, n, args.studies)
        rows = []
        if "listing" in scenarios:
            c = scenario_listing(orthanc, n, args.repeat, work)
            report["listing"] = c.as_json()
            rows.append(c)
        if "queries" in scenarios:
            c = scenario_queries(orthanc, args.queries, args.studies, args.repeat, work)
            report["queries"] = c.as_json()
            rows.append(c)
        if "memory" in scenarios:
            report["memory"] = scenario_memory(orthanc, n, work)
    print(f"{'what':<30}{'raw/s':>12}{'pipeline/s':>12}{'ratio':>8}  target")
    for c in rows:
        verdict = "met" if c.ratio >= RATIO_TARGET else "NOT met"
        print(
            f"{c.what:<30}{c.raw_rate:>12,.0f}{c.pipeline_rate:>12,.0f}{c.ratio:>8.2f}"
            f"  >= {RATIO_TARGET} {verdict}"
        )
    if "memory" in report:
        m = report["memory"]
        print(
            f"peak RSS: {m['tenth_mib']:.0f} MiB listing {n // 10:,}, {m['all_mib']:.0f} MiB "
            f"listing {n:,} (+{m['delta_mib']:.0f} MiB)"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
