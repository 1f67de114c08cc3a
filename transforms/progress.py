"""Progress lines while a job runs (one per interval per worker process), for long jobs."""

from __future__ import annotations

import logging
import threading
import time

_log = logging.getLogger("dicomweb_beam.progress")


class Progress:
    def __init__(self, label: str, interval_seconds: float = 15.0) -> None:
        self._label = label
        self._interval = interval_seconds
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = self._start
        self._items = 0
        self._bytes = 0
        self._failed = 0

    def add(self, *, items: int = 0, nbytes: int = 0, failed: int = 0) -> None:
        with self._lock:
            self._items += items
            self._bytes += nbytes
            self._failed += failed
            now = time.monotonic()
            if now - self._last < self._interval:
                return
            self._last = now
            elapsed = now - self._start
            line = (
                f"{self._label}: {self._items:,} done ({self._bytes / 1e6:,.1f} MB), "
                f"{self._failed:,} dead-lettered, {self._items / elapsed:,.1f}/s on this worker"
            )
        _log.info(line)


_shared: dict[str, Progress] = {}
_shared_lock = threading.Lock()


def for_label(label: str) -> Progress:
    """One Progress per label per process, shared by the DoFn instances of a worker."""
    with _shared_lock:
        if label not in _shared:
            _shared[label] = Progress(label)
        return _shared[label]
