"""Send a request with bounded, jittered retries. No Beam here.

Transient failures (408, 429, 500, 502, 503, 504, connection errors, timeouts) are retried with
exponential backoff and full jitter, honouring ``Retry-After``, within a bound on attempts and on
total time. Any other status is returned to the caller, which decides what it means: a 4xx is
never retried. Each attempt sends the body again from the start.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from transforms.dead_letter import Reason, shorten
from transforms.errors import HttpError

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_NO_HEADERS = requests.structures.CaseInsensitiveDict[str]()
_RETRYABLE_EXCEPTIONS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the retry loop.

    Args:
      max_attempts: requests made at most, the first included.
      initial_backoff: seconds; the cap of the first wait, doubled at each retry.
      max_backoff: seconds; no single wait is longer (unless Retry-After asks for it).
      max_elapsed: seconds; no retry starts once this much time has passed since the first try.
      timeout: (connect, read) seconds for each attempt.
    """

    max_attempts: int = 6
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    max_elapsed: float = 900.0
    timeout: tuple[float, float] = (10.0, 600.0)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.max_elapsed < 0:
            raise ValueError("backoff and time bounds must not be negative")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max_backoff, initial * 2**(retry-1))]."""
        cap = min(self.max_backoff, self.initial_backoff * (2 ** (retry - 1)))
        return rng.uniform(0.0, cap)


def is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUSES


def retry_after_seconds(value: str | None, now_epoch: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_epoch is None else now_epoch
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class Response:
    """A final (non-retried) answer and what it took to get it."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    attempts: int
    waited_seconds: float

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "") or ""

    def text_detail(self) -> str | None:
        return shorten(self.body.decode("utf-8", "replace")) if self.body else None


OnRetry = Callable[[int | None, float], None]


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    headers: Mapping[str, str] | None = None,
    body: Callable[[], Any] | bytes | None = None,
    params: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    on_retry: OnRetry | None = None,
) -> Response:
    """Send until a non-retryable answer, or raise ``HttpError(retries_exhausted)``.

    Args:
      body: bytes, or a factory returning a fresh body (a stream) for each attempt.
      on_retry: called with (status or None for a connection error, seconds about to wait).
    """
    clock = clock or SystemClock()
    rng = rng or random.Random()
    start = clock.monotonic()
    waited = 0.0
    attempt = 0
    while True:
        attempt += 1
        data = body() if callable(body) else body
        try:
            resp = session.request(
                method, url, headers=headers, data=data, params=params, timeout=policy.timeout
            )
            status, resp_headers, content = resp.status_code, resp.headers, resp.content
            resp.close()
        except requests.exceptions.SSLError:
            # A certificate that does not verify will not verify on the next try either.
            raise HttpError(
                Reason.TLS_ERROR,
                "TLS verification failed (certificate not trusted or wrong host name); "
                "install the CA certificate (REQUESTS_CA_BUNDLE) rather than disabling checks",
                attempts=attempt,
            ) from None
        except _RETRYABLE_EXCEPTIONS as exc:
            status, resp_headers, content = None, _NO_HEADERS, b""
            detail = f"{type(exc).__name__} talking to the server"
        finally:
            close = getattr(data, "close", None)
            if close is not None:
                close()
        if status is not None:
            if not is_retryable(status):
                return Response(status, resp_headers, content, attempt, waited)
            detail = shorten(content.decode("utf-8", "replace")) or f"HTTP {status}"
        wait = policy.backoff(attempt, rng)
        asked = retry_after_seconds(resp_headers.get("Retry-After")) if status else None
        if asked is not None:
            wait = max(wait, asked)
        elapsed = clock.monotonic() - start
        if attempt >= policy.max_attempts or elapsed + wait > policy.max_elapsed:
            raise HttpError(
                Reason.RETRIES_EXHAUSTED,
                f"gave up after {attempt} attempts over {elapsed:.0f}s: "
                + (f"HTTP {status}" if status else "connection failed"),
                status=status,
                detail=detail,
                attempts=attempt,
            )
        if on_retry is not None:
            on_retry(status, wait)
        clock.sleep(wait)
        waited += wait
