"""Send a request with bounded, jittered retries. No Beam here.

Transient failures (408, 429, 500, 502, 503, 504, connection errors, timeouts) are retried with
exponential backoff and full jitter, honouring ``Retry-After``, within a bound on attempts and on
total time. Any other status is returned to the caller, which decides what it means: a 4xx is
never retried. Each attempt sends the body again from the start.

Redirects are never followed silently (``redirect_decision``): requests would turn a redirected
POST into a GET, or fail to rewind a streamed body. A 307/308 to the same scheme, host and port
is sent again there with the whole body; a 301/302/303 is followed only by GET and HEAD, and
only on the same origin; anything else raises ``HttpError(redirected)`` naming the location.
``max_elapsed`` bounds the whole request, the attempt in progress included: each attempt's read
timeout is cut to the time left.
"""

from __future__ import annotations

import email.utils
import random
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from transforms.dead_letter import Reason, shorten
from transforms.errors import HttpError

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
# Statuses after which the request may have taken effect although it is retried.
_MAYBE_APPLIED_STATUSES = frozenset({500, 502, 504})
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
      max_elapsed: seconds; the whole request's deadline: no retry starts past it, and each
        attempt's timeouts are cut to the time left.
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
    # Earlier attempts that may have taken effect although their answer was lost (connection
    # dropped, timeout, 500/502/504): a later "already exists" may be this request's own doing.
    uncertain_attempts: int = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "") or ""

    def text_detail(self) -> str | None:
        return shorten(self.body.decode("utf-8", "replace")) if self.body else None


OnRetry = Callable[[int | None, float], None]


@dataclass(frozen=True)
class RedirectDecision:
    """Whether to follow a redirect, where to, and why not when not."""

    follow: bool
    location: str | None  # absolute
    why: str = ""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def redirect_decision(method: str, url: str, status: int, location: str | None) -> RedirectDecision:
    """The redirect rule (pure): follow only what keeps the method, the body and the server.

    307/308 keep method and body: followed on the same scheme, host and port. 301/302/303 make
    clients switch to GET: followed only for GET/HEAD, on the same origin. Never across origins:
    credentials would go to another server, and a store that moved is a configuration to fix.
    """
    if not location:
        return RedirectDecision(False, None, f"HTTP {status} redirect without a Location")
    target = urllib.parse.urljoin(url, location.strip())
    if _origin(target) != _origin(url):
        return RedirectDecision(
            False, target, f"HTTP {status} redirect to another server (not followed)"
        )
    if status in (307, 308) or method.upper() in ("GET", "HEAD"):
        return RedirectDecision(True, target)
    return RedirectDecision(
        False, target, f"HTTP {status} redirect would turn the {method.upper()} into a GET"
    )


def _redacted(url: str | None) -> str:
    if not url:
        return "(none)"
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _Unrewindable:
    """A streamed body without ``tell``/``seek``: requests then never tries to rewind it for a
    redirect (which raises UnrewindableBodyError even with allow_redirects=False); we re-send
    a fresh body ourselves."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __len__(self) -> int:
        return len(self._stream)

    def __iter__(self) -> Any:
        return iter(self._stream)

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._stream.read(size)
        return data

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


def _fresh(body: Callable[[], Any] | bytes | None) -> Any:
    if not callable(body):
        return body
    data = body()
    if hasattr(data, "read") and hasattr(data, "tell") and hasattr(data, "__len__"):
        return _Unrewindable(data)
    return data


def _attempt_timeout(policy: RetryPolicy, left: float) -> tuple[float, float]:
    connect, read = policy.timeout
    left = max(left, 0.001)
    return min(connect, left), min(read, left)


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
    redirect_as: str | None = None,
) -> Response:
    """Send until a non-retryable answer, or raise ``HttpError`` (``retries_exhausted``,
    ``redirected``, ``bad_response``, ``tls_error``, ``http_error``).

    Args:
      body: bytes, or a factory returning a fresh body (a stream) for each attempt and each
        followed redirect.
      on_retry: called with (status or None for a connection error, seconds about to wait).
      redirect_as: apply the redirect rule of this method instead of ``method``'s (a preflight
        GET checks what a POST would meet).
    """
    clock = clock or SystemClock()
    rng = rng or random.Random()
    start = clock.monotonic()
    waited = 0.0
    attempt = 0
    uncertain = 0
    while True:
        attempt += 1
        target, query = url, params
        before_sending = False
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                data = _fresh(body)
                timeout = _attempt_timeout(policy, policy.max_elapsed - (clock.monotonic() - start))
                try:
                    resp = session.request(
                        method,
                        target,
                        headers=headers,
                        data=data,
                        params=query,
                        timeout=timeout,
                        allow_redirects=False,
                        # The body is read below, where a decoding error still knows the status.
                        stream=True,
                    )
                    status, resp_headers = resp.status_code, resp.headers
                    try:
                        content = resp.content
                    except requests.exceptions.ContentDecodingError:
                        raise HttpError(
                            Reason.BAD_RESPONSE,
                            f"the server's HTTP {status} answer cannot be decoded (its "
                            f"Content-Encoding {resp_headers.get('Content-Encoding')!r} is wrong)",
                            status=status,
                            attempts=attempt,
                        ) from None
                    finally:
                        resp.close()
                finally:
                    close = getattr(data, "close", None)
                    if close is not None:
                        close()
                if status not in REDIRECT_STATUSES:
                    break
                decision = redirect_decision(
                    redirect_as or method, target, status, resp_headers.get("Location")
                )
                if not decision.follow:
                    raise HttpError(
                        Reason.REDIRECTED,
                        f"{decision.why}: {_redacted(decision.location)}; point the job at the "
                        "new location instead",
                        status=status,
                        detail=f"Location: {_redacted(decision.location)}",
                        attempts=attempt,
                    )
                assert decision.location is not None
                target, query = decision.location, None  # the Location carries its own query
            else:
                raise HttpError(
                    Reason.REDIRECTED,
                    f"more than {MAX_REDIRECTS} redirects, last to {_redacted(target)}",
                    status=status,
                    attempts=attempt,
                )
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
            # Raised before sending (e.g. credentials unreachable): it cannot have taken effect.
            before_sending = getattr(exc, "before_sending", False)
            detail = str(exc) if before_sending else f"{type(exc).__name__} talking to the server"
        except requests.exceptions.RequestException as exc:
            # Not transient (bad URL, a body requests cannot rewind, ...): never retried.
            raise HttpError(
                Reason.HTTP_ERROR,
                f"the request failed ({type(exc).__name__})",
                attempts=attempt,
            ) from None
        if status is not None:
            if not is_retryable(status):
                return Response(status, resp_headers, content, attempt, waited, uncertain)
            detail = shorten(content.decode("utf-8", "replace")) or f"HTTP {status}"
        if (status is None and not before_sending) or status in _MAYBE_APPLIED_STATUSES:
            uncertain += 1
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
