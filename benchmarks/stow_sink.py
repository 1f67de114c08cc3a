"""A zero-cost STOW-RS sink for benchmarks.

The benchmark points a DICOMweb client at this server to measure the client's own overhead:
every STOW-RS request is answered at once, as cheaply as possible, yet correctly enough that
the client can classify each instance as stored. SOP Class/Instance UIDs are taken from the
Part 10 File Meta Information, parsed by hand (no pydicom); nothing is kept. Bodies are read
as a stream: only the first ``HEAD_BYTES`` of each part are held (enough for any File Meta
group), so a 1 GB instance costs the sink a few megabytes. QIDO-RS ``GET /dicom-web/studies``
and ``GET /dicom-web/studies/{study}/instances`` always answer ``[]``; ``GET /_sink/counters``
gives the counters as JSON. STOW is also accepted on Google's path form
(``/projects/.../dicomStores/.../dicomWeb/studies``). A request of
``type="application/dicom+json"`` (JSON metadata + JPEG, ``pipelines.store_json_jpeg``) is
answered from its metadata part.

Run as a process: ``python benchmarks/stow_sink.py --port 0`` prints
``LISTENING http://127.0.0.1:PORT`` and serves forever. Or import ``StowSink``.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import struct
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

# Run as a script from benchmarks/, imported by tests: the shared server base is in tests/fakes.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fakes"))
from loopback_server import LoopbackHTTPServer  # noqa: E402

_LONG_VRS = frozenset({b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"})
# Also Google's path form (``UploadToDicomStore`` with its client's base URL pointed here).
_STOW_PATH = re.compile(
    r"^(?:/dicom-web|/projects/[^/]+/locations/[^/]+/datasets/[^/]+/dicomStores/[^/]+/dicomWeb)"
    r"/studies(?:/[^/]+)?/?$"
)
COUNTERS_PATH = "/_sink/counters"  # GET: the counters as JSON (not counted as a request)
_QIDO_PATH = re.compile(r"^/dicom-web/studies(?:/[^/]+/instances)?/?$")
HEAD_BYTES = 64 * 1024  # of each part kept for _scan_meta; the rest is read and dropped
_READ_SIZE = 1 << 20
_MAX_HEADERS = 64 * 1024
_PROCESSING_FAILURE = 0x0110
_CLS, _SOP = "00081150", "00081155"


def _ui(uid: str | None) -> dict[str, object]:
    return {"vr": "UI", "Value": [uid]}


def _scan_meta(buf: bytes, start: int, end: int) -> tuple[str | None, str | None, bool]:
    """Scan the File Meta group of the Part 10 object in ``buf[start:end]`` without copying it.

    Returns ``(sop_class_uid, sop_instance_uid, ok)``; ``ok`` is true only when the whole meta
    group parsed and both UIDs are non-empty. UIDs found before a parse error are still given.
    """
    cls: str | None = None
    sop: str | None = None
    if end - start < 132 or buf[start + 128 : start + 132] != b"DICM":
        return None, None, False
    pos = start + 132
    meta_end: int | None = None  # from (0002,0000) group length, when present
    while pos + 8 <= end:
        group, elem = struct.unpack_from("<HH", buf, pos)
        if group != 2:
            break
        vr = buf[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > end:
                return cls, sop, False
            (length,) = struct.unpack_from("<I", buf, pos + 8)
            value_start = pos + 12
        elif vr.isalpha() and vr.isupper():
            (length,) = struct.unpack_from("<H", buf, pos + 6)
            value_start = pos + 8
        else:
            return cls, sop, False  # not explicit VR little endian
        pos = value_start + length
        if pos > end:
            return cls, sop, False
        if elem == 0 and length == 4:
            meta_end = pos + struct.unpack_from("<I", buf, value_start)[0]
        elif elem == 2 or elem == 3:
            try:
                value = buf[value_start:pos].rstrip(b"\x00 ").decode("ascii")
            except UnicodeDecodeError:
                return cls, sop, False
            cls, sop = (value, sop) if elem == 2 else (cls, value)
    else:  # the buffer ended: only fine at an element boundary at the end of the group
        if pos != end or (meta_end is not None and pos < meta_end):
            return cls, sop, False
    return cls, sop, bool(cls and sop)


def sop_uids_from_part10(data: bytes) -> tuple[str, str] | None:
    """Return ``(MediaStorageSOPClassUID, MediaStorageSOPInstanceUID)`` or None if unparsable."""
    cls, sop, ok = _scan_meta(data, 0, len(data))
    return (cls, sop) if ok and cls and sop else None


class PartHeads:
    """Split a ``multipart/related`` body fed chunk by chunk, keeping each part's first bytes.

    ``heads`` gets the first ``keep`` bytes of each part's content, in order. The preamble is
    skipped; after each delimiter line come the part's headers up to a blank line (at most
    ``_MAX_HEADERS`` bytes, or the body is taken to end there); a part without a closing
    delimiter runs to the end of the body; the epilogue is ignored. Memory is bounded by
    ``keep`` plus one chunk, whatever the body's size.
    """

    def __init__(self, boundary: bytes, keep: int = HEAD_BYTES) -> None:
        self._delim = b"--" + boundary
        self._next = b"\r\n" + self._delim
        self._keep = keep
        self._buf = bytearray()
        self._state = "preamble"  # preamble -> after_delim <-> content -> done
        self._head = bytearray()
        self.heads: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        while self._step():
            pass

    def finish(self) -> list[bytes]:
        if self._state == "content":  # no closing delimiter: take the rest
            self._take(len(self._buf))
            self._end_part()
        self._state = "done"
        self._buf.clear()
        return self.heads

    def _step(self) -> bool:
        """Advance as far as the buffer allows; False when more input is needed."""
        buf = self._buf
        if self._state == "preamble":
            pos = buf.find(self._delim)
            if pos < 0:
                del buf[: max(0, len(buf) - len(self._delim) + 1)]
                return False
            del buf[: pos + len(self._delim)]
            self._state = "after_delim"
            return True
        if self._state == "after_delim":
            if len(buf) < 2:
                return False
            if buf.startswith(b"--"):
                self._state = "done"
                return False
            line_end = buf.find(b"\r\n")
            headers_end = buf.find(b"\r\n\r\n", line_end) if line_end >= 0 else -1
            if headers_end < 0:
                if len(buf) > _MAX_HEADERS:
                    self._state = "done"
                return False
            del buf[: headers_end + 4]
            self._state = "content"
            return True
        if self._state == "content":
            end = buf.find(self._next)
            if end < 0:
                self._take(max(0, len(buf) - len(self._next) + 1))
                return False
            self._take(end)
            del buf[: len(self._next)]
            self._end_part()
            self._state = "after_delim"
            return True
        buf.clear()  # done: ignore the epilogue
        return False

    def _take(self, n: int) -> None:
        room = self._keep - len(self._head)
        if room > 0:
            self._head += self._buf[: min(n, room)]
        del self._buf[:n]

    def _end_part(self) -> None:
        self.heads.append(bytes(self._head))
        self._head = bytearray()


def _boundary(content_type: str) -> bytes | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value.encode("latin-1") if value else None
    return None


class _SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _SinkServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, status: int, reason: str, body: bytes, ctype: str) -> None:
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        )
        if self.close_connection:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode("latin-1") + b"\r\n" + body)

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body in chunks of at most 1 MB (raises ValueError if malformed)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while size := int(self.rfile.readline(65537).split(b";", 1)[0].strip(), 16):
                yield from self._read_exactly(size)
                self.rfile.readline(65537)
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        yield from self._read_exactly(int(self.headers.get("Content-Length") or 0))

    def _read_exactly(self, length: int) -> Iterator[bytes]:
        while length > 0:
            chunk = self.rfile.read(min(length, _READ_SIZE))
            if not chunk:
                return  # the client went away: what came is all there is
            length -= len(chunk)
            yield chunk

    def _part_heads(
        self, media: str, boundary: bytes | None, first_only: bool = False
    ) -> list[bytes] | None:
        """Read the whole body; the first bytes of each part, or None when not STOW content.

        ``first_only``: the first part's alone, the rest of the body read and dropped unparsed
        (a JSON + JPEG request is answered from its metadata part: parsing the JPEG parts would
        make the sink cost as much per byte as a parser in Python does)."""
        if media == "application/dicom":
            head = bytearray()
            for chunk in self._body_chunks():
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
            return [bytes(head)]
        if media == "multipart/related" and boundary:
            parts = PartHeads(boundary)
            for chunk in self._body_chunks():
                if first_only and parts.heads:
                    continue  # drained: the body is read to its end all the same
                parts.feed(chunk)
            return parts.finish()[:1] if first_only else parts.finish()
        for _ in self._body_chunks():
            pass
        return None

    def do_GET(self) -> None:
        if self.path == COUNTERS_PATH:  # the benchmark checks every instance arrived
            with self.server.sink._lock:
                body = json.dumps(dict(self.server.sink.counters)).encode()
            return self._reply(200, "OK", body, "application/json")
        self.server.sink.count(requests=1, qido_requests=1)
        if _QIDO_PATH.match(self.path.split("?", 1)[0]):
            self._reply(200, "OK", b"[]", "application/dicom+json")
        else:
            self._reply(404, "Not Found", b"not found\n", "text/plain")

    def do_POST(self) -> None:
        sink = self.server.sink
        sink.count(requests=1)
        ctype = self.headers.get("Content-Type", "")
        media = ctype.split(";", 1)[0].strip().lower()
        stow_path = bool(_STOW_PATH.match(self.path.split("?", 1)[0]))
        try:
            json_request = _root_type(ctype) == "application/dicom+json"
            heads = self._part_heads(media, _boundary(ctype), json_request) if stow_path else None
            if not stow_path:
                for _ in self._body_chunks():
                    pass
        except ValueError:
            self.close_connection = True
            return self._reply(400, "Bad Request", b"malformed body\n", "text/plain")
        if not stow_path:
            return self._reply(404, "Not Found", b"not found\n", "text/plain")
        if heads is None:
            return self._reply(415, "Unsupported Media Type", b"bad content type\n", "text/plain")
        if not heads:
            return self._reply(400, "Bad Request", b"no parts\n", "text/plain")
        prefix = sink.base_url + "/dicom-web/studies/x/series/x/instances/"
        stored: list[dict[str, object]] = []
        failed: list[dict[str, object]] = []
        if json_request:  # JSON metadata + bulk data
            return self._reply_json_metadata(heads, prefix)
        for head in heads:
            cls, sop, ok = _scan_meta(head, 0, len(head))
            if ok:
                url = {"vr": "UR", "Value": [f"{prefix}{sop}"]}
                stored.append({_CLS: _ui(cls), _SOP: _ui(sop), "00081190": url})
            elif sop:
                failure = {"vr": "US", "Value": [_PROCESSING_FAILURE]}
                failed.append({_CLS: _ui(cls or ""), _SOP: _ui(sop), "00081197": failure})
        result: dict[str, object] = {}
        if stored:
            result["00081199"] = {"vr": "SQ", "Value": stored}
        if failed:
            result["00081198"] = {"vr": "SQ", "Value": failed}
        sink.count(stow_requests=1, instances=len(stored), failed=len(heads) - len(stored))
        status, reason = (200, "OK") if len(stored) == len(heads) else (409, "Conflict")
        self._reply(status, reason, json.dumps(result).encode(), "application/dicom+json")

    def _reply_json_metadata(self, heads: list[bytes], prefix: str) -> None:
        """JSON + JPEG STOW (pipelines.store_json_jpeg): instances named by the first part."""
        try:
            instances = json.loads(heads[0])
            uids = [(i["00080016"]["Value"][0], i["00080018"]["Value"][0]) for i in instances]
        except (ValueError, KeyError, IndexError, TypeError):
            return self._reply(400, "Bad Request", b"bad metadata part\n", "text/plain")
        stored = [
            {_CLS: _ui(cls), _SOP: _ui(sop), "00081190": {"vr": "UR", "Value": [prefix + sop]}}
            for cls, sop in uids
        ]
        self.server.sink.count(stow_requests=1, instances=len(stored))
        body = json.dumps({"00081199": {"vr": "SQ", "Value": stored}}).encode()
        self._reply(200, "OK", body, "application/dicom+json")


def _root_type(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "type":
            return value.strip().strip('"').lower()
    return ""


class _SinkServer(LoopbackHTTPServer):
    request_queue_size = 128

    def __init__(self, sink: StowSink, host: str, port: int) -> None:
        self.sink = sink
        super().__init__((host, port), _SinkHandler)


class StowSink:
    """STOW-RS sink on ``host:port`` (port 0 picks a free one).

    ``counters`` keys: ``requests``, ``stow_requests``, ``qido_requests``, ``instances``
    (parts answered as stored) and ``failed`` (parts that did not parse).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.counters: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._server = _SinkServer(self, host, port)
        bound_host, bound_port = self._server.server_address[:2]
        if isinstance(bound_host, bytes):
            bound_host = bound_host.decode("ascii")
        self.base_url = f"http://{bound_host}:{bound_port}"
        self._thread: threading.Thread | None = None

    def count(self, **deltas: int) -> None:
        with self._lock:
            self.counters.update(deltas)

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.1)

    def start(self) -> StowSink:
        self._thread = threading.Thread(target=self.serve_forever, name="stow-sink", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() would block if serve_forever never ran
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.close_all()
        self._server.server_close()

    def __enter__(self) -> StowSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    sink = StowSink(args.host, args.port)
    print(f"LISTENING {sink.base_url}", flush=True)
    try:
        sink.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
