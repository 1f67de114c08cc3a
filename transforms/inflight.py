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
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class InFlight(Generic[T]):
    """Futures with their context, handed back as they finish (oldest finished first)."""

    def __init__(self) -> None:
        self._pending: list[tuple[concurrent.futures.Future[Any], T]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, future: concurrent.futures.Future[Any], context: T) -> None:
        self._pending.append((future, context))

    def finished(self, keep: int) -> Iterator[tuple[concurrent.futures.Future[Any], T]]:
        """Yield the finished futures; while more than ``keep`` are pending, wait for one."""
        while True:
            done = [entry for entry in self._pending if entry[0].done()]
            if not done and len(self._pending) > keep:
                concurrent.futures.wait(
                    [future for future, _ in self._pending],
                    return_when=concurrent.futures.FIRST_COMPLETED,
                )
                continue
            if not done:
                return
            for entry in done:
                self._pending.remove(entry)
                yield entry
