"""The streaming multipart decoder: parts equal to what was encoded, at any chunking; cut and
malformed bodies raise; memory stays bounded by a chunk whatever the part size."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from transforms.dicomweb.multipart import Part, multipart_related
from transforms.dicomweb.multipart_stream import (
    MultipartError,
    MultipartStream,
    boundary_of,
    media_type,
)

BOUNDARY = "b0und4ry-1234"


def encode(parts: list[tuple[str, bytes]], boundary: str = BOUNDARY) -> bytes:
    body, _ = multipart_related(
        [Part(ct, (data,)) for ct, data in parts], root_type="application/dicom", boundary=boundary
    )
    return body.read()


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def decode(chunks: Iterator[bytes], boundary: str = BOUNDARY) -> list[tuple[str, bytes]]:
    stream = MultipartStream(chunks, boundary)
    out = []
    for headers in stream.parts():
        out.append((headers.content_type, b"".join(stream.body())))
    return out


PARTS = [
    ("application/dicom", b"DICM" + bytes(range(256)) * 40),
    ("application/dicom", b""),
    ("application/octet-stream", b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n"),  # near-boundary
    ("application/dicom", random.Random(3).randbytes(10_000)),
]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 61, 1000, 1 << 20])
def test_parts_equal_what_was_encoded_at_any_chunk_size(size: int) -> None:
    assert decode(chunked(encode(PARTS), size)) == PARTS


def test_preamble_no_headers_padding_and_epilogue_are_tolerated() -> None:
    body = (
        b"preamble text\r\n--" + BOUNDARY.encode() + b"  \r\n\r\nfirst"
        b"\r\n--" + BOUNDARY.encode() + b"\r\nContent-Type: image/png\r\n"
        b"Content-Length: 6\r\n\r\nsecond\r\n--" + BOUNDARY.encode() + b"--\r\nepilogue"
    )
    assert decode(chunked(body, 5)) == [("text/plain", b"first"), ("image/png", b"second")]


@pytest.mark.parametrize("cut", [0, 10, 30, 60, 200, -20, -5, -3])
def test_a_body_cut_anywhere_raises_truncated(cut: int) -> None:
    body = encode(PARTS)
    cut_body = body[:cut] if cut >= 0 else body[: len(body) + cut]
    with pytest.raises(MultipartError) as info:
        decode(chunked(cut_body, 17))
    assert info.value.reason == "truncated_response"


def test_a_part_shorter_than_its_content_length_is_a_size_mismatch() -> None:
    body = (
        b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n"
        b"Content-Length: 100\r\n\r\nonly this\r\n--" + BOUNDARY.encode() + b"--\r\n"
    )
    with pytest.raises(MultipartError) as info:
        decode(chunked(body, 4))
    assert info.value.reason == "size_mismatch"


@pytest.mark.parametrize(
    "body",
    [
        b"no boundary at all" * 5000,
        b"--" + BOUNDARY.encode() + b"junk\r\n\r\nx\r\n--" + BOUNDARY.encode() + b"--",
        b"--" + BOUNDARY.encode() + b"\r\n" + b"X-Long: " + b"a" * 70_000,
        b"--" + BOUNDARY.encode() + b"\r\nno colon here\r\n\r\nx\r\n--" + BOUNDARY.encode() + b"--",
    ],
)
def test_malformed_bodies_raise_bad_multipart(body: bytes) -> None:
    with pytest.raises(MultipartError) as info:
        decode(chunked(body, 1000))
    assert info.value.reason == "bad_multipart"


def test_unread_part_bodies_are_skipped() -> None:
    stream = MultipartStream(chunked(encode(PARTS), 100), BOUNDARY)
    types = [h.content_type for h in stream.parts()]
    assert types == [ct for ct, _ in PARTS]
    assert stream.parts_read == len(PARTS)


def test_memory_stays_bounded_by_a_chunk_for_a_large_part() -> None:
    chunk = 64 * 1024
    total = 64 * 1024 * 1024  # 64 MiB part, never held

    def body() -> Iterator[bytes]:
        yield b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
        block = bytes(chunk)
        for _ in range(total // chunk):
            yield block
        yield b"\r\n--" + BOUNDARY.encode() + b"--\r\n"

    stream = MultipartStream(body(), BOUNDARY)
    largest_buffer = largest_piece = received = 0
    for _ in stream.parts():
        for piece in stream.body():
            received += len(piece)
            largest_piece = max(largest_piece, len(piece))
            largest_buffer = max(largest_buffer, len(stream._buf))  # noqa: SLF001
    assert received == total
    assert largest_piece <= chunk + len(BOUNDARY) + 4
    assert largest_buffer <= 2 * chunk


def test_content_type_helpers() -> None:
    ct = 'multipart/related; type="application/dicom; transfer-syntax=*"; boundary="a;b=c"'
    assert boundary_of(ct) == "a;b=c"
    assert boundary_of("multipart/related; boundary=xyz") == "xyz"
    assert media_type(ct) == "multipart/related"
    with pytest.raises(MultipartError):
        boundary_of('multipart/related; type="application/dicom"')


def test_large_chunks_handed_over_as_views_at_random_cuts() -> None:
    """Chunks larger than a delimiter go the fast way (searched where they are, handed over as
    views): parts still equal what was encoded wherever the cuts fall, near-delimiters and a
    delimiter split across two chunks included; the views stay valid once read further."""
    near = b"\r\n--" + BOUNDARY.encode()[:-1]
    parts = [
        ("application/dicom", (near + b"x" * 50) * 20 + random.Random(5).randbytes(3000)),
        ("application/dicom", b"y" * 29),
        ("application/dicom", b""),
        ("application/dicom", random.Random(6).randbytes(70_000)),
    ]
    data = encode(parts)
    rng = random.Random(11)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 40)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        stream = MultipartStream(iter(pieces), BOUNDARY)
        held = []
        for _headers in stream.parts():
            held.append(list(stream.body()))  # every piece kept until the end
        assert [b"".join(p) for p in held] == [d for _, d in parts]
