"""Loopback stand-in for a Google Cloud Healthcare API DICOM store, for tests.

It covers only what no real DICOMweb server available here does the Google way: the single-part
``application/dicom`` STOW form, the ``Storage-Class`` header, XML STOW answers by default, 409 when
any instance was not stored (with Google's failure-detail tag), 403 for missing resources, bearer
tokens and an OAuth2 token endpoint for ``authorized_user`` credentials. Everything else belongs to
real servers (Orthanc) in the integration tests.

The wire format follows Google's documentation: the DICOM conformance statement and the "Using the
DICOMweb standard" guide (see ``/work/shared/notes/google-dicom-store.md``).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import astuple, dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape, quoteattr

from pydicom import dcmread
from pydicom.datadict import keyword_for_tag

STORAGE_CLASSES = frozenset({"STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"})
FAILURE_PROCESSING = 0x0110  # 272: Google reports "already exists" as a processing failure
FAILURE_STUDY_MISMATCH = 0xA900  # 43264: the instance's study differs from the URL's
_DETAIL_TAG_XML = "00090097"  # Google puts its failure text here in XML answers...
_DETAIL_TAG_JSON = "00091097"  # ...and here in JSON answers (documented difference).
_QIDO_TAGS = ("0020000D", "0020000E", "00080018", "00080016")  # in _Uids field order
# Google's error bodies carry gRPC canonical codes; 415 has none, INVALID_ARGUMENT is closest.
_GRPC_STATUS = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
Key = tuple[str, str, str]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body_length: int


@dataclass(frozen=True)
class StoredBlob:
    data: bytes
    storage_class: str


@dataclass(frozen=True)
class _Attr:
    """One data element of a STOW answer; value is a string, an int, or a list of items."""

    tag: str
    vr: str
    value: str | int | list[list[_Attr]]


@dataclass(frozen=True)
class _Uids:
    study: str
    series: str
    sop: str
    sop_class: str

    @property
    def key(self) -> Key:
        return (self.study, self.series, self.sop)


class _BadRequest(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _read_uids(data: bytes) -> _Uids | None:
    """UIDs of a Part 10 instance; None when unparseable or incomplete (unattributable)."""
    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True)
    except Exception:  # pydicom raises many types on garbage; all mean "not a usable instance"
        return None
    meta = getattr(ds, "file_meta", None)
    meta_class = meta.get("MediaStorageSOPClassUID", "") if meta is not None else ""
    values = [str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID")]
    values += [str(ds.get("SOPInstanceUID", "") or ""), str(ds.get("SOPClassUID", meta_class))]
    return _Uids(*values) if all(values) else None


def _split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """Part payloads of a multipart body; tolerates a preamble, part headers or none, LWSP."""
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))
    parts: list[bytes] = []
    for piece in pieces[1:]:  # pieces[0] is the preamble
        if piece.startswith(b"--"):
            return parts
        _, crlf, rest = piece.partition(b"\r\n")  # drop transport padding after the delimiter
        if not crlf:
            raise _BadRequest(400, "malformed multipart delimiter line")
        # The leading CRLF lets a part without headers end its (empty) header block too.
        _headers, sep, payload = (b"\r\n" + rest).partition(b"\r\n\r\n")
        if not sep:
            raise _BadRequest(400, "multipart part without header terminator")
        parts.append(payload)
    raise _BadRequest(400, "multipart body lacks its closing delimiter")


def _render_xml(attrs: list[_Attr]) -> str:
    def render(items: list[_Attr]) -> str:
        out = []
        for a in items:
            kw = keyword_for_tag(int(a.tag, 16))  # "" for Google's private detail tag
            head = f'<DicomAttribute tag="{a.tag}" vr="{a.vr}"'
            head += f' keyword="{kw}">' if kw else ">"
            if isinstance(a.value, list):
                items = enumerate(a.value, 1)
                inner = "".join(f'<Item number="{n}">{render(it)}</Item>' for n, it in items)
            else:
                inner = f'<Value number="1">{escape(str(a.value))}</Value>'
            out.append(f"{head}{inner}</DicomAttribute>")
        return "".join(out)

    ns = quoteattr("http://dicom.nema.org/PS3.19/models/NativeDICOM")
    head = f'<?xml version="1.0" encoding="UTF-8"?>\n<NativeDicomModel xmlns={ns}>'
    return f"{head}{render(attrs)}</NativeDicomModel>\n"


def _render_json(attrs: list[_Attr]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in attrs:
        tag = _DETAIL_TAG_JSON if a.tag == _DETAIL_TAG_XML else a.tag
        if isinstance(a.value, list):
            out[tag] = {"vr": a.vr, "Value": [_render_json(item) for item in a.value]}
        else:
            out[tag] = {"vr": a.vr, "Value": [a.value]}
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: GoogleStandin


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients' connection pools are exercised
    timeout = 60  # idle keep-alive connections must not pin threads forever

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the default access log is noise in test output

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                        pass  # trailers are irrelevant here
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)  # CRLF ending the chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))  # always: keep-alive depends on it
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, code: int, payload: object, content_type: str = "application/json") -> None:
        self.send(code, content_type, json.dumps(payload).encode())

    def send_error_json(self, code: int, message: str) -> None:
        status = _GRPC_STATUS.get(code, "INVALID_ARGUMENT")
        self.send_json(code, {"error": {"code": code, "message": message, "status": status}})

    def handle_any(self) -> None:
        standin = cast(_Server, self.server).standin
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True  # the stream position is unknown now
            self.send_error_json(400, "unreadable request body")
            return
        url = urlsplit(self.path)
        headers = dict(self.headers.items())  # keeps the client's header-name case
        standin._record(RecordedRequest(self.command, url.path, url.query, headers, len(body)))
        try:
            self._route(standin, url.path, url.query, body)
        except _BadRequest as exc:
            self.send_error_json(exc.code, str(exc))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    def _route(self, standin: GoogleStandin, path: str, query: str, body: bytes) -> None:
        if path == "/token" and self.command == "POST":
            form = parse_qs(body.decode("utf-8", "replace"))
            if form.get("grant_type") != ["refresh_token"]:
                self.send_json(400, {"error": "unsupported_grant_type"})
                return
            token = standin.expected_token or "standin-token"
            self.send_json(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})
            return
        if path.startswith("/v1/") and standin.expected_token is not None:
            if self.headers.get("Authorization") != f"Bearer {standin.expected_token}":
                raise _BadRequest(401, "Request had invalid authentication credentials.")
        if not path.startswith(standin.dicomweb_path):
            raise _BadRequest(404, f"unknown path {path}")
        rest = path[len(standin.dicomweb_path) :]
        if self.command == "POST" and (m := re.fullmatch(r"/studies(?:/([^/]+))?/?", rest)):
            self._stow(standin, m.group(1), body)
        elif self.command == "GET" and re.fullmatch(r"/studies/?", rest):
            self._search_studies(standin)
        elif self.command == "GET" and (m := re.fullmatch(r"/studies/([^/]+)/instances/?", rest)):
            self._qido(standin, m.group(1), parse_qs(query))
        elif self.command == "GET" and (
            m := re.fullmatch(r"/studies/([^/]+)/series/([^/]+)/instances/([^/]+)/?", rest)
        ):
            self._wado(standin, (m.group(1), m.group(2), m.group(3)))
        else:
            raise _BadRequest(404, f"unsupported {self.command} {path}")

    def _stow(self, standin: GoogleStandin, url_study: str | None, body: bytes) -> None:
        storage_class = self.headers.get("Storage-Class", "STANDARD")
        if storage_class not in STORAGE_CLASSES:
            raise _BadRequest(400, f"invalid Storage-Class {storage_class!r}")
        ctype = Message()  # its parser handles quoted and unquoted parameters
        ctype["Content-Type"] = self.headers.get("Content-Type", "")
        kind = (ctype.get_content_type(), ctype.get_param("type"))
        if kind[0] == "application/dicom":
            parts = [body]  # Google's single-part convenience form
        elif kind == ("multipart/related", "application/dicom"):
            boundary = ctype.get_param("boundary")
            if not isinstance(boundary, str) or not boundary:
                raise _BadRequest(400, "multipart/related without boundary")
            parts = _split_multipart(body, boundary)
        else:
            raise _BadRequest(415, f"unsupported Content-Type {self.headers.get('Content-Type')!r}")
        if not any(parts):
            raise _BadRequest(400, "no DICOM instance in request")

        stored: list[list[_Attr]] = []
        failed: list[list[_Attr]] = []
        unattributed = 0
        first_study = url_study
        for data in parts:
            uids = _read_uids(data)
            if uids is None:
                unattributed += 1  # Google cannot name it either, so no sequence item
                continue
            first_study = first_study or uids.study
            ref = [_Attr("00081150", "UI", uids.sop_class), _Attr("00081155", "UI", uids.sop)]
            if url_study is not None and uids.study != url_study:
                reason, detail = FAILURE_STUDY_MISMATCH, "study instance UID mismatch"
            elif not standin._add(uids.key, StoredBlob(data, storage_class)):
                reason, detail = FAILURE_PROCESSING, "Instance already exists"
            else:
                url = f"{standin.dicomweb_url}/studies/{uids.study}/series/{uids.series}"
                stored.append([*ref, _Attr("00081190", "UR", f"{url}/instances/{uids.sop}")])
                continue
            why = [_Attr("00081197", "US", reason), _Attr(_DETAIL_TAG_XML, "LO", detail)]
            failed.append([*ref, *why])

        attrs: list[_Attr] = []
        if first_study:
            attrs.append(_Attr("00081190", "UR", f"{standin.dicomweb_url}/studies/{first_study}"))
        if failed:
            attrs.append(_Attr("00081198", "SQ", failed))
        if stored:
            attrs.append(_Attr("00081199", "SQ", stored))
        code = 409 if failed or unattributed else 200
        if "application/dicom+json" in self.headers.get("Accept", ""):
            self.send_json(code, _render_json(attrs), "application/dicom+json")
        else:
            self.send(code, "application/dicom+xml", _render_xml(attrs).encode("utf-8"))

    def _search_studies(self, standin: GoogleStandin) -> None:
        """Study-level search, enough for a client's "does the store answer" check."""
        with standin._lock:
            studies = sorted({k[0] for k in standin.instances})
        self.send_json(
            200,
            [{"0020000D": {"vr": "UI", "Value": [s]}} for s in studies],
            "application/dicom+json",
        )

    def _qido(self, standin: GoogleStandin, study: str, params: dict[str, list[str]]) -> None:
        try:
            limit = min(int(params.get("limit", ["1000"])[0]), 50000)
            offset = int(params.get("offset", ["0"])[0])
        except ValueError as exc:
            raise _BadRequest(400, "limit and offset must be integers") from exc
        if limit < 1 or not 0 <= offset <= 1_000_000:
            raise _BadRequest(400, "limit must be positive and offset within 0..1000000")
        with standin._lock:
            keys = sorted((k for k in standin.instances if k[0] == study), key=lambda k: k[2])
            blobs = [standin.instances[k] for k in keys[offset : offset + limit]]
        # Garbage a test put in directly has no searchable attributes, so it is left out.
        found = [u for blob in blobs if (u := _read_uids(blob.data)) is not None]
        page = [
            {t: {"vr": "UI", "Value": [v]} for t, v in zip(_QIDO_TAGS, astuple(u), strict=True)}
            for u in found
        ]
        self.send_json(200, page, "application/dicom+json")

    def _wado(self, standin: GoogleStandin, key: Key) -> None:
        with standin._lock:
            blob = standin.instances.get(key)
        if blob is None:  # Google answers 403, not 404, for a missing resource
            raise _BadRequest(403, "resource not found or permission denied")
        self.send(200, "application/dicom", blob.data)  # stored bytes, never transcoded


