"""Unit tests of the retry loop in transforms/http.py: a scripted session and a fake clock.

These are pure unit tests of ``http.send``: the session is a script of answers (status codes or
exceptions), the clock advances only when ``send`` sleeps, and the jitter comes from a seeded RNG.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from fake_clock import FakeClock
from requests.structures import CaseInsensitiveDict

from transforms.dicomweb import http
from transforms.errors import HttpError

URL = "http://127.0.0.1:1/dicom-web/studies"


class FakeResponse:
    def __init__(
        self, status_code: int, headers: Mapping[str, str] | None = None, content: bytes = b""
    ) -> None:
        self.status_code = status_code
        self.headers = CaseInsensitiveDict(headers or {})
        self.content = content
        self.closed = False

    def close(self) -> None:
        self.closed = True


Step = int | tuple[int, Mapping[str, str]] | FakeResponse | BaseException


@dataclass
class Call:
    method: str
    url: str
    kwargs: dict[str, Any]


@dataclass
class ScriptedSession:
    """Answers each ``request()`` with the next step; optionally takes time per request."""

    script: list[Step]
    clock: FakeClock | None = None
    seconds_per_request: float = 0.0
    calls: list[Call] = field(default_factory=list)
    responses: list[FakeResponse] = field(default_factory=list)

    def request(self, method: str, url: str, **kwargs: Any) -> FakeResponse:
        self.calls.append(Call(method, url, kwargs))
        if self.clock is not None:
            self.clock.now += self.seconds_per_request
        if not self.script:
            raise AssertionError("send() made more requests than scripted")
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, int):
            step = FakeResponse(step, content=f"status {step}".encode())
        elif isinstance(step, tuple):
            step = FakeResponse(step[0], step[1], content=b"busy")
        self.responses.append(step)
        return step


class MaxRandom(random.Random):
    """Always draws the top of the interval: the waits are the jitter bound itself."""

    def uniform(self, a: float, b: float) -> float:
        return b


class FakeBody:
    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _send(
    session: ScriptedSession,
    clock: FakeClock,
    policy: http.RetryPolicy | None = None,
    **kwargs: Any,
) -> http.Response:
    return http.send(
        session,  # type: ignore[arg-type]
        "POST",
        URL,
        policy=policy or http.RetryPolicy(),
        clock=clock,
        rng=kwargs.pop("rng", random.Random(0)),
        **kwargs,
    )


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    clock = FakeClock()
    session = ScriptedSession([status, status, 200])
    retries: list[tuple[int | None, float]] = []
    resp = _send(session, clock, on_retry=lambda s, w: retries.append((s, w)))
    assert resp.status == 200
    assert resp.attempts == 3
    assert len(session.calls) == 3
    assert [s for s, _ in retries] == [status, status]
    assert [w for _, w in retries] == clock.sleeps
    assert resp.waited_seconds == pytest.approx(sum(clock.sleeps))


@pytest.mark.parametrize(
    "error",
    [
        requests.ConnectionError("refused"),
        requests.Timeout("slow"),
        requests.exceptions.ConnectTimeout("slow connect"),
        requests.exceptions.ReadTimeout("slow read"),
        requests.exceptions.ChunkedEncodingError("cut"),
    ],
)
def test_connection_errors_and_timeouts_are_retried(error: Exception) -> None:
    clock = FakeClock()
    session = ScriptedSession([error, 201])
    retries: list[tuple[int | None, float]] = []
    resp = _send(session, clock, on_retry=lambda s, w: retries.append((s, w)))
    assert resp.status == 201
    assert resp.attempts == 2
    assert retries == [(None, clock.sleeps[0])]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 415, 422])
def test_client_errors_are_never_retried(status: int) -> None:
    clock = FakeClock()
    session = ScriptedSession([(status, {"Content-Type": "application/json"}), 200])
    resp = _send(session, clock)
    assert resp.status == status
    assert resp.attempts == 1
    assert resp.waited_seconds == 0
    assert resp.body == b"busy"
    assert resp.content_type == "application/json"
    assert len(session.calls) == 1
    assert clock.sleeps == []


def test_success_is_returned_with_everything_the_caller_needs() -> None:
    clock = FakeClock()
    session = ScriptedSession(
        [FakeResponse(200, {"content-type": "application/dicom+json"}, b"{}")]
    )
    policy = http.RetryPolicy(timeout=(3.0, 7.0))
    resp = _send(
        session,
        clock,
        policy,
        headers={"Accept": "application/dicom+json"},
        body=b"payload",
        params={"limit": 5},
    )
    assert (resp.status, resp.body, resp.attempts, resp.waited_seconds) == (200, b"{}", 1, 0.0)
    assert resp.content_type == "application/dicom+json"
    (call,) = session.calls
    assert (call.method, call.url) == ("POST", URL)
    assert call.kwargs == {
        "headers": {"Accept": "application/dicom+json"},
        "data": b"payload",
        "params": {"limit": 5},
        "timeout": (3.0, 7.0),
        "allow_redirects": False,  # redirects go through http.redirect_decision
        "stream": True,
    }
    assert session.responses[0].closed


def test_every_response_is_closed() -> None:
    session = ScriptedSession([503, 500, 200])
    _send(session, FakeClock())
    assert [r.closed for r in session.responses] == [True, True, True]


def test_retry_after_seconds_is_honoured() -> None:
    clock = FakeClock()
    policy = http.RetryPolicy(initial_backoff=1.0, max_backoff=10.0)
    session = ScriptedSession([(503, {"Retry-After": "30"}), (429, {"retry-after": "120"}), 200])
    retries: list[tuple[int | None, float]] = []
    resp = _send(session, clock, policy, on_retry=lambda s, w: retries.append((s, w)))
    assert resp.status == 200
    # Longer than max_backoff: the server's word wins, and the wait is at least what it asked.
    assert clock.sleeps[0] >= 30
    assert clock.sleeps[1] >= 120
    assert clock.sleeps[0] <= 30 + 1.0 and clock.sleeps[1] <= 120 + 2.0
    assert retries == [(503, clock.sleeps[0]), (429, clock.sleeps[1])]


def test_retry_after_http_date_is_honoured() -> None:
    clock = FakeClock()
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    session = ScriptedSession([(503, {"Retry-After": when}), 200])
    resp = _send(session, clock, http.RetryPolicy(initial_backoff=0.5))
    assert resp.status == 200
    # One second of slack: the date has a one-second resolution and the wall clock moves.
    assert 119.0 <= clock.sleeps[0] <= 121.0


def test_retry_after_smaller_than_the_backoff_does_not_shorten_it() -> None:
    clock = FakeClock()
    session = ScriptedSession([(503, {"Retry-After": "0"}), 200])
    _send(session, clock, http.RetryPolicy(initial_backoff=4.0), rng=MaxRandom())
    assert clock.sleeps == [4.0]


def test_gives_up_after_max_attempts() -> None:
    clock = FakeClock()
    session = ScriptedSession([503] * 3)
    retries: list[tuple[int | None, float]] = []
    with pytest.raises(HttpError) as info:
        _send(
            session,
            clock,
            http.RetryPolicy(max_attempts=3),
            on_retry=lambda s, w: retries.append((s, w)),
        )
    err = info.value
    assert err.reason == "retries_exhausted"
    assert err.status == 503
    assert err.attempts == 3
    assert err.detail == "status 503"
    assert "3 attempts" in err.message and "HTTP 503" in err.message
    assert len(session.calls) == 3
    assert len(clock.sleeps) == 2  # no pointless wait after the last attempt
    assert len(retries) == 2


def test_gives_up_after_max_attempts_of_connection_errors() -> None:
    session = ScriptedSession([requests.ConnectionError("refused")] * 2)
    with pytest.raises(HttpError) as info:
        _send(session, FakeClock(), http.RetryPolicy(max_attempts=2))
    err = info.value
    assert (err.reason, err.status, err.attempts) == ("retries_exhausted", None, 2)
    assert "connection failed" in err.message
    assert err.detail is not None and "ConnectionError" in err.detail
    assert "refused" not in (err.detail or "")


def test_max_attempts_one_means_no_retry() -> None:
    clock = FakeClock()
    session = ScriptedSession([500])
    with pytest.raises(HttpError) as info:
        _send(session, clock, http.RetryPolicy(max_attempts=1))
    assert info.value.attempts == 1
    assert clock.sleeps == []


def test_gives_up_when_max_elapsed_would_be_exceeded() -> None:
    clock = FakeClock()
    # Each request takes 10 s; waits are zero, so only the time bound can stop the loop.
    session = ScriptedSession([504] * 10, clock=clock, seconds_per_request=10.0)
    policy = http.RetryPolicy(max_attempts=10, initial_backoff=0.0, max_elapsed=25.0)
    with pytest.raises(HttpError) as info:
        _send(session, clock, policy)
    assert info.value.attempts == 3
    assert info.value.status == 504
    assert len(session.calls) == 3


def test_a_retry_after_beyond_max_elapsed_gives_up_at_once() -> None:
    clock = FakeClock()
    session = ScriptedSession([(429, {"Retry-After": "3600"}), 200])
    with pytest.raises(HttpError) as info:
        _send(session, clock, http.RetryPolicy(max_elapsed=900.0))
    assert info.value.attempts == 1
    assert info.value.status == 429
    assert clock.sleeps == []  # it does not sleep an hour to then fail


def test_waits_never_push_past_max_elapsed() -> None:
    clock = FakeClock()
    session = ScriptedSession([503] * 50, clock=clock, seconds_per_request=1.0)
    policy = http.RetryPolicy(max_attempts=50, initial_backoff=2.0, max_backoff=8.0, max_elapsed=30)
    with pytest.raises(HttpError):
        _send(session, clock, policy)
    # Time of the last request start = everything before it; it started within the bound.
    last_start = clock.now - 1.0
    assert last_start <= 30.0


def test_waits_are_within_the_full_jitter_bound() -> None:
    clock = FakeClock()
    session = ScriptedSession([503] * 8)
    policy = http.RetryPolicy(max_attempts=8, initial_backoff=0.5, max_backoff=8.0)
    with pytest.raises(HttpError):
        _send(session, clock, policy, rng=random.Random(0))
    caps = [min(8.0, 0.5 * 2**i) for i in range(7)]
    assert len(clock.sleeps) == 7
    for wait, cap in zip(clock.sleeps, caps, strict=True):
        assert 0.0 <= wait <= cap
    replay = random.Random(0)
    assert clock.sleeps == [replay.uniform(0.0, cap) for cap in caps]
    assert len(set(clock.sleeps)) == 7  # jittered, not a fixed schedule


def test_wait_bound_doubles_up_to_max_backoff() -> None:
    clock = FakeClock()
    session = ScriptedSession([503] * 7)
    policy = http.RetryPolicy(max_attempts=7, initial_backoff=1.0, max_backoff=10.0)
    with pytest.raises(HttpError):
        _send(session, clock, policy, rng=MaxRandom())
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_average_wait_grows_with_the_retry_number() -> None:
    policy = http.RetryPolicy(initial_backoff=1.0, max_backoff=1000.0)
    rng = random.Random(0)
    means = [sum(policy.backoff(r, rng) for _ in range(2000)) / 2000 for r in range(1, 6)]
    assert means == sorted(means)
    for retry, mean in enumerate(means, start=1):
        assert mean == pytest.approx(2 ** (retry - 1) / 2, rel=0.1)


def test_body_factory_gives_a_fresh_body_per_attempt_and_each_is_closed() -> None:
    made: list[FakeBody] = []

    def factory() -> FakeBody:
        made.append(FakeBody(len(made)))
        return made[-1]

    session = ScriptedSession([requests.ConnectionError(), 503, 200])
    resp = _send(session, FakeClock(), body=factory)
    assert resp.attempts == 3
    assert len(made) == 3
    assert [c.kwargs["data"] for c in session.calls] == made  # each attempt its own body
    assert len({id(b) for b in made}) == 3
    assert all(b.closed for b in made)


def test_body_is_closed_when_a_non_retryable_exception_escapes() -> None:
    body = FakeBody(0)
    session = ScriptedSession([requests.exceptions.InvalidURL("bad")])
    with pytest.raises(HttpError, match="InvalidURL"):
        _send(session, FakeClock(), body=lambda: body)
    assert body.closed


def test_bytes_body_is_sent_again_unchanged() -> None:
    session = ScriptedSession([500, 200])
    _send(session, FakeClock(), body=b"abc")
    assert [c.kwargs["data"] for c in session.calls] == [b"abc", b"abc"]


def test_on_retry_sees_status_and_wait_for_each_retry() -> None:
    clock = FakeClock()
    session = ScriptedSession([requests.Timeout(), 429, 502, 200])
    retries: list[tuple[int | None, float]] = []
    resp = _send(session, clock, on_retry=lambda s, w: retries.append((s, w)))
    assert resp.attempts == 4
    assert [s for s, _ in retries] == [None, 429, 502]
    assert [w for _, w in retries] == clock.sleeps
    assert resp.waited_seconds == pytest.approx(sum(clock.sleeps))


def test_response_text_detail_is_short_and_single_line() -> None:
    resp = http.Response(500, {}, b"line one\n\n   line two" + b"x" * 1000, 1, 0.0)
    detail = resp.text_detail()
    assert detail is not None
    assert detail.startswith("line one line two")
    assert len(detail) == 300
    assert http.Response(200, {}, b"", 1, 0.0).text_detail() is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("1.5", None),
        ("-5", None),
        ("+5", None),
        ("soon", None),
        ("1e3", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: no wait
    ],
)
def test_retry_after_seconds_edge_cases(value: str | None, expected: float | None) -> None:
    assert http.retry_after_seconds(value) == expected


def test_retry_after_date_relative_to_now() -> None:
    when = email.utils.formatdate(1_000_000_100, usegmt=True)
    assert http.retry_after_seconds(when, now_epoch=1_000_000_000) == pytest.approx(100.0)
    assert http.retry_after_seconds(when, now_epoch=1_000_000_500) == 0.0


def test_retry_after_with_a_non_ascii_digit_is_ignored() -> None:
    assert http.retry_after_seconds("\xb2") is None


def test_send_survives_a_non_ascii_retry_after() -> None:
    session = ScriptedSession([(503, {"Retry-After": "\xb2"}), 200])
    assert _send(session, FakeClock()).status == 200


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"initial_backoff": -0.1},
        {"max_backoff": -1.0},
        {"max_elapsed": -1.0},
    ],
)
def test_retry_policy_refuses_bad_bounds(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        http.RetryPolicy(**kwargs)


def test_retry_policy_accepts_edge_bounds() -> None:
    policy = http.RetryPolicy(max_attempts=1, initial_backoff=0, max_backoff=0, max_elapsed=0)
    assert policy.backoff(1, random.Random(0)) == 0.0
    assert policy.backoff(30, random.Random(0)) == 0.0


def test_is_retryable() -> None:
    assert {s for s in range(100, 600) if http.is_retryable(s)} == {408, 429, 500, 502, 503, 504}


def test_tls_verification_failure_is_not_retried() -> None:
    class TlsFailingSession:
        calls = 0

        def request(self, *args: object, **kwargs: object) -> object:
            TlsFailingSession.calls += 1
            raise requests.exceptions.SSLError("certificate verify failed")

    with pytest.raises(http.HttpError) as info:
        http.send(
            TlsFailingSession(),  # type: ignore[arg-type]
            "GET",
            "https://store.example/dicom-web/studies",
            policy=http.RetryPolicy(max_attempts=5),
        )
    assert info.value.reason == "tls_error"
    assert info.value.attempts == 1
    assert TlsFailingSession.calls == 1


# --- redirects, undecodable answers, deadlines (store hardening) ----------------------------


class UndecodableResponse(FakeResponse):
    @property  # type: ignore[override]
    def content(self) -> bytes:
        raise requests.exceptions.ContentDecodingError("bad gzip")

    @content.setter
    def content(self, value: bytes) -> None:
        pass


@pytest.mark.parametrize(
    ("method", "status", "location", "follow"),
    [
        ("POST", 307, "/dicom-web2/studies", True),
        ("POST", 308, "http://127.0.0.1:1/other", True),
        ("POST", 308, "HTTP://127.0.0.1:1/other", True),
        ("POST", 301, "/dicom-web2/studies", False),
        ("POST", 302, "/dicom-web2/studies", False),
        ("POST", 303, "/dicom-web2/studies", False),
        ("GET", 301, "/dicom-web2/studies", True),
        ("GET", 302, "http://127.0.0.1:1/x", True),
        ("POST", 307, "http://127.0.0.1:2/dicom-web/studies", False),  # another port
        ("POST", 307, "https://127.0.0.1:1/dicom-web/studies", False),  # another scheme
        ("GET", 301, "http://example.org:1/dicom-web", False),  # another host
        ("POST", 307, "", False),
        ("POST", 307, None, False),
    ],
)
def test_redirect_decision(method: str, status: int, location: str | None, follow: bool) -> None:
    decision = http.redirect_decision(method, URL, status, location)
    assert decision.follow is follow
    if location:
        assert decision.location is not None and decision.location.startswith("http")
    if not follow:
        assert decision.why


def test_redirect_decision_resolves_relative_locations() -> None:
    decision = http.redirect_decision("POST", URL, 307, "moved/here")
    assert decision.location == "http://127.0.0.1:1/dicom-web/moved/here"


def test_307_same_origin_resends_the_whole_body_to_the_new_location() -> None:
    bodies: list[FakeBody] = []

    def factory() -> FakeBody:
        bodies.append(FakeBody(len(bodies)))
        return bodies[-1]

    session = ScriptedSession(
        [FakeResponse(307, {"Location": "/moved/studies"}), FakeResponse(200, content=b"ok")]
    )
    resp = _send(session, FakeClock(), body=factory)
    assert resp.status == 200 and resp.attempts == 1
    assert [c.url for c in session.calls] == [URL, "http://127.0.0.1:1/moved/studies"]
    assert [c.kwargs["data"] for c in session.calls] == bodies  # a fresh body per hop
    assert all(b.closed for b in bodies)


@pytest.mark.parametrize("status", [301, 302, 303])
def test_post_redirect_that_would_become_a_get_is_an_error_naming_the_location(
    status: int,
) -> None:
    session = ScriptedSession(
        [FakeResponse(status, {"Location": "http://u:pw@127.0.0.1:1/new?k=1"})]
    )
    with pytest.raises(HttpError) as info:
        _send(session, FakeClock(), body=b"x")
    assert info.value.reason == "redirected"
    assert info.value.status == status
    assert "http://127.0.0.1:1/new" in info.value.message
    assert "pw" not in info.value.message and "k=1" not in info.value.message
    assert len(session.calls) == 1


def test_cross_origin_307_is_not_followed() -> None:
    session = ScriptedSession([FakeResponse(307, {"Location": "http://127.0.0.1:9/dicom-web"})])
    with pytest.raises(HttpError, match="another server") as info:
        _send(session, FakeClock(), body=b"x")
    assert info.value.reason == "redirected"


def test_redirect_as_applies_the_post_rule_to_a_get() -> None:
    session = ScriptedSession([FakeResponse(301, {"Location": "/elsewhere"})])
    with pytest.raises(HttpError):
        http.send(
            session,  # type: ignore[arg-type]
            "GET",
            URL,
            policy=http.RetryPolicy(),
            clock=FakeClock(),
            redirect_as="POST",
        )


def test_redirect_loops_are_bounded() -> None:
    session = ScriptedSession([FakeResponse(307, {"Location": "/loop"})] * (http.MAX_REDIRECTS + 1))
    with pytest.raises(HttpError, match="redirects") as info:
        _send(session, FakeClock(), body=b"x")
    assert info.value.reason == "redirected"


def test_undecodable_answer_is_a_bad_response_not_an_exception() -> None:
    session = ScriptedSession([UndecodableResponse(200, {"Content-Encoding": "gzip"})])
    with pytest.raises(HttpError) as info:
        _send(session, FakeClock(), body=b"x")
    assert (info.value.reason, info.value.status) == ("bad_response", 200)
    assert "Content-Encoding" in info.value.message
    assert session.responses[0].closed


def test_other_request_exceptions_become_http_errors() -> None:
    session = ScriptedSession([requests.exceptions.UnrewindableBodyError("cannot rewind")])
    with pytest.raises(HttpError) as info:
        _send(session, FakeClock(), body=b"x")
    assert info.value.reason == "http_error"
    assert "UnrewindableBodyError" in info.value.message


def test_deadline_cuts_the_attempt_in_progress() -> None:
    clock = FakeClock()
    session = ScriptedSession([requests.ConnectionError(), 200], clock=clock, seconds_per_request=4)
    policy = http.RetryPolicy(max_elapsed=10.0, initial_backoff=1.0, timeout=(10.0, 600.0))
    _send(session, clock, policy, rng=MaxRandom())
    first, second = (c.kwargs["timeout"] for c in session.calls)
    assert first == (10.0, 10.0)  # the read timeout is cut to the deadline
    assert second == (5.0, 5.0)  # 4 s spent and 1 s of backoff: 5 s left


def test_uncertain_attempts_are_counted() -> None:
    session = ScriptedSession([requests.ConnectionError(), 503, 502, 409])
    resp = _send(session, FakeClock(), http.RetryPolicy(initial_backoff=0.0))
    assert (resp.status, resp.attempts, resp.uncertain_attempts) == (409, 4, 2)


def test_a_followed_redirect_does_not_repeat_the_query() -> None:
    session = ScriptedSession(
        [FakeResponse(301, {"Location": "/moved?limit=5"}), FakeResponse(200, content=b"[]")]
    )
    http.send(
        session,  # type: ignore[arg-type]
        "GET",
        URL,
        policy=http.RetryPolicy(),
        clock=FakeClock(),
        params={"limit": 5},
    )
    assert [c.kwargs["params"] for c in session.calls] == [{"limit": 5}, None]
    assert session.calls[1].url == "http://127.0.0.1:1/moved?limit=5"
