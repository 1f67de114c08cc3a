"""What the in-process runner itself keeps per element: a plain pipeline, no project code.

    .venv/bin/python benchmarks/bench_runner_memory.py [--elements 2000 32000] [--groupings 1]

Each size runs in a child process of its own: ``Create`` of one seed, a ``FlatMap`` making N
elements shaped like a store job's (a study UID key and a tuple of path, size, transfer syntax
and SOP Instance UID: about 200 bytes), ``--groupings`` GroupByKeys in a row, then a count. The
child prints its peak RSS (``ru_maxrss``) before and after ``pipeline.run()``; the growth between
the sizes, divided by the difference in elements, is what the runner holds per element at its
peak. Our jobs group every input at least once (pairing, one lookup per study, batching), so
this is the floor of their growth with the number of inputs on this runner.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence

_CHILD = "--child"


def _child(n: int, groupings: int, runner: str) -> None:
    import resource  # noqa: PLC0415 - the child only

    import apache_beam as beam  # noqa: PLC0415
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    def elements(_: object) -> Iterator[tuple[str, tuple[str, int, str, str]]]:
        for i in range(n):
            study = f"1.2.826.0.1.3680043.8.498.{i % 80:038d}"
            sop = f"1.2.826.0.1.3680043.8.498.{i:038d}"
            yield study, (f"/data/study/file-{i:07d}.dcm", 39_000 + i, "1.2.840.10008.1.2.1", sop)

    p = beam.Pipeline(options=PipelineOptions([f"--runner={runner}"]))
    current = p | beam.Create([None]) | beam.FlatMap(elements)
    for g in range(groupings):
        current = (
            current
            | f"Group{g}" >> beam.GroupByKey()
            | f"Ungroup{g}" >> beam.FlatMap(lambda kv: ((kv[0], v) for v in kv[1]))
        )
    _ = current | beam.combiners.Count.Globally()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    p.run().wait_until_finish()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"elements": n, "before_kib": before, "after_kib": after}))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--elements", type=int, nargs=2, default=(2000, 32000))
    parser.add_argument("--groupings", type=int, default=1)
    parser.add_argument("--runner", default="FnApiRunner")
    parser.add_argument(_CHILD, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child, args.groupings, args.runner)
        return 0
    peaks = {}
    for n in args.elements:
        cmd = [sys.executable, __file__, _CHILD, str(n), "--groupings", str(args.groupings)]
        out = subprocess.run(cmd + ["--runner", args.runner], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        peaks[n] = json.loads(out.stdout.strip().splitlines()[-1])["after_kib"]
        print(f"{n:>8,} elements: peak RSS {peaks[n] / 1024:.1f} MiB")
    small, large = args.elements
    per = (peaks[large] - peaks[small]) / (large - small)
    print(
        f"runner {args.runner}, {args.groupings} grouping(s): "
        f"{per:.2f} KiB of peak RSS per element ({(peaks[large] - peaks[small]) / 1024:.1f} MiB "
        f"from {small:,} to {large:,})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