class GoogleStandin:
    """Fake Google DICOM store on 127.0.0.1; use as a context manager or start()/stop()."""

    # Subclasses may serve more routes (google_operations.py: deletes and operations).
    handler_class: type[BaseHTTPRequestHandler] = _Handler

    def __init__(
        self,
        *,
        project: str = "p",
        location: str = "l",
        dataset: str = "d",
        dicom_store: str = "s",
        expected_token: str | None = None,
    ) -> None:
        self.expected_token = expected_token
        self.dicomweb_path = (
            f"/v1/projects/{project}/locations/{location}/datasets/{dataset}"
            f"/dicomStores/{dicom_store}/dicomWeb"
        )
        self.requests: list[RecordedRequest] = []
        self.instances: dict[Key, StoredBlob] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def root_url(self) -> str:
        if self._server is None:
            raise RuntimeError("GoogleStandin is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def dicomweb_url(self) -> str:
        return self.root_url + self.dicomweb_path

    @property
    def token_url(self) -> str:
        return self.root_url + "/token"

    def start(self) -> GoogleStandin:
        if self._server is None:
            self._server = _Server(("127.0.0.1", 0), self.handler_class)
            self._server.standin = self
            # A short poll interval keeps stop() (and so every test teardown) fast.
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="google-standin", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> GoogleStandin:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def preload(self, data: bytes) -> None:
        """Put an instance in the store as if an earlier run had stored it (STANDARD class)."""
        uids = _read_uids(data)
        if uids is None:
            raise ValueError("preload needs a Part 10 instance with study, series and SOP UIDs")
        self._add(uids.key, StoredBlob(data, "STANDARD"))

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _add(self, key: Key, blob: StoredBlob) -> bool:
        """Store unless present; check and insert under one lock so concurrent STOWs agree."""
        with self._lock:
            if key in self.instances:
                return False
            self.instances[key] = blob
            return True
