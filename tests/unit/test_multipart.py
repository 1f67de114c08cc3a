"""Unit tests for transforms/multipart.py: exact body bytes, streaming reads, the wire."""

from __future__ import annotations

import email
import email.policy
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

import factory
import pytest
import requests

from transforms.dicomweb.multipart import (
    FileSegment,
    Part,
    StreamingBody,
    multipart_related,
    new_boundary,
)
from transforms.errors import SourceChangedError

BOUNDARY = "dicomweb-beam-0123456789abcdef"


@pytest.fixture
def ct_path() -> Path:
    return factory.testdata("CT_small.dcm")


@pytest.fixture
def mr_path() -> Path:
    return factory.testdata("MR_small.dcm")


def _read_all(body: StreamingBody, block: int) -> bytes:
    out = bytearray()
    while chunk := body.read(block):
        assert len(chunk) <= block
        out += chunk
    return bytes(out)


def _expected(parts: list[tuple[str, bytes, str | None]], boundary: str = BOUNDARY) -> bytes:
    out = b""
    for content_type, payload, location in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        out += b"Content-Type: " + content_type.encode() + b"\r\n"
        if location:
            out += b"Content-Location: " + location.encode() + b"\r\n"
        out += b"\r\n" + payload + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


def test_bytes_parts_give_the_hand_built_body() -> None:
    body, content_type = multipart_related(
        [Part("application/dicom", (b"first",)), Part("application/dicom", (b"",))],
        root_type="application/dicom",
        boundary=BOUNDARY,
    )
    expected = (
        b"--dicomweb-beam-0123456789abcdef\r\n"
        b"Content-Type: application/dicom\r\n"
        b"\r\n"
        b"first\r\n"
        b"--dicomweb-beam-0123456789abcdef\r\n"
        b"Content-Type: application/dicom\r\n"
        b"\r\n"
        b"\r\n"
        b"--dicomweb-beam-0123456789abcdef--\r\n"
    )
    assert body.read() == expected
    assert content_type == (
        'multipart/related; type="application/dicom"; boundary=dicomweb-beam-0123456789abcdef'
    )


def test_file_parts_with_prefix_and_content_location(ct_path: Path, mr_path: Path) -> None:
    ct, mr = ct_path.read_bytes(), mr_path.read_bytes()
    prefix = b"\x00" * 128 + b"DICM"
    parts = [
        Part("application/dicom", (FileSegment(str(ct_path), len(ct)),)),
        Part(
            "application/dicom",
            (prefix, FileSegment(str(mr_path), len(mr))),
            content_location="http://h/x/1",
        ),
    ]
    body, _ = multipart_related(parts, root_type="application/dicom", boundary=BOUNDARY)
    expected = _expected(
        [("application/dicom", ct, None), ("application/dicom", prefix + mr, "http://h/x/1")]
    )
    assert len(body) == len(expected)
    assert body.read() == expected
    assert body.tell() == len(expected)
    assert body.read() == b""
    assert body.read(10) == b""


def test_file_segment_sends_only_its_announced_size(ct_path: Path) -> None:
    ct = ct_path.read_bytes()
    body = StreamingBody([FileSegment(str(ct_path), 1000), b"tail"])
    assert len(body) == 1004
    assert body.read() == ct[:1000] + b"tail"


@pytest.mark.parametrize("block", [1, 7, 4096, 1 << 20])
def test_odd_block_sizes_give_identical_bytes(block: int, ct_path: Path, mr_path: Path) -> None:
    def make() -> StreamingBody:
        ct_size, mr_size = ct_path.stat().st_size, mr_path.stat().st_size
        parts = [
            Part("application/dicom", (FileSegment(str(ct_path), ct_size),)),
            Part("application/dicom", (b"x" * 13, FileSegment(str(mr_path), mr_size))),
        ]
        return multipart_related(parts, root_type="application/dicom", boundary=BOUNDARY)[0]

    reference = make().read()
    body = make()
    data = _read_all(body, block)
    assert data == reference
    assert len(data) == len(body)
    assert body.tell() == len(data)


def test_length_equals_bytes_read_for_many_shapes(tmp_path: Path) -> None:
    files = []
    for i, size in enumerate([0, 1, 8191, 8192, 8193, 70_000]):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
        files.append(FileSegment(str(path), size))
    parts = [Part("application/octet-stream", (f,)) for f in files]
    body, _ = multipart_related(parts, root_type="application/octet-stream", boundary="b")
    announced = len(body)
    assert len(_read_all(body, 4096)) == announced
    assert announced == sum(f.size for f in files) + len(
        _expected([("application/octet-stream", b"", None)] * len(files), "b")
    )


def test_iterating_gives_the_same_bytes(ct_path: Path) -> None:
    size = ct_path.stat().st_size
    body = StreamingBody([b"head", FileSegment(str(ct_path), size)])
    assert b"".join(body) == b"head" + ct_path.read_bytes()


