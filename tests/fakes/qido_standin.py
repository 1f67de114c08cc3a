"""Loopback stand-in for the QIDO-RS side of a Google DICOM store, with caps a test can shrink.

What no real server here does, and the search client must handle: Google's documented caps on
``limit`` (a larger limit is cut down silently: the worst case for a client that ends on a short
page) and on ``offset`` (past it: 400), percent-decoded query values (``%5E`` and ``^`` mean the
same), and failing pages on demand. Matching follows Google's conformance statement: exact
values, ``*``/``?`` wildcards, StudyDate ranges, UID lists; results in a stable order.

Datasets are DICOM JSON objects (``pydicom.Dataset.to_json_dict()``), one per instance.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from loopback_server import LoopbackHTTPServer

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
STUDY_ATTRS = frozenset(
    {"00080020", "00080030", "00080050", "00080061", "00080090", "00100010", "00100020"}
    | {STUDY_UID, "00200010"}
)
SERIES_ATTRS = STUDY_ATTRS | {"00080060", SERIES_UID, "00200011"}
INSTANCE_ATTRS = SERIES_ATTRS | {SOP_UID, "00080016", "00200013"}
LEVEL_ATTRS = {"studies": STUDY_ATTRS, "series": SERIES_ATTRS, "instances": INSTANCE_ATTRS}
LEVEL_KEY = {"studies": (STUDY_UID,), "series": (STUDY_UID, SERIES_UID)}
LEVEL_KEY["instances"] = (STUDY_UID, SERIES_UID, SOP_UID)


@dataclass
class QidoCaps:
    """Server behaviour a test can change while the server runs."""

    max_limit: int = 5000
    max_offset: int = 1_000_000
    # Fail (HTTP ``status``) the requests for which this returns True; (path, params) given.
    fail: Callable[[str, dict[str, str]], bool] | None = None
    fail_status: int = 503


@dataclass
class QidoStandin:
    """A QIDO-RS server on 127.0.0.1 under a Google-style DICOMweb path."""

    datasets: list[dict[str, Any]] = field(default_factory=list)
    caps: QidoCaps = field(default_factory=QidoCaps)
    requests: list[str] = field(default_factory=list)  # raw request targets, as received
    dicomweb_path: str = "/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb"
    _server: LoopbackHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def dicomweb_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.dicomweb_path}"

    def add(self, datasets: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            self.datasets.extend(datasets)

    def __enter__(self) -> QidoStandin:
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.close_all()
            self._server.server_close()
            self._server = None

    # --- QIDO semantics -----------------------------------------------------------------------

    def search(self, level: str, scope: dict[str, str], params: list[tuple[str, str]]) -> list[Any]:
        filters: dict[str, str] = dict(scope)
        include: set[str] = set()
        limit, offset = 1000 if level == "instances" else 100, 0
        for key, value in params:
            if key == "limit":
                limit = int(value)
            elif key == "offset":
                offset = int(value)
            elif key == "includefield":
                include.update(v.strip().upper() for v in value.split(","))
            elif key != "fuzzymatching":
                filters[key.upper()] = value
        if offset > self.caps.max_offset:
            raise _Refused(400, "offset too large")
        limit = min(limit, self.caps.max_limit)  # silently, as the worst case for a client
        attrs = LEVEL_ATTRS[level] | include
        keyed: dict[tuple[str, ...], dict[str, Any]] = {}
        with self._lock:
            rows = list(self.datasets)
        for ds in rows:
            if all(_matches(ds.get(tag), value) for tag, value in filters.items()):
                key = tuple(_first(ds.get(t)) for t in LEVEL_KEY[level])
                keyed.setdefault(key, ds)
        found = [keyed[k] for k in sorted(keyed)]
        page = found[offset : offset + limit]
        return [{t: v for t, v in ds.items() if "ALL" in include or t in attrs} for ds in page]


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _first(element: Any) -> str:
    values = (element or {}).get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):  # a person name
        return str(value.get("Alphabetic", ""))
    return str(value)


def _matches(element: Any, pattern: str) -> bool:
    if pattern == "":
        return True
    value = _first(element)
    vr = (element or {}).get("vr", "")
    if vr == "UI" and "," in pattern:
        return value in pattern.split(",")
    if vr == "DA" and "-" in pattern:
        low, _, high = pattern.partition("-")
        return bool(value) and (not low or value >= low) and (not high or value <= high)
    if "*" in pattern or "?" in pattern:
        return re.fullmatch(fnmatch.translate(pattern), value) is not None
    return value == pattern


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: QidoStandin

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        standin = self.owner
        with standin._lock:
            standin.requests.append(self.path)
        url = urlsplit(self.path)
        params = parse_qsl(url.query, keep_blank_values=True)  # percent-decodes, like Google
        path = unquote(url.path)
        try:
            if not path.startswith(standin.dicomweb_path):
                raise _Refused(404, "unknown path")
            level, scope = _route(path[len(standin.dicomweb_path) :])
            fail = standin.caps.fail
            if fail is not None and fail(path, dict(params)):
                raise _Refused(standin.caps.fail_status, "injected failure")
            body = json.dumps(standin.search(level, scope, params)).encode()
            self._send(200, "application/dicom+json", body)
        except _Refused as exc:
            self._send(exc.status, "application/json", json.dumps({"error": str(exc)}).encode())
        except ValueError:
            self._send(400, "application/json", b'{"error": "bad parameter"}')

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _route(rest: str) -> tuple[str, dict[str, str]]:
    parts = [p for p in rest.split("/") if p]
    if parts in (["studies"], ["series"], ["instances"]):
        return parts[0], {}
    if len(parts) == 3 and parts[0] == "studies" and parts[2] in ("series", "instances"):
        return parts[2], {STUDY_UID: parts[1]}
    if len(parts) == 5 and parts[0] == "studies" and parts[2] == "series":
        if parts[4] == "instances":
            return "instances", {STUDY_UID: parts[1], SERIES_UID: parts[3]}
    raise _Refused(404, "unsupported QIDO path")
