"""Benchmark of ``pipelines.store_json_jpeg``.

    .venv/bin/python benchmarks/bench_json_jpeg.py [--pairs 1000] [--size 512] [--studies 20] \\
        [--concurrency 4] [--batch-size 50] [--repeat 2] \\
        [--scenario orthanc|sink|memory|all] [--json out.json]

Scenarios:

* ``orthanc``: client mode (validate, build Part 10, store) of ``--pairs`` JSON + JPEG pairs of
  ``--size``-pixel-square colour JPEGs into a real Orthanc, against ``pipelines.store`` storing
  the equivalent Part 10 files (the very instances client mode builds, written beforehand) into
  the same emptied Orthanc, alternately for ``--repeat`` rounds. Both jobs run in this process;
  reported: the medians of the jobs' own rates (pipeline run only, start-up excluded) and of the
  end-to-end rates (``run()`` including option parsing and preflight), and their ratios.
  Target: json/store >= 0.8 on both.
* ``sink``: server mode (JSON + JPEG requests) into ``benchmarks/stow_sink.py`` (a separate
  process answering at once), with ``--pairs`` pairs and a quarter of them, alternately.
  Reported: the job's own rate, end to end, CPU per pair (this process, all threads), and the
  rate and CPU once running (the difference between the two sizes). Target: >= 1000 pairs/s on
  the job's own rate.
* ``memory``: peak RSS of a child ``python -m pipelines.store_json_jpeg`` in server mode into
  the sink, with ``--pairs`` pairs and with a quarter of them. Target: no growth with the
  number of pairs (the difference stays within noise, < 30 MiB).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
for folder in (ROOT, BENCH_DIR, ROOT / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import bench_store as bs  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pipelines import store as store_job  # noqa: E402
from pipelines import store_json_jpeg as json_job  # noqa: E402
from pipelines.local_orthanc import LocalOrthanc, orthanc_available  # noqa: E402
from transforms.dicom.build import BuildOptions, build_part10, prepare  # noqa: E402
from transforms.dicom.jpeg import read_jpeg_info  # noqa: E402

SCENARIOS = ("orthanc", "sink", "memory")
RATIO_TARGET = 0.8
SINK_RATE_TARGET = 1000.0
MEMORY_GROWTH_TARGET_MIB = 30.0
DISTINCT_IMAGES = 8
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def log(message: str) -> None:
    print(f"[bench_json_jpeg] {message}", file=sys.stderr, flush=True)


def photo(size: int, seed: int) -> bytes:
    """A 4:2:0 colour JPEG of ``size`` x ``size`` that compresses like a photograph."""
    y, x = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(seed)
    rgb = np.stack([(x + seed * 7) % 256, (y * 2) % 256, (x + y) % 256]) + rng.integers(
        0, 24, (3, size, size)
    )
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, subsampling=2)
    return out.getvalue()


def uid(*parts: object) -> str:
    return "2.25." + str(abs(hash(("bench-json-jpeg", *parts))) % 10**30)


@dataclass
class Corpus:
    pairs_dir: Path  # N.json + N.jpg
    part10_dir: Path  # the same instances as Part 10 files
    count: int
    jpeg_bytes: int


def make_corpus(work: Path, *, count: int, size: int, studies: int, tag: str) -> Corpus:
    images = [photo(size, seed) for seed in range(DISTINCT_IMAGES)]
    pairs_dir, part10_dir = work / f"pairs-{tag}", work / f"part10-{tag}"
    pairs_dir.mkdir(parents=True)
    part10_dir.mkdir(parents=True)
    total = 0
    for i in range(count):
        data = images[i % DISTINCT_IMAGES]
        study = i % studies
        meta = {
            "00080016": {"vr": "UI", "Value": [SECONDARY_CAPTURE]},
            "0020000D": {"vr": "UI", "Value": [uid(tag, "study", study)]},
            "0020000E": {"vr": "UI", "Value": [uid(tag, "series", study)]},
            "00080018": {"vr": "UI", "Value": [uid(tag, "sop", i)]},
            "00080060": {"vr": "CS", "Value": ["XC"]},
            "00100020": {"vr": "LO", "Value": [f"BENCH-{study}"]},
            "00200013": {"vr": "IS", "Value": [i + 1]},
        }
        json_path, jpeg_path = pairs_dir / f"{i:06d}.json", pairs_dir / f"{i:06d}.jpg"
        json_path.write_text(json.dumps(meta))
        jpeg_path.write_bytes(data)
        prepared = prepare(
            meta,
            read_jpeg_info(io.BytesIO(data), len(data)),
            BuildOptions(),
            source=str(json_path),
            json_path=str(json_path),
            jpeg_path=str(jpeg_path),
            jpeg_size=len(data),
            folder=str(pairs_dir),
        )
        (part10_dir / f"{i:06d}.dcm").write_bytes(build_part10(prepared, data))
        total += len(data)
    return Corpus(pairs_dir, part10_dir, count, total)


@dataclass
class Measure:
    job: str
    count: int
    wall_seconds: float
    job_seconds: float
    cpu_seconds: float = 0.0  # of this process (all its threads) around run(): end to end

    @property
    def wall_rate(self) -> float:
        return self.count / self.wall_seconds

    @property
    def job_rate(self) -> float:
        return self.count / self.job_seconds


def _common(url: str, out: Path, opts: Options) -> list[str]:
    return [
        "--dicomweb_url", url, "--output", str(out), "--batch_size", str(opts.batch_size),
        "--max_concurrency", str(opts.concurrency), "--runner", bs.RUNNER,
    ]  # fmt: skip


def run_store(corpus: Corpus, url: str, out: Path, opts: Options) -> Measure:
    start = time.perf_counter()
    job = store_job.run(["--input", str(corpus.part10_dir), *_common(url, out, opts)])
    wall = time.perf_counter() - start
    assert job is not None
    if job.summary.stored != corpus.count or job.summary.failed:
        raise bs.BenchError(f"store: {job.summary.stored} stored, {job.summary.failed} failed")
    return Measure("store", corpus.count, wall, _job_seconds(job.summary))


def run_json(corpus: Corpus, url: str, out: Path, opts: Options, mode: str) -> Measure:
    argv = ["--input", str(corpus.pairs_dir / "*.json"), "--mode", mode, *_common(url, out, opts)]
    start, cpu = time.perf_counter(), time.process_time()
    job = json_job.run(argv)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert job is not None
    if job.summary.stored != corpus.count or job.summary.failed:
        raise bs.BenchError(
            f"store_json_jpeg: {job.summary.stored} stored, {job.summary.failed_by_reason}"
        )
    return Measure(f"json_{mode}", corpus.count, wall, _job_seconds(job.summary), cpu)


def _job_seconds(summary: Any) -> float:
    """The pipeline's own time (its run, start-up excluded): both jobs report it apart from
    their time since launch, which in this process would include the whole benchmark."""
    return float(summary.pipeline_seconds or summary.elapsed_seconds)


@dataclass
class Options:
    pairs: int
    size: int
    studies: int
    concurrency: int
    batch_size: int
    repeat: int
    scenarios: tuple[str, ...]
    json_path: Path | None


def scenario_orthanc(opts: Options, corpus: Corpus, work: Path) -> dict[str, Any]:
    if not orthanc_available():
        raise bs.BenchError("the orthanc scenario needs Orthanc (scripts/setup.sh installs it)")
    runs: dict[str, list[Measure]] = {"store": [], "json_client": []}
    (work / "orthanc").mkdir()
    with LocalOrthanc(work / "orthanc") as orthanc:
        for r in range(opts.repeat):
            order = ["store", "json_client"] if r % 2 == 0 else ["json_client", "store"]
            for name in order:
                orthanc.delete_all()
                out = work / f"out-{name}-{r}"
                if name == "store":
                    m = run_store(corpus, orthanc.dicomweb_url, out, opts)
                else:
                    m = run_json(corpus, orthanc.dicomweb_url, out, opts, "client")
                if orthanc.instance_count() != corpus.count:
                    raise bs.BenchError(f"{name}: Orthanc holds {orthanc.instance_count()}")
                runs[name].append(m)
                log(
                    f"orthanc round {r + 1}/{opts.repeat}: {name:12s} job {m.job_rate:7.1f}/s"
                    f"  end to end {m.wall_rate:7.1f}/s"
                )
    med = {
        name: {
            "job_rate": statistics.median(m.job_rate for m in ms),
            "wall_rate": statistics.median(m.wall_rate for m in ms),
        }
        for name, ms in runs.items()
    }
    return {
        "medians": med,
        "ratio_job": med["json_client"]["job_rate"] / med["store"]["job_rate"],
        "ratio_wall": med["json_client"]["wall_rate"] / med["store"]["wall_rate"],
        "runs": {k: [asdict(m) for m in v] for k, v in runs.items()},
    }


def scenario_sink(opts: Options, corpus: Corpus, work: Path) -> dict[str, Any]:
    """Server mode into the sink, with ``--pairs`` pairs and, alternately, a quarter of them:
    the difference between the two sizes is the rate once running (the runner's fixed cost
    per job, about half a second, excluded)."""
    small = make_corpus(
        work, count=max(corpus.count // 4, 1), size=opts.size, studies=opts.studies, tag="q"
    )
    runs: dict[str, list[Measure]] = {"small": [], "large": []}
    with bs.SinkProcess() as sink:
        for r in range(opts.repeat):
            order = (("small", small), ("large", corpus))
            for name, c in order if r % 2 == 0 else order[::-1]:
                m = run_json(c, sink.dicomweb_url, work / f"sink-{name}-{r}", opts, "server")
                runs[name].append(m)
                log(f"sink round {r + 1}/{opts.repeat}: {m.count:5d} pairs: job "
                    f"{m.job_rate:7.1f}/s, end to end {m.wall_rate:7.1f}/s, CPU "
                    f"{1000 * m.cpu_seconds / m.count:.2f} ms/pair")  # fmt: skip
    med = {
        name: {k: statistics.median(getattr(m, k) for m in ms) for k in _SECONDS}
        for name, ms in runs.items()
    }
    extra = corpus.count - small.count
    large = med["large"]
    return {
        "job_rate": corpus.count / large["job_seconds"],
        "wall_rate": corpus.count / large["wall_seconds"],
        "cpu_ms_per_pair": 1000 * large["cpu_seconds"] / corpus.count,
        "marginal_job_rate": extra / max(large["job_seconds"] - med["small"]["job_seconds"], 1e-9),
        "marginal_cpu_ms_per_pair": 1000
        * (large["cpu_seconds"] - med["small"]["cpu_seconds"])
        / extra,
        "medians": med,
    }


_SECONDS = ("job_seconds", "wall_seconds", "cpu_seconds")


def scenario_memory(opts: Options, work: Path) -> dict[str, Any]:
    small = make_corpus(
        work, count=max(opts.pairs // 4, 1), size=opts.size, studies=opts.studies, tag="mem-s"
    )
    large = make_corpus(work, count=opts.pairs, size=opts.size, studies=opts.studies, tag="mem-l")
    peaks = {}
    with bs.SinkProcess() as sink:
        for name, corpus in (("small", small), ("large", large)):
            cmd = [
                sys.executable, "-m", "pipelines.store_json_jpeg",
                "--input", str(corpus.pairs_dir / "*.json"), "--mode", "server",
                *_common(sink.dicomweb_url, work / f"mem-{name}", opts),
            ]  # fmt: skip
            child = bs.run_child(cmd, work / f"mem-{name}.log", what=f"memory {name}")
            peaks[name] = {"pairs": corpus.count, "peak_rss_mib": child.peak_rss_mib}
            log(f"memory {name}: {corpus.count} pairs, peak RSS {child.peak_rss_mib:.1f} MiB")
    growth = peaks["large"]["peak_rss_mib"] - peaks["small"]["peak_rss_mib"]
    return {"peaks": peaks, "growth_mib": growth}


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--json", type=Path, help="also write the results here")
    a = parser.parse_args(argv)
    scenarios = SCENARIOS if a.scenario == "all" else (a.scenario,)
    return Options(
        a.pairs, a.size, a.studies, a.concurrency, a.batch_size, a.repeat, scenarios, a.json
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    results: dict[str, Any] = {"options": {**asdict(opts), "json_path": None}}
    results["machine"] = bs.machine_facts()
    work = Path(tempfile.mkdtemp(prefix="bench-json-jpeg-"))
    ok = True
    try:
        with bs.cleanup_children():
            corpus = None
            if {"orthanc", "sink"} & set(opts.scenarios):
                log(f"making {opts.pairs} pairs of {opts.size}x{opts.size} colour JPEGs")
                corpus = make_corpus(
                    work, count=opts.pairs, size=opts.size, studies=opts.studies, tag="main"
                )
                results["mean_jpeg_kib"] = corpus.jpeg_bytes / corpus.count / 1024
            if "orthanc" in opts.scenarios and corpus is not None:
                o = results["orthanc"] = scenario_orthanc(opts, corpus, work)
                ok &= o["ratio_job"] >= RATIO_TARGET and o["ratio_wall"] >= RATIO_TARGET
                print(
                    f"orthanc: client mode / store = {o['ratio_job']:.2f} (jobs' own rates: "
                    f"{o['medians']['json_client']['job_rate']:.1f} vs "
                    f"{o['medians']['store']['job_rate']:.1f}/s), {o['ratio_wall']:.2f} end to "
                    f"end ({o['medians']['json_client']['wall_rate']:.1f} vs "
                    f"{o['medians']['store']['wall_rate']:.1f}/s); target >= {RATIO_TARGET}"
                )
            if "sink" in opts.scenarios and corpus is not None:
                s = results["sink"] = scenario_sink(opts, corpus, work)
                ok &= s["job_rate"] >= SINK_RATE_TARGET
                print(
                    f"sink: server mode {s['job_rate']:.0f} pairs/s (job's own rate), "
                    f"{s['wall_rate']:.0f}/s end to end, {s['cpu_ms_per_pair']:.2f} ms CPU a "
                    f"pair end to end; once running (difference of two sizes): "
                    f"{s['marginal_job_rate']:.0f} pairs/s, "
                    f"{s['marginal_cpu_ms_per_pair']:.2f} ms CPU a pair; target >= "
                    f"{SINK_RATE_TARGET:.0f}/s"
                )
            if "memory" in opts.scenarios:
                m = results["memory"] = scenario_memory(opts, work)
                ok &= m["growth_mib"] < MEMORY_GROWTH_TARGET_MIB
                print(
                    f"memory: peak RSS {m['peaks']['small']['peak_rss_mib']:.0f} MiB with "
                    f"{m['peaks']['small']['pairs']} pairs, "
                    f"{m['peaks']['large']['peak_rss_mib']:.0f} MiB with "
                    f"{m['peaks']['large']['pairs']}; growth {m['growth_mib']:.1f} MiB "
                    f"(target < {MEMORY_GROWTH_TARGET_MIB:.0f})"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if opts.json_path:
        opts.json_path.write_text(json.dumps(results, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
