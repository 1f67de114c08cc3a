"""Work in flight inside a DoFn: futures on a per-worker pool, collected as they finish.

No Beam here. A DoFn that talks to a server submits each element's work to the pool its process
shares (``transforms.dicomweb.concurrency``) and keeps going while a few requests are in flight;
``InFlight`` remembers each future with what the DoFn needs to emit its outcome (the element,
its window and timestamp), and hands back the finished ones:

    for future, (element, window, timestamp) in self._inflight.finished(keep=2 * threads):
        ...  # emit future.result(), or dead letters for an exception

``keep`` bounds what a bundle holds: past it, ``finished`` waits for the first future to finish,
so memory stays bounded whatever the bundle's size; ``keep=0`` in ``finish_bundle`` drains all.
"""

from __future__ import annotations

import concurrent.futures
import queue
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class InFlight(Generic[T]):
    """Futures with their context, handed back as they finish (oldest finished first).

    Each future reports its own completion into a queue, so handing back the finished ones
    costs the same whatever the number in flight (no scan of every pending future per element).
    """

    def __init__(self) -> None:
        self._pending: dict[concurrent.futures.Future[Any], T] = {}
        self._done: queue.SimpleQueue[concurrent.futures.Future[Any]] = queue.SimpleQueue()

    def __len__(self) -> int:
        return len(self._pending)

    # DoFns hold one from their construction and are pickled then: it travels empty.
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def add(self, future: concurrent.futures.Future[Any], context: T) -> None:
        self._pending[future] = context
        future.add_done_callback(self._done.put)  # at once when it is done already

    def finished(self, keep: int) -> Iterator[tuple[concurrent.futures.Future[Any], T]]:
        """Yield the finished futures; while more than ``keep`` are pending, wait for one."""
        while self._pending:
            try:
                future = self._done.get_nowait()
            except queue.Empty:
                if len(self._pending) <= keep:
                    return
                future = self._done.get()
            yield future, self._pending.pop(future)
