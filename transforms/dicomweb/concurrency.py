"""A per-process registry of shared resources (session, client, thread pool).

Beam may run several instances of a DoFn in one worker process (one per harness thread). Each
instance acquiring its own pool would multiply the concurrency a server sees; sharing one per
process, keyed by the transform, keeps ``max_concurrency`` a true per-worker bound. Resources are
created in ``DoFn.setup()`` and closed in ``teardown()`` when their last user is gone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_resources: dict[str, list[Any]] = {}  # key -> [resource, users, closer]


def acquire(key: str, factory: Callable[[], T], closer: Callable[[T], None]) -> T:
    with _lock:
        entry = _resources.get(key)
        if entry is None:
            entry = _resources[key] = [factory(), 0, closer]
        entry[1] += 1
        return entry[0]


def release(key: str) -> None:
    with _lock:
        entry = _resources.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _resources[key]
    entry[2](entry[0])
