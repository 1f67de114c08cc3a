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


def encode_counted(
    parts: list[tuple[str, bytes]], boundary: str = BOUNDARY, lengths: list[int] | None = None
) -> bytes:
    """A body whose parts announce their Content-Length, as Orthanc's do; ``lengths`` may
    announce other lengths than the parts hold."""
    out = b""
    for i, (ct, data) in enumerate(parts):
        announced = len(data) if lengths is None else lengths[i]
        out += f"--{boundary}\r\nContent-Type: {ct}\r\nContent-Length: {announced}\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


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
@pytest.mark.parametrize("counted", [False, True], ids=["searched", "counted"])
def test_parts_equal_what_was_encoded_at_any_chunk_size(size: int, counted: bool) -> None:
    body = encode_counted(PARTS) if counted else encode(PARTS)
    assert decode(chunked(body, size)) == PARTS


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


@pytest.mark.parametrize("counted", [False, True], ids=["searched", "counted"])
def test_large_chunks_handed_over_as_views_at_random_cuts(counted: bool) -> None:
    """Chunks larger than a delimiter go the fast way (searched where they are, or counted when
    the parts announce their length, and handed over as views): parts still equal what was
    encoded wherever the cuts fall, near-delimiters and a delimiter split across two chunks
    included; the views stay valid once read further."""
    near = b"\r\n--" + BOUNDARY.encode()[:-1]
    parts = [
        ("application/dicom", (near + b"x" * 50) * 20 + random.Random(5).randbytes(3000)),
        ("application/dicom", b"y" * 29),
        ("application/dicom", b""),
        ("application/dicom", random.Random(6).randbytes(70_000)),
    ]
    data = encode_counted(parts) if counted else encode(parts)
    rng = random.Random(11)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 40)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        stream = MultipartStream(iter(pieces), BOUNDARY)
        held = []
        for _headers in stream.parts():
            held.append(list(stream.body()))  # every piece kept until the end
        assert [b"".join(p) for p in held] == [d for _, d in parts]


def test_a_counted_part_is_not_searched_but_its_pieces_are_the_chunks_themselves() -> None:
    """The point of the counted path: a large chunk inside a part is handed over as it came,
    not cut where a delimiter might start (one piece a chunk, not two)."""
    chunk = 64 * 1024
    data = bytes(chunk) * 16
    body = encode_counted([("application/dicom", data)])
    head = body.index(b"\r\n\r\n") + 4
    chunks = [body[:head], *chunked(body[head:], chunk)]
    stream = MultipartStream(iter(chunks), BOUNDARY)
    for _ in stream.parts():
        pieces = list(stream.body())
    assert b"".join(pieces) == data
    assert len(pieces) == 16 and all(len(p) == chunk for p in pieces)


@pytest.mark.parametrize(
    ("changes", "size"),
    [
        ({3: +1}, 1000),  # the last part announced one byte more: the end of the body is met
        ({3: -1}, 1000),  # the last part holds one byte more than announced
        ({0: +1}, 7),  # a part announced one byte more: its delimiter is swallowed
        ({0: -1}, 61),  # a part holds one byte more: no boundary after its length
        ({1: +5}, 1 << 20),  # an empty part announced 5 bytes
        ({2: +200}, 3),  # a part announced more than it and the next part's headers hold
    ],
)
def test_a_counted_part_of_another_length_than_announced_is_a_size_mismatch(
    changes: dict[int, int], size: int
) -> None:
    lengths = [len(d) + changes.get(i, 0) for i, (_, d) in enumerate(PARTS)]
    with pytest.raises(MultipartError) as info:
        decode(chunked(encode_counted(PARTS, lengths=lengths), size))
    assert info.value.reason == "size_mismatch"


@pytest.mark.parametrize("size", [1, 13, 4096, 1 << 20])
def test_a_counted_body_cut_anywhere_raises_truncated(size: int) -> None:
    body = encode_counted(PARTS)
    rng = random.Random(size)
    close = len(f"\r\n--{BOUNDARY}--\r\n")  # a cut after the close delimiter's "--" is whole
    for cut in [*rng.sample(range(len(body) - 4), 40), len(body) - close, len(body) - 5]:
        with pytest.raises(MultipartError) as info:
            decode(chunked(body[:cut], size))
        assert info.value.reason == "truncated_response", cut


def test_a_reader_stopping_after_a_counted_part_goes_on_at_the_next_part() -> None:
    """A reader that takes exactly the announced bytes and asks for the next part: the rest
    of the part (its delimiter) is skipped, not its length read again."""
    for size in (100, 1 << 20):
        stream = MultipartStream(chunked(encode_counted(PARTS), size), BOUNDARY)
        got = []
        for index, _headers in enumerate(stream.parts()):
            wanted = len(PARTS[index][1])
            data = b""
            for piece in stream.body():
                data += piece
                if len(data) >= wanted:
                    break  # every byte read; the delimiter after them is left to parts()
            got.append(data)
        assert stream.parts_read == len(PARTS)
        assert got == [d for _, d in PARTS]
