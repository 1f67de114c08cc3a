"""Benchmark of ``pipelines.store`` against an ideal raw HTTP client doing the same work.

    .venv/bin/python benchmarks/bench_store.py [--instances 2000] [--studies 20] \\
        [--concurrency 4] [--batch-size 50] [--repeat 3] \\
        [--scenario orthanc|sink|memory|startup|orthanc-process|orthanc-large|sink-upload|all] \\
        [--large-instances 200] [--job-args '--max_concurrency 4'] [--json out.json]

Scenarios (docs/benchmarks.md says why each is fair):

* ``orthanc``: a real Orthanc + DICOMweb plugin. The raw client (files pre-read into memory,
  ``concurrency`` threads, one pooled ``requests.Session``, multipart batches of one study)
  and the whole pipeline job (``pipelines.store.run`` in this process, default runner) store the
  same instances into an emptied store, alternately for ``--repeat`` rounds; the medians of
  instances/s and their ratio are reported. Target: pipeline/raw >= 0.9.
* ``sink``: the same against ``benchmarks/stow_sink.py`` (a separate process that answers at
  once), so what is left is the clients' own cost. Target: the pipeline >= 1000 instances/s.
* ``memory``: peak RSS of a child ``python -m pipelines.store`` storing one 1 GiB instance into
  the sink, minus the same job storing one small instance. Target: < 150 MiB.
* ``startup``: what a user waits for a one-file job: ``python -m pipelines.store`` as a process
  (start-up, the run and the exit included) into the sink, against ``python -c "import
  apache_beam"``, alternately for ``--repeat`` rounds (at least 5); medians of wall clock and of
  CPU time (user + system, steadier on a shared machine). Target: job/import <= 1.5.

Issue 9's targets, where every side is a child process (start-up and exit in its wall clock;
CPU is user + system of the child and what it started; "own rate" is what the side reports for
its working phase: the job's summary "instances/s once running", the raw client's first POST to
last answer, UploadToDicomStore's ``run()`` to the end). The job runs with its default options
(plus ``--job-args``); sides alternate for ``--repeat`` rounds; medians.

* ``orthanc-process``: the job against ``benchmarks/raw_stow.py`` (one POST per instance,
  8 threads, one pooled session) into the same Orthanc, emptied before every run and checked to
  hold the N instances after it. Targets: wall raw/job >= 1.0, own rate job/raw >= 1.15.
* ``orthanc-large``: the same with ``--large-instances`` CT of 512x512 (16-bit, 512 KiB of
  pixels). Target: own rate job/raw >= 0.95.
* ``sink-upload``: the job against ``benchmarks/beam_upload.py`` (Beam's own
  ``UploadToDicomStore``, its client's base URL pointed at the sink) into the sink; the sink's
  counters must grow by N for each. Targets: wall upload/job >= 3, job's own rate >= 1,000/s.

Temporary files, Orthanc and the sink are removed on exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import logging
import os
import platform
import re
import resource
import select
import shlex
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import apache_beam  # noqa: E402
import pydicom  # noqa: E402
import pydicom.data  # noqa: E402
import pydicom.uid  # noqa: E402
import requests  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

import pipelines  # noqa: E402
from pipelines.local_orthanc import ORTHANC_BINARY, LocalOrthanc, orthanc_available  # noqa: E402
from pipelines.store import run as run_store  # noqa: E402
from tests.factory import write_ct_instances  # noqa: E402
from transforms.dicom.peek import peek_dicom  # noqa: E402

# The last three are issue 9's targets: every side is a child process (start-up included).
SCENARIOS = (
    "orthanc", "sink", "memory", "startup", "orthanc-process", "orthanc-large", "sink-upload"
)  # fmt: skip
# What the job uses when no --runner is given (see pipelines.store.run).
RUNNER = "FnApiRunner"
ORTHANC_RATIO_TARGET = 0.9
SINK_RATE_TARGET = 1000.0
MEMORY_DELTA_TARGET_MIB = 150.0
# 16384 x 32768 pixels of 16 bits: exactly 1 GiB of pixel data.
BIG_ROWS, BIG_COLUMNS = 16384, 32768
WRITE_CHUNK = 8 * 1024 * 1024
CHILD_TIMEOUT = 600.0
_REFERENCED_SOP_SEQUENCE, _REFERENCED_SOP_INSTANCE_UID = "00081199", "00081155"

# The raw client of the memory scenario: requests streaming an open file, nothing else loaded.
RAW_UPLOAD_CODE = """
import sys
import requests
path, url = sys.argv[1], sys.argv[2]
with open(path, "rb") as body:
    r = requests.post(url, data=body, timeout=600, headers={
        "Content-Type": "application/dicom", "Accept": "application/dicom+json"})
stored = r.json().get("00081199", {}).get("Value", []) if r.status_code == 200 else []
sys.exit(0 if len(stored) == 1 else 1)
"""


class BenchError(RuntimeError):
    """A run did not do the work it was timed for: its numbers would mean nothing."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    path: Path
    study: str
    sop: str
    data: bytes


@dataclass(frozen=True)
class Corpus:
    directory: Path
    instances: tuple[Instance, ...]

    @property
    def glob(self) -> str:
        return f"{self.directory}/*.dcm"

    @property
    def nbytes(self) -> int:
        return sum(len(i.data) for i in self.instances)

    def batches(self, batch_size: int) -> list[tuple[str, list[Instance]]]:
        """Batches of at most ``batch_size`` instances of one study, study after study."""
        by_study: dict[str, list[Instance]] = {}
        for instance in self.instances:
            by_study.setdefault(instance.study, []).append(instance)
        return [
            (study, items[i : i + batch_size])
            for study, items in by_study.items()
            for i in range(0, len(items), batch_size)
        ]


