"""A fault-injecting reverse proxy for integration tests.

``FaultProxy`` listens on 127.0.0.1 and sits in front of a real DICOMweb server (Orthanc).
For requests whose method is in ``FaultPlan.methods`` it injects, with seeded and therefore
reproducible probabilities, the failures a DICOMweb client must survive:

* ``503``: answer 503 Service Unavailable without forwarding;
* ``429``: answer 429 Too Many Requests with ``Retry-After`` without forwarding;
* ``drop``: read the request, then close the socket with no response at all;
* ``drop_after_forward``: forward the request (so it takes effect upstream), then close the
  client socket without answering -- the "lost response" case;
* ``bad_encoding``: forward, then answer with ``Content-Encoding: gzip`` on a plain body.

``FaultPlan.script`` fixes the outcomes of the first faultable requests (then the draws apply),
and requests under ``redirect_prefix`` are answered with a ``redirect_status`` redirect.

Everything else is relayed to the upstream server. Stdlib only.
"""

from __future__ import annotations

import collections
import http.client
import random
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from loopback_server import LoopbackHTTPServer

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
)


# order of the cumulative bands
_FAULTS = ("503", "429", "drop", "drop_after_forward", "bad_encoding")


def _is_hop_by_hop(name: str) -> bool:
    lowered = name.lower()
    return lowered in _HOP_BY_HOP or lowered.startswith("proxy-")


@dataclass(frozen=True)
class FaultPlan:
    """Per-request fault probabilities.

    One uniform draw per faultable request is compared against the cumulative bands
    ``p_503, p_429, p_drop, p_drop_after_forward`` (in that order), so the probabilities
    should sum to at most 1; the remainder is forwarded normally.
    """

    p_503: float = 0.0
    p_429: float = 0.0
    p_drop: float = 0.0
    p_drop_after_forward: float = 0.0
    p_bad_encoding: float = 0.0
    retry_after: str = "1"
    seed: int = 0
    methods: frozenset[str] = frozenset({"POST"})
    script: tuple[str, ...] = ()  # outcomes of the first faultable requests, in order
    # Any request under redirect_prefix gets a redirect_status answer pointing to
    # (redirect_to or the proxy's own base URL) + the rest of its path.
    redirect_status: int = 0
    redirect_prefix: str = "/moved"
    redirect_to: str = ""
    # A server that caps pages: a GET's ``limit`` is lowered to this before forwarding.
    page_cap: int = 0

    def __post_init__(self) -> None:
        for key in _FAULTS:
            if not 0.0 <= (value := getattr(self, "p_" + key)) <= 1.0:
                raise ValueError(f"p_{key} must be within [0, 1], got {value}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while size := int(self.rfile.readline(65537).split(b";", 1)[0].strip(), 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after the chunk data
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # discard trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send_simple(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        proxy = self.server.proxy
        headers = {
            name: value
            for name, value in self.headers.items()
            if not _is_hop_by_hop(name) and name.lower() not in ("host", "content-length")
        }
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        path = self.path
        if proxy.plan.page_cap and self.command == "GET" and "?" in path:
            route, _, query = path.partition("?")
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
            pairs = [
                (k, str(min(int(v), proxy.plan.page_cap)) if k == "limit" else v) for k, v in pairs
            ]
            path = f"{route}?{urllib.parse.urlencode(pairs)}"
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=300)
        try:
            conn.request(self.command, proxy.upstream_prefix + path, body, headers)
            resp = conn.getresponse()
            return resp.status, resp.reason, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _handle(self) -> None:
        proxy = self.server.proxy
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send_simple(400, "fault proxy: malformed request body\n")
            return
        if proxy.plan.redirect_status and self.path.startswith(proxy.plan.redirect_prefix):
            proxy.count("redirect")
            target = (proxy.plan.redirect_to or proxy.base_url) + self.path[
                len(proxy.plan.redirect_prefix) :
            ]
            self._send_simple(proxy.plan.redirect_status, "moved\n", {"Location": target})
            return
        outcome = proxy.decide(self.command)
        if outcome in ("503", "429", "drop"):
            proxy.count(outcome)  # counted before the client can observe the outcome
        if outcome == "503":
            self._send_simple(503, "fault proxy: injected 503\n")
        elif outcome == "429":
            self._send_simple(
                429, "fault proxy: injected 429\n", {"Retry-After": proxy.plan.retry_after}
            )
        elif outcome == "drop":
            self._drop()
        else:
            try:
                status, reason, headers, resp_body = self._forward(body)
            except (OSError, http.client.HTTPException) as exc:
                proxy.count("upstream_error")
                self._send_simple(502, f"fault proxy: upstream error: {exc!r}\n")
                return
            proxy.count(outcome)
            if outcome == "drop_after_forward":
                self._drop()
                return
            self.send_response_only(status, reason)
            no_body = self.command == "HEAD" or status in (204, 304) or status < 200
            for name, value in headers:
                if _is_hop_by_hop(name) or (name.lower() == "content-length" and not no_body):
                    continue
                if outcome == "bad_encoding" and name.lower() == "content-encoding":
                    continue
                self.send_header(name, value)
            if outcome == "bad_encoding":
                self.send_header("Content-Encoding", "gzip")
                resp_body = b"not gzip:" + resp_body  # even if the upstream compressed it
            if not no_body:
                self.send_header("Content-Length", str(len(resp_body)))
            self.end_headers()
            if not no_body:
                self.wfile.write(resp_body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class _ProxyServer(LoopbackHTTPServer):
    request_queue_size = 64

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)


class FaultProxy:
    """Reverse proxy on 127.0.0.1 that maps path P to ``upstream_base + P`` and injects faults.

    ``counts`` has one entry per handled request under exactly one of the keys
    ``"forwarded"``, ``"503"``, ``"429"``, ``"drop"``, ``"drop_after_forward"``
    (plus ``"upstream_error"`` when the upstream could not be reached; answered 502).
    """

    def __init__(self, upstream_base: str, plan: FaultPlan) -> None:
        parts = urllib.parse.urlsplit(upstream_base)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream_base must be an http:// URL, got {upstream_base!r}")
        self.upstream_base = upstream_base
        self.upstream_host: str = parts.hostname
        self.upstream_port: int = parts.port or 80
        self.upstream_prefix: str = parts.path.rstrip("/")
        self.plan = plan
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._rng = random.Random(plan.seed)
        self._scripted = 0
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def decide(self, method: str) -> str:
        """Return the outcome for one request: a fault key or ``"forwarded"``."""
        if method.upper() not in self.plan.methods:
            return "forwarded"
        with self._lock:
            if self._scripted < len(self.plan.script):
                self._scripted += 1
                return self.plan.script[self._scripted - 1]
            draw = self._rng.random()
        edge = 0.0
        for key in _FAULTS:
            edge += getattr(self.plan, "p_" + key)
            if draw < edge:
                return key
        return "forwarded"

    def count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def start(self) -> FaultProxy:
        if self._server is not None:
            raise RuntimeError("FaultProxy already started")
        self._server = _ProxyServer(self)
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_all()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
