"""InFlight: bounded work in flight inside a DoFn."""

from __future__ import annotations

import concurrent.futures
import threading

from transforms.inflight import InFlight


def test_finished_waits_only_past_keep_and_drains_with_zero() -> None:
    release = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        inflight: InFlight[str] = InFlight()
        slow = [pool.submit(release.wait) for _ in range(2)]
        for i, future in enumerate(slow):
            inflight.add(future, f"slow{i}")
        # Two pending, keep=2: nothing finished, nothing to wait for.
        assert list(inflight.finished(keep=2)) == []
        assert len(inflight) == 2
        fast = pool.submit(lambda: 42)
        inflight.add(fast, "fast")
        # Three pending, keep=2: waits until one finishes; only the fast one has.
        got = list(inflight.finished(keep=2))
        assert [(f.result(), c) for f, c in got] == [(42, "fast")]
        release.set()
        assert sorted(c for _, c in inflight.finished(keep=0)) == ["slow0", "slow1"]
        assert len(inflight) == 0


def test_a_failed_future_is_handed_back_with_its_context() -> None:
    def boom() -> None:
        raise ValueError("x")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        inflight: InFlight[int] = InFlight()
        inflight.add(pool.submit(boom), 7)
        ((future, context),) = list(inflight.finished(keep=0))
        assert context == 7 and isinstance(future.exception(), ValueError)