def make_corpus(directory: Path, *, count: int, studies: int) -> Corpus:
    seed = f"bench-{uuid.uuid4().hex[:12]}"  # fresh UIDs on every invocation
    paths = write_ct_instances(directory, count=count, studies=studies, seed=seed)
    instances = []
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        data = path.read_bytes()
        instances.append(Instance(path, str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), data))
    return Corpus(directory, tuple(instances))


def write_big_instance(path: Path, rows: int = BIG_ROWS, columns: int = BIG_COLUMNS) -> int:
    """A valid Part 10 secondary-capture instance with rows*columns 16-bit pixels of zeros.

    The header is written by pydicom; the PixelData element header (7FE0,0010) OW with its
    explicit length is appended by hand and the zeros are streamed in 8 MiB chunks, so the
    file is never held in memory. Returns the file size.
    """
    pixel_bytes = rows * columns * 2
    if pixel_bytes >= 0xFFFFFFFF:
        raise ValueError("pixel data too large for an explicit 32-bit length")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.PatientName = "BENCH^BIG"
    ds.PatientID = "bench-big"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    with open(path, "wb") as out:
        ds.save_as(out, enforce_file_format=True)
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes))
        zeros = bytes(WRITE_CHUNK)
        left = pixel_bytes
        while left > 0:
            out.write(zeros[: min(left, WRITE_CHUNK)])
            left -= WRITE_CHUNK
    size = path.stat().st_size
    header = pydicom.dcmread(path, stop_before_pixels=True)
    if (header.Rows, header.Columns) != (
        rows,
        columns,
    ) or header.SOPInstanceUID != ds.SOPInstanceUID:
        raise BenchError("pydicom does not read back the big instance's header")
    with open(path, "rb") as stream:
        peeked = peek_dicom(stream, path=str(path), size=size)
    if peeked.uids.sop != ds.SOPInstanceUID:
        raise BenchError("transforms.dicom.peek.peek_dicom does not accept the big instance")
    return size


# --- measurements -------------------------------------------------------------------------


@dataclass
class Measure:
    """One timed store of ``instances`` instances."""

    instances: int
    seconds: float
    requests: int = 0
    job_seconds: float | None = None  # the pipeline's own clock: pipeline.run() to finish

    @property
    def rate(self) -> float:
        return self.instances / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Comparison:
    raw: list[Measure] = field(default_factory=list)
    pipeline: list[Measure] = field(default_factory=list)
    extra: dict[str, list[Measure]] = field(default_factory=dict)

    @property
    def raw_rate(self) -> float:
        return statistics.median(m.rate for m in self.raw)

    @property
    def pipeline_rate(self) -> float:
        return statistics.median(m.rate for m in self.pipeline)

    @property
    def ratio(self) -> float:
        return self.pipeline_rate / self.raw_rate

    def as_json(self) -> dict[str, Any]:
        return {
            "raw": [asdict(m) | {"rate": m.rate} for m in self.raw],
            "pipeline": [asdict(m) | {"rate": m.rate} for m in self.pipeline],
            "extra": {
                name: [asdict(m) | {"rate": m.rate} for m in ms] for name, ms in self.extra.items()
            },
            "raw_median_rate": self.raw_rate,
            "pipeline_median_rate": self.pipeline_rate,
            "ratio": self.ratio,
        }


@dataclass
class Row:
    scenario: str
    measurement: str
    result: str
    target: str = ""
    met: bool | None = None


def pooled_session(concurrency: int) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=concurrency, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def multipart_body(items: Sequence[Instance], boundary: str) -> bytes:
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
    parts = [b"".join((head, i.data, b"\r\n")) for i in items]
    return b"".join(parts) + f"--{boundary}--\r\n".encode("ascii")


