"""A reverse proxy for retrieve tests: answers 500 or cuts bodies where a rule says so.

``FaultProxy`` (fault_proxy.py) injects faults into uploads at random; retrieval needs other
faults, aimed at chosen resources: a 500 that persists for one instance (Orthanc's answer to a
transcode it cannot do), a storm of 500s, a body cut after N bytes with the full Content-Length
announced (a connection lost mid-transfer), or a slow answer (to kill a job mid-run).

    def rule(method, path, seen):      # seen: how many requests for this path so far (1-based)
        return "500" if "/instances/1.2.3" in path else "forward"

    with WadoProxy(orthanc.rest_url, rule) as proxy:
        url = proxy.base_url + "/dicom-web"

A rule returns ``forward``, ``500``, ``503``, ``cut:N`` (send the first N bytes of the body, then
close), or ``slow:S`` (wait S seconds, then forward). Stdlib only.
"""

from __future__ import annotations

import collections
import http.client
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from loopback_server import LoopbackHTTPServer

Rule = Callable[[str, str, int], str]
_SKIP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        proxy = self.server.proxy
        action = proxy.decide(self.command, self.path)
        if action in ("500", "503"):
            body = f'{{"Message": "proxy: injected {action}"}}'.encode()
            self.send_response_only(int(action))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if action.startswith("slow:"):
            time.sleep(float(action[5:]))
        conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _SKIP | {"host"}}
            conn.request(self.command, proxy.prefix + self.path, None, headers)
            resp = conn.getresponse()
            body = resp.read()
            out_headers = resp.getheaders()
            status = resp.status
        finally:
            conn.close()
        self.send_response_only(status)
        for name, value in out_headers:
            if name.lower() not in _SKIP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if action.startswith("cut:"):
            self.wfile.write(body[: int(action[4:])])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)


class _Server(LoopbackHTTPServer):
    def __init__(self, proxy: WadoProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)


class WadoProxy:
    """Relays GETs to ``upstream`` (an http:// root), applying ``rule`` to each."""

    def __init__(self, upstream: str, rule: Rule) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.rule = rule
        self.seen: collections.Counter[str] = collections.Counter()
        self.actions: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self.base_url = ""

    def decide(self, method: str, path: str) -> str:
        with self._lock:
            self.seen[path] += 1
            action = self.rule(method, path, self.seen[path])
            self.actions[action.split(":")[0]] += 1
        return action

    def __enter__(self) -> WadoProxy:
        self._server = _Server(self)
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.close_all()
            self._server.server_close()
            self._server = None
