"""Unit tests for tests/fakes/fault_proxy.py against a tiny in-test echo upstream."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))

from fault_proxy import FaultPlan, FaultProxy  # noqa: E402

TIMEOUT = 10


class _Upstream:
    """Echoes method, path, body length, body sha256 and selected headers; counts hits."""

    def __init__(self) -> None:
        self.hits: list[dict[str, object]] = []
        lock = threading.Lock()
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _echo(self) -> None:
                if self.headers.get("Transfer-Encoding"):
                    self.send_error(400, "upstream got Transfer-Encoding")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                info: dict[str, object] = {
                    "method": self.command,
                    "path": self.path,
                    "length": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "host": self.headers.get("Host"),
                    "x_test": self.headers.get("X-Test"),
                }
                with lock:
                    hits.append(info)
                out = json.dumps(info).encode()
                self.send_response(201 if self.command == "POST" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Upstream", "yes")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = _echo

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> _Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    with _Upstream() as up:
        yield up


def test_forwards_large_body_intact(upstream: _Upstream) -> None:
    body = os.urandom(3 * 1024 * 1024)
    with FaultProxy(upstream.base, FaultPlan()) as proxy:
        r = requests.post(
            proxy.base_url + "/dicom-web/studies?x=1",
            data=body,
            headers={"X-Test": "abc", "Content-Type": "application/octet-stream"},
            timeout=TIMEOUT,
        )
        assert r.status_code == 201
        assert r.headers["X-Upstream"] == "yes"
        echo = r.json()
        assert echo["method"] == "POST"
        assert echo["path"] == "/dicom-web/studies?x=1"
        assert echo["length"] == len(body)
        assert echo["sha256"] == hashlib.sha256(body).hexdigest()
        assert echo["x_test"] == "abc"
        assert echo["host"] == upstream.base.removeprefix("http://")
        assert len(upstream.hits) == 1
        assert proxy.counts == {"forwarded": 1}


def test_chunked_request_body_is_decoded(upstream: _Upstream) -> None:
    pieces = [b"a" * 1000, b"b" * 70000, b"c"]
    with FaultProxy(upstream.base, FaultPlan()) as proxy:
        r = requests.put(proxy.base_url + "/x", data=iter(pieces), timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        joined = b"".join(pieces)
        assert r.json()["length"] == len(joined)
        assert r.json()["sha256"] == hashlib.sha256(joined).hexdigest()


def test_upstream_path_prefix(upstream: _Upstream) -> None:
    with FaultProxy(upstream.base + "/prefix/", FaultPlan()) as proxy:
        r = requests.get(proxy.base_url + "/a/b", timeout=TIMEOUT)
        assert r.json()["path"] == "/prefix/a/b"


def test_p503_answers_without_forwarding(upstream: _Upstream) -> None:
    with FaultProxy(upstream.base, FaultPlan(p_503=1.0)) as proxy:
        with requests.Session() as s:  # keep-alive must survive injected answers
            for _ in range(3):
                r = s.post(proxy.base_url + "/dicom-web/studies", data=b"x" * 100, timeout=TIMEOUT)
                assert r.status_code == 503
                assert r.text
        assert upstream.hits == []
        assert proxy.counts == {"503": 3}


def test_p429_sets_retry_after(upstream: _Upstream) -> None:
    with FaultProxy(upstream.base, FaultPlan(p_429=1.0, retry_after="7")) as proxy:
        r = requests.post(proxy.base_url + "/dicom-web/studies", data=b"abc", timeout=TIMEOUT)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "7"
        assert upstream.hits == []
        assert proxy.counts == {"429": 1}


def test_drop_closes_without_response(upstream: _Upstream) -> None:
    with FaultProxy(upstream.base, FaultPlan(p_drop=1.0)) as proxy:
        with pytest.raises(requests.ConnectionError):
            requests.post(proxy.base_url + "/dicom-web/studies", data=b"abc", timeout=TIMEOUT)
        assert upstream.hits == []
        assert proxy.counts == {"drop": 1}


def test_drop_after_forward_reaches_upstream(upstream: _Upstream) -> None:
    with FaultProxy(upstream.base, FaultPlan(p_drop_after_forward=1.0)) as proxy:
        with pytest.raises(requests.ConnectionError):
            requests.post(proxy.base_url + "/dicom-web/studies", data=b"abcd", timeout=TIMEOUT)
        assert len(upstream.hits) == 1
        assert upstream.hits[0]["length"] == 4
        assert proxy.counts == {"drop_after_forward": 1}


def test_get_is_never_faulted_by_default(upstream: _Upstream) -> None:
    plan = FaultPlan(p_503=0.25, p_429=0.25, p_drop=0.25, p_drop_after_forward=0.25)
    with FaultProxy(upstream.base, plan) as proxy:
        for _ in range(10):
            r = requests.get(proxy.base_url + "/dicom-web/studies/1/instances", timeout=TIMEOUT)
            assert r.status_code == 200
        assert len(upstream.hits) == 10
        assert proxy.counts == {"forwarded": 10}


def _outcomes(upstream: _Upstream, plan: FaultPlan, n: int) -> list[int]:
    with FaultProxy(upstream.base, plan) as proxy:
        with requests.Session() as s:
            return [
                s.post(proxy.base_url + "/s", data=b"x", timeout=TIMEOUT).status_code
                for _ in range(n)
            ]


def test_seeded_plan_is_reproducible(upstream: _Upstream) -> None:
    plan = FaultPlan(p_503=0.5, seed=42)
    first = _outcomes(upstream, plan, 40)
    second = _outcomes(upstream, plan, 40)
    assert first == second
    assert set(first) == {201, 503}
    assert _outcomes(upstream, FaultPlan(p_503=0.5, seed=43), 40) != first


def test_rejects_bad_probability() -> None:
    with pytest.raises(ValueError):
        FaultPlan(p_drop=1.5)
