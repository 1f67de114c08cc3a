"""Google's long-running operations, as the DELETE of a study or series answers them. No Beam.

A DELETE answers ``{"name": "projects/P/locations/L/datasets/D/operations/ID"}``; the operation is
read at ``{api}/v1/{name}`` until ``"done": true``, then holds ``response`` on success or
``error`` (``code``, ``message``) on failure (see the guide's "Supprimer une étude" section).
These are the pure pieces: where to poll, when, and what an answer says.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from transforms.dead_letter import shorten

FIRST_POLL_SECONDS = 1.0
MAX_POLL_SECONDS = 10.0
POLL_FACTOR = 1.5


def operation_url(base_url: str, name: str) -> str:
    """``{api}/v1/{name}``: ``{api}`` is the store URL before ``/v1/`` (its origin if none)."""
    head, sep, _ = base_url.partition("/v1/")
    if not sep:
        parts = urllib.parse.urlsplit(base_url)
        head = f"{parts.scheme}://{parts.netloc}"
    return f"{head}/v1/{urllib.parse.quote(name.lstrip('/'), safe='/-_.~')}"


def poll_delays(
    first: float = FIRST_POLL_SECONDS,
    maximum: float = MAX_POLL_SECONDS,
    factor: float = POLL_FACTOR,
) -> Iterator[float]:
    """Seconds to wait before each poll: ``first``, then x1.5 each time, never above ``maximum``.

    A factor of 1.5 (not 2) keeps a short operation's wasted wait small: one that takes 2 s is
    seen done at 2.5 s, where doubling would see it at 3 s.
    """
    delay = first
    while True:
        yield delay
        delay = min(maximum, delay * factor)


def operation_name(body: bytes) -> str | None:
    """The long-running operation a DELETE answered, or None (``{}``, empty, not JSON)."""
    try:
        data = json.loads(body) if body.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and "/operations/" in f"/{name}" else None


@dataclass(frozen=True)
class OperationState:
    done: bool
    error_code: int | None = None
    error_message: str | None = None

    @property
    def failed(self) -> bool:
        return self.done and (self.error_code is not None or self.error_message is not None)


def parse_operation(body: bytes) -> OperationState:
    """A polled operation; raises ValueError when the answer is not an operation object."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("operation answer is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("operation answer is not a JSON object")
    done = data.get("done") is True
    error = data.get("error")
    if not done or error is None:
        return OperationState(done)
    if not isinstance(error, dict):
        return OperationState(True, None, shorten(str(error)))
    code = error.get("code")
    message = error.get("message")
    return OperationState(
        True,
        code if isinstance(code, int) else None,
        shorten(message) if isinstance(message, str) else "operation ended in error",
    )
