"""Request bodies that stream files instead of loading them whole. No Beam here.

A body is a list of segments: literal bytes (part headers, a generated File Meta header) and file
ranges read lazily in blocks. Its length is known up front, so requests sends a Content-Length
(some servers refuse chunked uploads) and a 1 GB instance costs one block of memory, not 1 GB.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from transforms.errors import SourceChangedError

BLOCK_SIZE = 1 << 20

Opener = Callable[[str], BinaryIO]


@dataclass(frozen=True)
class FileSegment:
    """``size`` bytes of the file at ``path``, from its start."""

    path: str
    size: int


Segment = bytes | FileSegment


def _open_local(path: str) -> BinaryIO:
    return open(path, "rb")  # noqa: SIM115 - closed by StreamingBody


class StreamingBody:
    """A read-once, file-like request body over segments, with a known length.

    requests treats it as a stream (it has ``__iter__`` and ``read``) and sets Content-Length
    from ``__len__``; http.client then pulls it with ``read(blocksize)``. A file that is shorter
    than announced raises ``SourceChangedError`` instead of sending a wrong body.
    """

    def __init__(self, segments: Sequence[Segment], opener: Opener = _open_local) -> None:
        self._segments = list(segments)
        self._opener = opener
        self._length = sum(len(s) if isinstance(s, bytes) else s.size for s in self._segments)
        self._index = 0
        self._offset = 0  # within the current segment
        self._file: BinaryIO | None = None
        self._position = 0

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(BLOCK_SIZE):
            yield chunk

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._length - self._position
        out = bytearray()
        while len(out) < size and self._index < len(self._segments):
            segment = self._segments[self._index]
            if isinstance(segment, bytes):
                chunk = segment[self._offset : self._offset + size - len(out)]
                self._offset += len(chunk)
                out += chunk
                if self._offset >= len(segment):
                    self._next_segment()
            else:
                out += self._read_file(segment, size - len(out))
        self._position += len(out)
        return bytes(out)

    def _read_file(self, segment: FileSegment, want: int) -> bytes:
        if self._file is None:
            try:
                self._file = self._opener(segment.path)
            except OSError as exc:
                raise SourceChangedError(segment.path, f"cannot open: {exc.strerror}") from exc
        chunk = self._file.read(min(want, segment.size - self._offset))
        if not chunk and segment.size > self._offset:
            raise SourceChangedError(
                segment.path, f"file is shorter than the {segment.size} bytes it had when validated"
            )
        self._offset += len(chunk)
        if self._offset >= segment.size:
            self._next_segment()
        return chunk

    def _next_segment(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._index += 1
        self._offset = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class Part:
    """One part of a multipart/related body: a content type and its segments."""

    content_type: str
    segments: tuple[Segment, ...]
    content_location: str | None = None


def new_boundary() -> str:
    return f"dicomweb-beam-{uuid.uuid4().hex}"


def multipart_related(
    parts: Sequence[Part], *, root_type: str, boundary: str, opener: Opener = _open_local
) -> tuple[StreamingBody, str]:
    """A ``multipart/related; type=...`` body (PS3.18 8.6.1.2) and its Content-Type."""
    segments: list[Segment] = []
    delimiter = f"--{boundary}\r\n".encode("ascii")
    for part in parts:
        headers = f"Content-Type: {part.content_type}\r\n"
        if part.content_location:
            headers += f"Content-Location: {part.content_location}\r\n"
        segments.append(delimiter + headers.encode("ascii") + b"\r\n")
        segments.extend(part.segments)
        segments.append(b"\r\n")
    segments.append(f"--{boundary}--\r\n".encode("ascii"))
    content_type = f'multipart/related; type="{root_type}"; boundary={boundary}'
    return StreamingBody(_merge_bytes(segments), opener), content_type


def _merge_bytes(segments: list[Segment]) -> list[Segment]:
    """Adjacent literal segments joined, so small bodies become few large reads."""
    merged: list[Segment] = []
    for s in segments:
        if isinstance(s, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] = merged[-1] + s
        else:
            merged.append(s)
    return merged