def test_a_file_that_shrank_raises_source_changed(tmp_path: Path) -> None:
    path = tmp_path / "shrinks.dcm"
    path.write_bytes(b"a" * 5000)
    body, _ = multipart_related(
        [Part("application/dicom", (FileSegment(str(path), 5000),))],
        root_type="application/dicom",
        boundary=BOUNDARY,
    )
    path.write_bytes(b"a" * 4000)
    with pytest.raises(SourceChangedError) as info:
        _read_all(body, 1024)
    assert info.value.path == str(path)
    assert "5000" in info.value.message


def test_a_missing_file_raises_source_changed(tmp_path: Path) -> None:
    path = tmp_path / "gone.dcm"
    body = StreamingBody([b"prefix", FileSegment(str(path), 10)])
    assert body.read(6) == b"prefix"
    with pytest.raises(SourceChangedError) as info:
        body.read(1)
    assert info.value.path == str(path)
    assert "cannot open" in info.value.message


@dataclass
class TrackingOpener:
    opened: list[BinaryIO] = field(default_factory=list)

    def __call__(self, path: str) -> BinaryIO:
        f = io.BytesIO(Path(path).read_bytes())
        self.opened.append(f)
        return f


def test_files_are_opened_lazily_and_closed(ct_path: Path, mr_path: Path) -> None:
    opener = TrackingOpener()
    segments = [
        FileSegment(str(ct_path), ct_path.stat().st_size),
        FileSegment(str(mr_path), mr_path.stat().st_size),
    ]
    body = StreamingBody(segments, opener)
    assert opener.opened == []  # nothing is opened until the body is read
    body.read(10)
    assert len(opener.opened) == 1
    body.read()
    assert len(opener.opened) == 2
    assert all(f.closed for f in opener.opened)


def test_close_mid_file_closes_it(ct_path: Path) -> None:
    opener = TrackingOpener()
    body = StreamingBody([FileSegment(str(ct_path), ct_path.stat().st_size)], opener)
    body.read(100)
    body.close()
    assert opener.opened[0].closed


def test_new_boundary_is_unique_and_token_safe() -> None:
    boundaries = {new_boundary() for _ in range(100)}
    assert len(boundaries) == 100
    for b in boundaries:
        assert 1 <= len(b) <= 70  # RFC 2046
        assert all(c.isalnum() or c == "-" for c in b)


def test_stdlib_email_parser_reads_the_parts_back(ct_path: Path, mr_path: Path) -> None:
    ct, mr = ct_path.read_bytes(), mr_path.read_bytes()
    prefix = b"\x00" * 128 + b"DICM"
    body, content_type = multipart_related(
        [
            Part("application/dicom", (FileSegment(str(ct_path), len(ct)),)),
            Part("application/dicom", (prefix, FileSegment(str(mr_path), len(mr)))),
            Part("application/dicom", (b"\r\n--not-a-boundary\r\n",)),
        ],
        root_type="application/dicom",
        boundary=new_boundary(),
    )
    raw = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body.read()
    message = email.message_from_bytes(raw, policy=email.policy.HTTP)
    assert message.get_content_type() == "multipart/related"
    assert message.get_param("type") == "application/dicom"
    payloads = [part.get_payload(decode=True) for part in message.iter_parts()]
    assert [p.get_content_type() for p in message.iter_parts()] == ["application/dicom"] * 3
    assert payloads == [ct, prefix + mr, b"\r\n--not-a-boundary\r\n"]
    assert message.defects == []


# --- on the wire ---------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.received.append(  # type: ignore[attr-defined]
            Received({k.lower(): v for k, v in self.headers.items()}, body)
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def recorder() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_requests_sends_content_length_not_chunked(
    recorder: ThreadingHTTPServer, ct_path: Path, mr_path: Path
) -> None:
    ct, mr = ct_path.read_bytes(), mr_path.read_bytes()
    body, content_type = multipart_related(
        [
            Part("application/dicom", (FileSegment(str(ct_path), len(ct)),)),
            Part("application/dicom", (FileSegment(str(mr_path), len(mr)),)),
        ],
        root_type="application/dicom",
        boundary=BOUNDARY,
    )
    expected = _expected([("application/dicom", ct, None), ("application/dicom", mr, None)])
    port = recorder.server_address[1]
    with requests.Session() as session:
        resp = session.post(
            f"http://127.0.0.1:{port}/studies",
            data=body,
            headers={"Content-Type": content_type},
            timeout=10,
        )
    assert resp.status_code == 200
    (got,) = recorder.received  # type: ignore[attr-defined]
    assert got.headers["content-length"] == str(len(expected))
    assert "transfer-encoding" not in got.headers
    assert got.headers["content-type"] == content_type
    assert got.body == expected
