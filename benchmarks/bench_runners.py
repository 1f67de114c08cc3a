"""Benchmark: ``pipelines.store`` in one process against the DirectRunner's multi_processing mode.

    .venv/bin/python benchmarks/bench_runners.py [--instances 8000] [--studies 80] \\
        [--workers 2] [--repeat 2] [--json out.json]

Both store the same small instances (pydicom's CT_small.dcm, 39 KB, fresh UIDs) into the
zero-cost sink (``benchmarks/stow_sink.py``, its own process, its CPU not counted), as a child
``python -m pipelines.store`` process, alternately for ``--repeat`` rounds. Reported: the medians
of wall clock (start-up included), instances/s, and CPU seconds per 1,000 instances of the job
process and every process it started (the multi_processing workers are its children). The
outcome must be the same: exit 0 and one ``stored`` line per instance in both modes.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_store import ROOT, SinkProcess, log, machine_facts, make_corpus  # noqa: E402

MODES = {
    "one process (default runner)": [],
    "multi_processing": ["--runner", "DirectRunner", "--direct_running_mode", "multi_processing"],
}


def _stored_lines(prefix: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in prefix.glob("stored-*.jsonl"))


def run_once(cmd: list[str], out: Path) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{cmd[2:4]} exited {done.returncode}: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, _stored_lines(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=8000)
    parser.add_argument("--studies", type=int, default=80)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json")
    opts = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float, int]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="bench-runners-") as tmp, SinkProcess() as sink:
        work = Path(tmp)
        log(f"writing {opts.instances} instances")
        corpus = make_corpus(work / "in", count=opts.instances, studies=opts.studies)
        for r in range(opts.repeat):
            order = list(MODES.items())
            for name, extra in order if r % 2 == 0 else order[::-1]:
                out = work / f"out-{len(results[name])}-{extra[-1] if extra else 'one'}"
                cmd = [
                    sys.executable, "-m", "pipelines.store", "--input", corpus.glob,
                    "--dicomweb_url", sink.dicomweb_url, "--output", str(out),
                    "--max_concurrency", str(opts.concurrency), *extra,
                ]  # fmt: skip
                if extra:
                    cmd += ["--direct_num_workers", str(opts.workers)]
                results[name].append(run_once(cmd, out))
                wall, cpu, stored = results[name][-1]
                log(f"round {r + 1}: {name}: {wall:.1f} s wall, {cpu:.1f} s CPU, {stored} stored")
    rows = {}
    for name, runs in results.items():
        wall = statistics.median(x[0] for x in runs)
        cpu = statistics.median(x[1] for x in runs)
        assert all(x[2] == opts.instances for x in runs), f"{name}: not every instance stored"
        rows[name] = {
            "wall_s": round(wall, 2),
            "instances_per_s": round(opts.instances / wall, 1),
            "cpu_s": round(cpu, 2),
            "cpu_ms_per_instance": round(1000 * cpu / opts.instances, 3),
            "runs": runs,
        }
    one, multi = rows["one process (default runner)"], rows["multi_processing"]
    print(f"| mode | wall (median of {opts.repeat}) | instances/s | CPU s | CPU ms/instance |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        label = name if name != "multi_processing" else f"multi_processing, {opts.workers} workers"
        print(f"| {label} | {row['wall_s']} s | {row['instances_per_s']} | {row['cpu_s']} | "
              f"{row['cpu_ms_per_instance']} |")  # fmt: skip
    cpu_ratio = multi["cpu_ms_per_instance"] / one["cpu_ms_per_instance"]
    print(f"\nwall multi/one: {multi['wall_s'] / one['wall_s']:.2f}; "
          f"CPU per instance multi/one: {cpu_ratio:.2f}")  # fmt: skip
    if opts.json:
        facts: dict[str, Any] = {"machine": machine_facts(), "options": vars(opts), "rows": rows}
        Path(opts.json).write_text(json.dumps(facts, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
