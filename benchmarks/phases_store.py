"""Where a ``pipelines.store`` job spends its time: one run, split into phases.

    .venv/bin/python benchmarks/phases_store.py --input '/data/*.dcm' \\
        --dicomweb_url http://127.0.0.1:PORT/dicom-web --output /tmp/out [store options...]

Runs the job in this process (its default runner unless ``--runner`` is given) with timers wrapped
around the header peek (``_PeekFn.process``), the existence check (``study_sop_uids``) and the
STOW POSTs (``StowClient._send``), then prints when each phase started and ended and how much
thread time it used. Nothing in ``transforms/`` is changed: the wrappers are set at run time.
"""

from __future__ import annotations

import collections
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import apache_beam as beam  # noqa: E402

import transforms.dicomweb.stow as stow_client  # noqa: E402
import transforms.read_dicom as read_dicom  # noqa: E402
from pipelines.store import run  # noqa: E402

_T0 = time.perf_counter()
_spans: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
_lock = threading.Lock()


def _timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter() - _T0
        result = fn(*args, **kwargs)
        if hasattr(result, "__next__"):  # a DoFn's generator: do its work inside the span
            result = list(result)
        with _lock:
            _spans[label].append((start, time.perf_counter() - _T0))
        return result

    return wrapper


def install() -> None:
    beam.Pipeline.run = _timed("pipeline.run", beam.Pipeline.run)  # type: ignore[method-assign]
    read_dicom._PeekFn.process = _timed("peek headers", read_dicom._PeekFn.process)  # type: ignore[method-assign]
    stow_client.study_sop_uids = _timed("existence check", stow_client.study_sop_uids)
    stow_client.StowClient._send = _timed("STOW POST", stow_client.StowClient._send)  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    install()
    start = time.perf_counter() - _T0
    store_run = run(args)
    assert store_run is not None, "--help is not a benchmark"
    end = time.perf_counter() - _T0
    s = store_run.summary
    print(f"job: {end - start:.3f} s wall, stored {s.stored}, failed {s.failed}")
    print(f"{'phase':16s} {'calls':>6s} {'starts':>8s} {'ends':>8s} {'span':>7s} {'thread s':>9s}")
    last = start
    for label, spans in _spans.items():
        first, final = min(a for a, _ in spans), max(b for _, b in spans)
        busy = sum(b - a for a, b in spans)
        print(
            f"{label:16s} {len(spans):6d} {first - start:8.3f} {final - start:8.3f} "
            f"{final - first:7.3f} {busy:9.3f}"
        )
        if label != "pipeline.run":
            last = max(last, final)
    first_work = min(
        (min(a for a, _ in v) for k, v in _spans.items() if k != "pipeline.run"), default=start
    )
    print(f"before the first peek (start-up, matching): {first_work - start:.3f} s")
    print(f"after the last POST (outputs, shutdown):    {end - last:.3f} s")
    return store_run.exit_code


if __name__ == "__main__":
    sys.exit(main())