def raw_store(corpus: Corpus, dicomweb_url: str, *, concurrency: int, batch_size: int) -> Measure:
    """The ideal client: bytes in memory, one multipart POST per batch, answers checked."""
    batches = corpus.batches(batch_size)
    session = pooled_session(concurrency)

    def post(batch: tuple[str, list[Instance]]) -> int:
        study, items = batch
        boundary = uuid.uuid4().hex
        resp = session.post(
            f"{dicomweb_url}/studies/{study}",
            data=multipart_body(items, boundary),
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
            timeout=600,
        )
        if resp.status_code != 200:
            raise BenchError(f"raw client: HTTP {resp.status_code} for study {study}")
        listed = resp.json().get(_REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
        stored = {item[_REFERENCED_SOP_INSTANCE_UID]["Value"][0] for item in listed}
        missing = {i.sop for i in items} - stored
        if missing:
            raise BenchError(f"raw client: {len(missing)} instances not listed as stored")
        return len(items)

    with session, concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        stored = sum(pool.map(post, batches))
        seconds = time.perf_counter() - start
    if stored != len(corpus.instances):
        raise BenchError(f"raw client stored {stored} of {len(corpus.instances)}")
    return Measure(stored, seconds, requests=len(batches))


def pipeline_store(
    inputs: str,
    dicomweb_url: str,
    output: Path,
    *,
    expected: int,
    concurrency: int,
    batch_size: int,
    extra: Sequence[str] = (),
) -> Measure:
    """The whole job in this process, timed around ``pipelines.store.run``."""
    argv = [
        "--input",
        inputs,
        "--dicomweb_url",
        dicomweb_url,
        "--output",
        str(output),
        "--batch_size",
        str(batch_size),
        "--max_concurrency",
        str(concurrency),
        "--runner",
        RUNNER,
        *extra,
    ]
    start = time.perf_counter()
    store_run = run_store(argv)
    seconds = time.perf_counter() - start
    summary = store_run.summary
    if summary.stored != expected or summary.failed != 0:
        raise BenchError(
            f"pipeline stored {summary.stored} of {expected}, failed {summary.failed} "
            f"({summary.failed_by_reason})"
        )
    lines = sum(
        len(p.read_text().splitlines()) for p in output.glob("stored-*.jsonl") if p.is_file()
    )
    if lines != expected:
        raise BenchError(f"pipeline wrote {lines} stored lines, expected {expected}")
    return Measure(
        expected, seconds, requests=summary.requests, job_seconds=summary.elapsed_seconds
    )


def alternate(
    rounds: int,
    raw: Callable[[int], Measure],
    pipeline: Callable[[int], Measure],
    label: str,
    extra: dict[str, Callable[[int], Measure]] | None = None,
) -> Comparison:
    """``rounds`` rounds of each run; the order rotates every round so none always goes first.

    ``extra`` runs (pipeline variants) are measured in the same rounds, into ``Comparison.extra``.
    """
    comparison = Comparison()
    runs = [("raw", raw), ("pipeline", pipeline), *(extra or {}).items()]
    for r in range(rounds):
        k = r % len(runs)
        for name, fn in runs[k:] + runs[:k]:
            m = fn(r)
            if name in ("raw", "pipeline"):
                getattr(comparison, name).append(m)
            else:
                comparison.extra.setdefault(name, []).append(m)
            log(f"{label} round {r + 1}/{rounds}: {name:18s} {m.seconds:7.2f} s {m.rate:8.1f}/s")
    return comparison


# --- external processes -------------------------------------------------------------------

_children: set[subprocess.Popen[str]] = set()  # sinks
_groups: set[subprocess.Popen[bytes]] = set()  # measured children, each in its own session


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _children.discard(proc)


class SinkProcess:
    """``benchmarks/stow_sink.py`` in its own process (so it does not share our GIL)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    @property
    def dicomweb_url(self) -> str:
        return f"{self.base_url}/dicom-web"

    def __enter__(self) -> SinkProcess:
        proc = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "stow_sink.py"), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._proc = proc
        _children.add(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline().strip() if ready else ""
        if not line.startswith("LISTENING "):
            _stop(proc)
            raise BenchError(f"the sink did not start (said {line!r})")
        self.base_url = line.split(" ", 1)[1]
        return self

    def peak_rss_mib(self) -> float | None:
        """The sink's own peak RSS (VmHWM), to show it streams big bodies."""
        if self._proc is None:
            return None
        return _vm_hwm_mib(self._proc.pid)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None


def _vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class ChildRun:
    seconds: float
    peak_rss_mib: float


# Runs argv[2:] and writes its peak RSS (KiB) and exit code to argv[1]. A fresh, small
# process: ru_maxrss of a child also counts the memory of the process it was forked from
# before its exec, so the benchmark (which holds Beam and the corpus) must not be its parent.
RSS_WRAPPER_CODE = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {code}")
sys.exit(0 if code == 0 else 1)
"""


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child started in its own session, and whatever it started."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def child_env() -> dict[str, str]:
    """The environment this benchmark was started with, for every measured child.

    Importing ``pipelines`` asks OpenBLAS for one thread in this process (see
    ``pipelines/__init__.py``); a baseline child (``import apache_beam``, Beam's
    ``UploadToDicomStore``, a raw client) must not inherit that, and our jobs set it themselves.
    """
    env = dict(os.environ)
    if pipelines.BLAS_THREADS_SET_HERE:
        env.pop("OPENBLAS_NUM_THREADS", None)
    return env


def run_child(cmd: Sequence[str], log_path: Path, *, what: str) -> ChildRun:
    """Run ``cmd`` to completion under the RSS wrapper; its output goes to ``log_path``."""
    result_path = log_path.with_suffix(".rss")
    wrapped = [sys.executable, "-S", "-c", RSS_WRAPPER_CODE, str(result_path), *cmd]
    with open(log_path, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            wrapped,
            cwd=ROOT,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _groups.add(proc)
    try:
        proc.wait(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish within {CHILD_TIMEOUT:.0f} s") from None
    finally:
        _stop_group(proc)
        _groups.discard(proc)
    seconds = time.perf_counter() - start
    try:
        maxrss_kib, code = (int(v) for v in result_path.read_text().split())
    except (OSError, ValueError):
        maxrss_kib, code = 0, proc.returncode
    if code != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise BenchError(f"{what} exited with {code}:\n{tail}")
    return ChildRun(seconds, maxrss_kib / 1024)  # Linux: ru_maxrss is in KiB


# --- scenarios ----------------------------------------------------------------------------


@dataclass
class Options:
    instances: int
    studies: int
    concurrency: int
    batch_size: int
    repeat: int
    scenarios: tuple[str, ...]
    json_path: Path | None
    large_instances: int = 200
    job_args: tuple[str, ...] = ()


def _rate(m: float) -> str:
    return f"{m:,.0f} inst/s"


def comparison_rows(scenario: str, c: Comparison, n: int) -> list[Row]:
    med_raw = statistics.median(m.seconds for m in c.raw)
    med_pipe = statistics.median(m.seconds for m in c.pipeline)
    rounds = len(c.raw)
    return [
        Row(scenario, f"raw client, median of {rounds}", f"{_rate(c.raw_rate)} ({med_raw:.2f} s)"),
        Row(
            scenario,
            f"pipeline job, median of {rounds}",
            f"{_rate(c.pipeline_rate)} ({med_pipe:.2f} s for {n})",
        ),
    ]


def scenario_orthanc(opts: Options, corpus: Corpus, work: Path) -> tuple[list[Row], dict[str, Any]]:
    if not orthanc_available():
        log("orthanc: skipped (Orthanc or its DICOMweb plugin is not installed)")
        return [Row("orthanc", "skipped", "Orthanc is not installed")], {"skipped": True}
    n = len(corpus.instances)
    with LocalOrthanc(workdir=None) as orthanc:
        url = orthanc.dicomweb_url
        log(f"orthanc: {url}")

        def empty() -> None:
            orthanc.delete_all()
            if orthanc.instance_count() != 0:
                raise BenchError("Orthanc is not empty after delete_all")

        def check_full(who: str) -> None:
            count = orthanc.instance_count()
            if count != n:
                raise BenchError(f"{who}: Orthanc holds {count} instances, expected {n}")

        def raw(r: int) -> Measure:
            empty()
            m = raw_store(corpus, url, concurrency=opts.concurrency, batch_size=opts.batch_size)
            check_full("raw client")
            return m

        def pipeline(r: int, extra: Sequence[str] = (), tag: str = "") -> Measure:
            empty()
            m = pipeline_store(
                corpus.glob,
                url,
                work / f"out-orthanc{tag}-{r}",
                expected=n,
                concurrency=opts.concurrency,
                batch_size=opts.batch_size,
                extra=extra,
            )
            check_full("pipeline")
            return m

        def pipeline_no_check(r: int) -> Measure:
            return pipeline(r, ["--no_check_existing"], "-nocheck")

        comparison = alternate(
            opts.repeat, raw, pipeline, "orthanc", {"no_check_existing": pipeline_no_check}
        )
        no_check = comparison.extra["no_check_existing"]
        empty()
    met = comparison.ratio >= ORTHANC_RATIO_TARGET
    rows = comparison_rows("orthanc", comparison, n)
    rows += [
        Row(
            "orthanc",
            "ratio pipeline/raw",
            f"{comparison.ratio:.2f}",
            f">= {ORTHANC_RATIO_TARGET}",
            met,
        ),
        Row(
            "orthanc",
            f"  pipeline job, --no_check_existing, median of {len(no_check)}",
            f"{_rate(statistics.median(m.rate for m in no_check))} "
            f"({statistics.median(m.seconds for m in no_check):.2f} s)",
        ),
    ]
    return rows, comparison.as_json()


def time_peeks(corpus: Corpus) -> float:
    """Seconds to validate every header with peek_dicom, serially (what PeekHeaders does)."""
    start = time.perf_counter()
    for instance in corpus.instances:
        with open(instance.path, "rb") as stream:
            peek_dicom(stream, path=str(instance.path), size=len(instance.data))
    return time.perf_counter() - start


def scenario_sink(opts: Options, corpus: Corpus, work: Path) -> tuple[list[Row], dict[str, Any]]:
    n = len(corpus.instances)
    with SinkProcess() as sink:
        url = sink.dicomweb_url
        log(f"sink: {url}")

        def raw(r: int) -> Measure:
            return raw_store(corpus, url, concurrency=opts.concurrency, batch_size=opts.batch_size)

        def pipeline(r: int) -> Measure:
            return pipeline_store(
                corpus.glob,
                url,
                work / f"out-sink-{r}",
                expected=n,
                concurrency=opts.concurrency,
                batch_size=opts.batch_size,
            )

        comparison = alternate(opts.repeat, raw, pipeline, "sink")
        one = pipeline_store(
            str(corpus.instances[0].path),
            url,
            work / "out-sink-one",
            expected=1,
            concurrency=opts.concurrency,
            batch_size=opts.batch_size,
        )
        log(f"sink: pipeline job with 1 instance {one.seconds:.2f} s")
    peek_seconds = time_peeks(corpus)
    log(f"sink: peek_dicom of {n} files, serially: {peek_seconds:.2f} s")
    pipe_seconds = statistics.median(m.seconds for m in comparison.pipeline)
    met = comparison.pipeline_rate >= SINK_RATE_TARGET
    rows = comparison_rows("sink", comparison, n)
    rows[1].target = f">= {SINK_RATE_TARGET:,.0f} inst/s"
    rows[1].met = met
    rows += [
        Row("sink", "ratio pipeline/raw", f"{comparison.ratio:.2f}"),
        Row("sink", "  split: job with 1 instance (fixed cost)", f"{one.seconds:.2f} s"),
        Row(
            "sink",
            "  split: peek_dicom of every file, serial",
            f"{peek_seconds:.2f} s ({peek_seconds / n * 1e3:.2f} ms/inst)",
        ),
        Row(
            "sink",
            "  split: rest (group, batch, POST, write)",
            f"{max(0.0, pipe_seconds - one.seconds - peek_seconds):.2f} s",
        ),
    ]
    extra = {"one_instance_job": asdict(one), "peek_seconds": peek_seconds}
    return rows, comparison.as_json() | extra


def scenario_memory(opts: Options, work: Path) -> tuple[list[Row], dict[str, Any]]:
    small_dir = work / "memory-small"
    (small,) = write_ct_instances(small_dir, count=1, seed=f"bench-mem-{uuid.uuid4().hex[:12]}")
    big_dir = work / "memory-big"
    big_dir.mkdir()
    big = big_dir / "big.dcm"
    log("memory: writing a 1 GiB instance")
    big_size = write_big_instance(big)
    log(f"memory: {big} is {big_size:,} bytes; pydicom and peek_dicom read it")
    runs: dict[str, ChildRun] = {}
    try:
        with SinkProcess() as sink:
            url = sink.dicomweb_url
            for name, path in (("small", small), ("big", big)):
                cmd = [
                    sys.executable,
                    "-m",
                    "pipelines.store",
                    "--input",
                    str(path),
                    "--dicomweb_url",
                    url,
                    "--output",
                    str(work / f"out-memory-{name}"),
                    "--max_concurrency",
                    str(opts.concurrency),
                    "--runner",
                    RUNNER,
                ]
                runs[f"pipeline_{name}"] = run_child(
                    cmd, work / f"pipeline-{name}.log", what=f"pipeline ({name})"
                )
                raw_cmd = [sys.executable, "-c", RAW_UPLOAD_CODE, str(path), f"{url}/studies"]
                runs[f"raw_{name}"] = run_child(
                    raw_cmd, work / f"raw-{name}.log", what=f"raw client ({name})"
                )
                for key in (f"pipeline_{name}", f"raw_{name}"):
                    log(
                        f"memory: {key:14s} peak RSS {runs[key].peak_rss_mib:7.1f} MiB "
                        f"in {runs[key].seconds:.2f} s"
                    )
            sink_rss = sink.peak_rss_mib()
    finally:
        big.unlink(missing_ok=True)
    pipe_delta = runs["pipeline_big"].peak_rss_mib - runs["pipeline_small"].peak_rss_mib
    raw_delta = runs["raw_big"].peak_rss_mib - runs["raw_small"].peak_rss_mib
    big_mb_s = big_size / 1e6 / runs["pipeline_big"].seconds
    met = pipe_delta < MEMORY_DELTA_TARGET_MIB
    rows = [
        Row(
            "memory",
            "pipeline peak RSS: 1 small / 1 GiB instance",
            f"{runs['pipeline_small'].peak_rss_mib:.0f} / "
            f"{runs['pipeline_big'].peak_rss_mib:.0f} MiB",
        ),
        Row(
            "memory",
            "pipeline peak RSS, 1 GiB minus small",
            f"{pipe_delta:+.1f} MiB",
            f"< {MEMORY_DELTA_TARGET_MIB:.0f} MiB",
            met,
        ),
        Row(
            "memory",
            "  pipeline job time, 1 GiB instance",
            f"{runs['pipeline_big'].seconds:.1f} s ({big_mb_s:,.0f} MB/s whole job)",
        ),
        Row(
            "memory",
            "raw client peak RSS: small / 1 GiB (+diff)",
            f"{runs['raw_small'].peak_rss_mib:.0f} / {runs['raw_big'].peak_rss_mib:.0f} MiB "
            f"({raw_delta:+.1f} MiB)",
        ),
        Row(
            "memory",
            "  sink peak RSS (streams bodies)",
            f"{sink_rss:.0f} MiB" if sink_rss is not None else "n/a",
        ),
    ]
    data = {name: asdict(r) for name, r in runs.items()} | {
        "big_file_bytes": big_size,
        "pipeline_delta_mib": pipe_delta,
        "raw_delta_mib": raw_delta,
        "sink_peak_rss_mib": sink_rss,
    }
    return rows, data


# --- report -------------------------------------------------------------------------------


def _timed_process(cmd: Sequence[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=ROOT, env=child_env(), capture_output=True, timeout=CHILD_TIMEOUT
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchError(f"{cmd[:3]} exited with {done.returncode}: {done.stderr[-2000:]!r}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def scenario_startup(opts: Options, work: Path) -> tuple[list[Row], dict[str, Any]]:
    one = make_corpus(work / "one", count=1, studies=1)
    rounds = max(opts.repeat, 5)
    runs: dict[str, list[tuple[float, float]]] = {"job": [], "import": []}
    with SinkProcess() as sink:
        for r in range(rounds):
            job = [
                sys.executable, "-m", "pipelines.store", "--input", one.glob,
                "--dicomweb_url", sink.dicomweb_url, "--output", str(work / f"out-one-{r}"),
            ]  # fmt: skip
            imports = [sys.executable, "-c", "import apache_beam"]
            order = [("job", job), ("import", imports)]
            for name, cmd in order if r % 2 == 0 else order[::-1]:
                runs[name].append(_timed_process(cmd))
                log(f"startup round {r + 1}/{rounds}: {name:<7} wall {runs[name][-1][0]:.2f} s, "
                    f"cpu {runs[name][-1][1]:.2f} s")  # fmt: skip

    def median(name: str, i: int) -> float:
        return statistics.median(x[i] for x in runs[name])

    wall_ratio = median("job", 0) / median("import", 0)
    cpu_ratio = median("job", 1) / median("import", 1)
    rows = [
        Row("startup", f"`import apache_beam`, median of {rounds}",
            f"{median('import', 0):.2f} s wall, {median('import', 1):.2f} s CPU"),
        Row("startup", f"one-file job as a process, median of {rounds}",
            f"{median('job', 0):.2f} s wall, {median('job', 1):.2f} s CPU"),
        Row("startup", "**ratio job/import, wall**", f"**{wall_ratio:.2f}**", "<= 1.5",
            wall_ratio <= 1.5),
        Row("startup", "ratio job/import, CPU", f"{cpu_ratio:.2f}"),
    ]  # fmt: skip
    return rows, {"runs": runs, "wall_ratio": wall_ratio, "cpu_ratio": cpu_ratio}


# --- process scenarios (issue 9's targets): every side a child process, start-up included -----

RAW_THREADS = 8  # the single-instance raw client of issue 9
PROCESS_WALL_TARGET = 1.0  # orthanc-process: raw wall clock / job wall clock
PROCESS_OWN_TARGET = 1.15  # orthanc-process: job's own rate / raw client's own rate
LARGE_OWN_TARGET = 0.95  # orthanc-large
UPLOAD_WALL_TARGET = 3.0  # sink-upload: UploadToDicomStore wall clock / job wall clock
LARGE_SIDE = 512
_ONCE_RUNNING = re.compile(r"\(([\d,.]+) instances/s once running\)")
_SUMMARY_COUNT = re.compile(r"^\s+(stored|failed)\s+([\d,]+)", re.MULTILINE)


@dataclass
class ProcessRun:
    """One child process: wall clock and CPU (user + system) from start to exit, and its own
    rate (instances / the time it spent storing, start-up excluded) as it reports it."""

    instances: int
    wall: float
    cpu: float
    own_rate: float

    @property
    def rate(self) -> float:
        return self.instances / self.wall


def _run_process(cmd: Sequence[str], what: str) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=CHILD_TIMEOUT
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchError(f"{what} exited with {done.returncode}: {done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def job_process(
    pattern: str, url: str, output: Path, *, expected: int, extra: Sequence[str] = ()
) -> ProcessRun:
    """``python -m pipelines.store`` with its default options; its summary must say all stored."""
    cmd = [sys.executable, "-m", "pipelines.store", "--input", pattern, "--dicomweb_url", url,
           "--output", str(output), *extra]  # fmt: skip
    wall, cpu, out = _run_process(cmd, "pipelines.store")
    counts = {k: int(v.replace(",", "")) for k, v in _SUMMARY_COUNT.findall(out)}
    once = _ONCE_RUNNING.search(out)
    if counts.get("stored") != expected or counts.get("failed") != 0 or once is None:
        raise BenchError(f"job: expected {expected} stored, 0 failed; its summary:\n{out}")
    lines = sum(len(p.read_text().splitlines()) for p in output.glob("stored-*.jsonl"))
    if lines != expected:
        raise BenchError(f"job wrote {lines} stored lines, expected {expected}")
    return ProcessRun(expected, wall, cpu, float(once.group(1).replace(",", "")))


def raw_process(pattern: str, url: str, *, expected: int, batch: int = 1) -> ProcessRun:
    cmd = [sys.executable, str(BENCH_DIR / "raw_stow.py"), pattern, "--dicomweb_url", url,
           "--threads", str(RAW_THREADS), "--batch", str(batch)]  # fmt: skip
    wall, cpu, out = _run_process(cmd, "raw client")
    answer = json.loads(out.strip().splitlines()[-1])
    if answer["stored"] != expected:
        raise BenchError(f"raw client stored {answer['stored']} of {expected}")
    return ProcessRun(expected, wall, cpu, expected / answer["seconds"])


def beam_upload_process(pattern: str, base_url: str, *, expected: int) -> ProcessRun:
    cmd = [sys.executable, str(BENCH_DIR / "beam_upload.py"), "--input", pattern,
           "--base_url", base_url, "--max_workers", str(RAW_THREADS)]  # fmt: skip
    wall, cpu, out = _run_process(cmd, "UploadToDicomStore")
    answer = json.loads(out.strip().splitlines()[-1])
    if answer["ok"] != expected or answer["failed"]:
        raise BenchError(f"UploadToDicomStore: {answer} for {expected} files")
    return ProcessRun(expected, wall, cpu, expected / answer["pipeline_seconds"])


def sink_instances(base_url: str) -> int:
    """Instances the sink has answered as stored so far (its own counter)."""
    return int(requests.get(f"{base_url}/_sink/counters", timeout=30).json().get("instances", 0))


def write_files(directory: Path, *, count: int, studies: int, large: bool = False) -> str:
    """``count`` CT instances with fresh UIDs in ``directory``; returns their glob.

    Small: copies of pydicom's CT_small.dcm (128x128, 39 KB). Large: the same header with
    512x512 16-bit pixels (a ramp, 512 KiB of pixel data per file)."""
    seed = f"bench-{uuid.uuid4().hex[:12]}"
    if not large:
        write_ct_instances(directory, count=count, studies=studies, seed=seed)
        return f"{directory}/*.dcm"
    directory.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    ds.Rows = ds.Columns = LARGE_SIDE
    ds.PixelData = b"".join(struct.pack("<H", (i * 7) % 4096) for i in range(LARGE_SIDE**2))
    for i in range(count):
        ds.StudyInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[f"{seed}-st-{i % studies}"])
        ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[f"{seed}-se-{i % studies}"])
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[f"{seed}-sop-{i}"])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.save_as(directory / f"{seed}-{i:06d}.dcm", enforce_file_format=True)
    return f"{directory}/*.dcm"


def _median(runs: Sequence[ProcessRun], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def _side_rows(scenario: str, name: str, runs: Sequence[ProcessRun]) -> Row:
    n = runs[0].instances
    return Row(
        scenario,
        f"{name}, median of {len(runs)}",
        f"{_median(runs, 'wall'):.2f} s wall ({_rate(n / _median(runs, 'wall'))}), "
        f"{_median(runs, 'cpu'):.2f} s CPU ({_median(runs, 'cpu') / n * 1e3:.2f} ms/inst), "
        f"own rate {_rate(_median(runs, 'own_rate'))}",
    )


def alternate_processes(
    rounds: int, sides: dict[str, Callable[[int], ProcessRun]], label: str
) -> dict[str, list[ProcessRun]]:
    runs: dict[str, list[ProcessRun]] = {name: [] for name in sides}
    order = list(sides.items())
    for r in range(rounds):
        for name, fn in order if r % 2 == 0 else order[::-1]:
            m = fn(r)
            runs[name].append(m)
            log(f"{label} round {r + 1}/{rounds}: {name:<10} wall {m.wall:6.2f} s, "
                f"cpu {m.cpu:6.2f} s, own rate {m.own_rate:8.1f}/s")  # fmt: skip
    return runs


def orthanc_processes(
    opts: Options, pattern: str, n: int, work: Path, scenario: str
) -> tuple[list[Row], dict[str, Any]]:
    """The job against the 8-thread single-instance raw client, both as processes, into the
    same Orthanc emptied before every run and checked to hold ``n`` instances after it.

    A third side, the same raw client sending ``--batch-size`` instances per POST, measures
    the ceiling: what batching alone buys from this server for a client that does nothing
    else (no validation, no grouping, no existence check)."""
    if not orthanc_available():
        log(f"{scenario}: skipped (Orthanc or its DICOMweb plugin is not installed)")
        return [Row(scenario, "skipped", "Orthanc is not installed")], {"skipped": True}
    with LocalOrthanc(workdir=None) as orthanc:
        url = orthanc.dicomweb_url

        def fresh() -> None:
            orthanc.delete_all()
            if orthanc.instance_count() != 0:
                raise BenchError("Orthanc is not empty after delete_all")

        def checked(who: str, m: ProcessRun) -> ProcessRun:
            if (count := orthanc.instance_count()) != n:
                raise BenchError(f"{who}: Orthanc holds {count} instances, expected {n}")
            return m

        def raw(r: int) -> ProcessRun:
            fresh()
            return checked("raw client", raw_process(pattern, url, expected=n))

        def raw_batched(r: int) -> ProcessRun:
            fresh()
            m = raw_process(pattern, url, expected=n, batch=opts.batch_size)
            return checked("batched raw client", m)

        def job(r: int) -> ProcessRun:
            fresh()
            out = work / f"out-{scenario}-{r}"
            return checked("job", job_process(pattern, url, out, expected=n, extra=opts.job_args))

        sides = {"raw": raw, "raw_batched": raw_batched, "job": job}
        runs = alternate_processes(opts.repeat, sides, scenario)
    wall_ratio = _median(runs["raw"], "wall") / _median(runs["job"], "wall")
    own_ratio = _median(runs["job"], "own_rate") / _median(runs["raw"], "own_rate")
    own_target = LARGE_OWN_TARGET if scenario == "orthanc-large" else PROCESS_OWN_TARGET
    ceiling = _median(runs["raw_batched"], "own_rate") / _median(runs["raw"], "own_rate")
    rows = [
        _side_rows(scenario, f"raw client ({RAW_THREADS} threads, 1 instance/POST)", runs["raw"]),
        _side_rows(scenario, f"raw client ({RAW_THREADS} threads, {opts.batch_size} per POST)",
                   runs["raw_batched"]),
        _side_rows(scenario, "pipelines.store job", runs["job"]),
        Row(scenario, "ratio of wall clocks raw/job (start-up and exit included)",
            f"{wall_ratio:.2f}",
            *((f">= {PROCESS_WALL_TARGET}", wall_ratio >= PROCESS_WALL_TARGET)
              if scenario == "orthanc-process" else ())),
        Row(scenario, "ratio of own rates job/raw", f"{own_ratio:.2f}", f">= {own_target}",
            own_ratio >= own_target),
        Row(scenario, "ceiling: own rates batched raw/raw (what batching alone buys)",
            f"{ceiling:.2f}"),
    ]  # fmt: skip
    data = {k: [asdict(m) for m in v] for k, v in runs.items()}
    return rows, data | {"wall_ratio": wall_ratio, "own_ratio": own_ratio, "ceiling": ceiling}


def scenario_orthanc_process(opts: Options, work: Path) -> tuple[list[Row], dict[str, Any]]:
    log(f"orthanc-process: writing {opts.instances} CT instances over {opts.studies} studies")
    pattern = write_files(work / "process", count=opts.instances, studies=opts.studies)
    return orthanc_processes(opts, pattern, opts.instances, work, "orthanc-process")


def scenario_orthanc_large(opts: Options, work: Path) -> tuple[list[Row], dict[str, Any]]:
    n = opts.large_instances
    studies = max(1, n // 50)
    log(f"orthanc-large: writing {n} CT instances of {LARGE_SIDE}x{LARGE_SIDE} over {studies}")
    pattern = write_files(work / "large", count=n, studies=studies, large=True)
    return orthanc_processes(opts, pattern, n, work, "orthanc-large")


def scenario_sink_upload(opts: Options, work: Path) -> tuple[list[Row], dict[str, Any]]:
    """The job against Beam's UploadToDicomStore, both as processes, into the sink."""
    n = opts.instances
    log(f"sink-upload: writing {n} CT instances over {opts.studies} studies")
    pattern = write_files(work / "upload", count=n, studies=opts.studies)
    with SinkProcess() as sink:

        def arrived(who: str, fn: Callable[[], ProcessRun]) -> ProcessRun:
            before = sink_instances(sink.base_url)
            m = fn()
            if (got := sink_instances(sink.base_url) - before) != n:
                raise BenchError(f"{who}: the sink received {got} instances, expected {n}")
            return m

        def beam_upload(r: int) -> ProcessRun:
            upload = sink.base_url
            return arrived(
                "UploadToDicomStore", lambda: beam_upload_process(pattern, upload, expected=n)
            )

        def job(r: int) -> ProcessRun:
            out = work / f"out-upload-{r}"
            return arrived(
                "job",
                lambda: job_process(
                    pattern, sink.dicomweb_url, out, expected=n, extra=opts.job_args
                ),  # fmt: skip
            )

        runs = alternate_processes(opts.repeat, {"upload": beam_upload, "job": job}, "sink-upload")
    wall_ratio = _median(runs["upload"], "wall") / _median(runs["job"], "wall")
    own = _median(runs["job"], "own_rate")
    rows = [
        _side_rows("sink-upload", "Beam's UploadToDicomStore", runs["upload"]),
        _side_rows("sink-upload", "pipelines.store job", runs["job"]),
        Row("sink-upload", "ratio of wall clocks upload/job (end to end)", f"{wall_ratio:.2f}",
            f">= {UPLOAD_WALL_TARGET}", wall_ratio >= UPLOAD_WALL_TARGET),
        Row("sink-upload", "job's own rate", _rate(own), f">= {SINK_RATE_TARGET:,.0f} inst/s",
            own >= SINK_RATE_TARGET),
        Row("sink-upload", "ratio of CPU upload/job",
            f"{_median(runs['upload'], 'cpu') / _median(runs['job'], 'cpu'):.2f}"),
    ]  # fmt: skip
    data = {k: [asdict(m) for m in v] for k, v in runs.items()}
    return rows, data | {"wall_ratio": wall_ratio, "job_own_rate": own}


def machine_facts() -> dict[str, str]:
    orthanc = "not installed"
    if orthanc_available():
        out = subprocess.run(
            [ORTHANC_BINARY, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
        orthanc = out.splitlines()[0] if out else "unknown"
    return {
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "apache_beam": apache_beam.__version__,
        "pydicom": pydicom.__version__,
        "requests": requests.__version__,
        "orthanc": orthanc,
        "platform": platform.platform(),
    }


def render_table(rows: Sequence[Row]) -> str:
    header = ("scenario", "measurement", "result", "target", "met")
    cells = [header] + [
        (
            r.scenario,
            r.measurement,
            r.result,
            r.target,
            "" if r.met is None else ("yes" if r.met else "NO"),
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]

    def line(c: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(c) for c in cells[1:])])


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--large-instances", type=int, default=200, help="orthanc-large: 512x512 instances"
    )
    parser.add_argument(
        "--job-args",
        default="",
        help="process scenarios: extra options of the job, e.g. '--max_concurrency 4'",
    )
    args = parser.parse_args(argv)
    for name in ("instances", "studies", "concurrency", "batch_size", "repeat", "large_instances"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.studies > args.instances:
        parser.error("--studies must not exceed --instances")
    return Options(
        instances=args.instances,
        studies=args.studies,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        repeat=args.repeat,
        scenarios=SCENARIOS if args.scenario == "all" else (args.scenario,),
        json_path=args.json,
        large_instances=args.large_instances,
        job_args=tuple(shlex.split(args.job_args)),
    )


_interrupted = False


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True  # Beam may wrap the KeyboardInterrupt in its own error
    raise KeyboardInterrupt


@contextlib.contextmanager
def cleanup_children() -> Iterator[None]:
    try:
        yield
    finally:
        for proc in list(_children):
            _stop(proc)
        for group in list(_groups):
            _stop_group(group)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _raise_interrupt)
    facts = machine_facts()
    log("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    rows: list[Row] = []
    results: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        with (
            cleanup_children(),
            tempfile.TemporaryDirectory(prefix="bench-store-") as tmp,
        ):
            work = Path(tmp)
            corpus: Corpus | None = None
            if {"orthanc", "sink"} & set(opts.scenarios):
                log(f"writing {opts.instances} CT instances over {opts.studies} studies")
                corpus = make_corpus(work / "input", count=opts.instances, studies=opts.studies)
                log(f"corpus: {len(corpus.instances)} files, {corpus.nbytes / 1e6:.1f} MB")
            for scenario in opts.scenarios:
                if scenario == "orthanc":
                    assert corpus is not None
                    scenario_rows, data = scenario_orthanc(opts, corpus, work)
                elif scenario == "sink":
                    assert corpus is not None
                    scenario_rows, data = scenario_sink(opts, corpus, work)
                elif scenario == "startup":
                    scenario_rows, data = scenario_startup(opts, work)
                elif scenario == "orthanc-process":
                    scenario_rows, data = scenario_orthanc_process(opts, work)
                elif scenario == "orthanc-large":
                    scenario_rows, data = scenario_orthanc_large(opts, work)
                elif scenario == "sink-upload":
                    scenario_rows, data = scenario_sink_upload(opts, work)
                else:
                    scenario_rows, data = scenario_memory(opts, work)
                rows += scenario_rows
                results[scenario] = data
    except BaseException as exc:
        if not (_interrupted or isinstance(exc, KeyboardInterrupt)):
            raise
        log("interrupted: temporary files and processes removed")
        return 130
    total = time.perf_counter() - started
    print()
    print(
        f"bench_store: {opts.instances} instances, {opts.studies} studies, concurrency "
        f"{opts.concurrency}, batch size {opts.batch_size}, {opts.repeat} rounds, "
        f"runner {RUNNER}; {facts['cpus']} CPUs, Python {facts['python']}, "
        f"Beam {facts['apache_beam']}, {facts['orthanc']}; took {total:.0f} s"
        + (f"; orthanc-large: {opts.large_instances} instances" if "orthanc-large" in opts.scenarios
           else "")
        + (f"; job options: {' '.join(opts.job_args)}" if opts.job_args else "")
    )  # fmt: skip
    print(render_table(rows))
    if opts.json_path is not None:
        payload = {
            "options": asdict(opts) | {"json_path": str(opts.json_path)},
            "machine": facts,
            "seconds": total,
            "rows": [asdict(r) for r in rows],
            "results": results,
        }
        opts.json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
