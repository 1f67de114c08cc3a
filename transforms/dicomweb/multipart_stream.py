"""Read a ``multipart/related`` response part by part, as it arrives. No Beam here.

A WADO-RS answer for a series or a study is one multipart body holding every instance; holding it
whole (``requests``' ``.content``, ``email.parser``) costs the size of the series. This decoder
pulls chunks from an iterator, passes each part's bytes on as soon as they cannot be the start of
a delimiter, and keeps at most one chunk plus one delimiter in memory, whatever the part sizes.
A part that announces its ``Content-Length`` (Orthanc's do) is passed on by count, without
searching its bytes, and the delimiter must follow right after them.

A body that ends before the close delimiter (``--boundary--``) raises ``MultipartError`` with
reason ``truncated_response``; a body with no opening delimiter, a header block that never ends
or a part shorter or longer than its own ``Content-Length`` raises it with ``bad_multipart`` or
``size_mismatch``. Callers therefore never mistake a cut answer for a complete one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from transforms.dead_letter import Reason

MAX_HEADER_BYTES = 64 * 1024
MAX_PREAMBLE_BYTES = 64 * 1024
# Of a counted part, the last bytes kept to tell a part shorter than announced (the close
# delimiter is among them) from a cut body. An epilogue longer than this makes it "truncated".
_TAIL_BYTES = 512


class MultipartError(Exception):
    """A multipart body that is cut, malformed, or inconsistent with its own headers."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart Content-Type (quoted or not)."""
    for param in _params(content_type):
        name, _, value = param.partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if 0 < len(value) <= 200:
                return value
    raise MultipartError(Reason.BAD_MULTIPART, "multipart answer without a usable boundary")


def media_type(content_type: str) -> str:
    """``type/subtype`` of a Content-Type, lower case, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def _params(content_type: str) -> list[str]:
    # Split on ; outside quotes: type="application/dicom; transfer-syntax=..." is one parameter.
    return [m.group(0) for m in _PARAM.finditer(content_type)][1:]


# A run of anything but ; and quotes, or a quoted string (which may hold ;). An unmatched quote
# is left out: the parameter it would open is malformed anyway.
_PARAM = re.compile(r'(?:[^;"]|"[^"]*")+')


@dataclass(frozen=True)
class PartHeaders:
    """The headers of one part (names lower-cased)."""

    fields: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.fields:
            if key == name:
                return value
        return None

    @property
    def content_type(self) -> str:
        return self.get("content-type") or "text/plain"

    @property
    def content_location(self) -> str | None:
        return self.get("content-location")

    @property
    def content_length(self) -> int | None:
        value = self.get("content-length")
        if value is None:
            return None
        value = value.strip()
        if not value.isascii() or not value.isdigit():
            raise MultipartError(Reason.BAD_MULTIPART, "a part has a bad Content-Length")
        return int(value)


def _parse_headers(block: bytes) -> PartHeaders:
    fields: list[tuple[str, str]] = []
    for raw in block.split(b"\r\n"):
        if not raw:
            continue
        if raw[:1] in (b" ", b"\t") and fields:  # obsolete line folding
            key, text = fields[-1]
            fields[-1] = (key, text + " " + raw.strip().decode("latin-1"))
            continue
        name, sep, value = raw.partition(b":")
        if not sep or not name.strip():
            raise MultipartError(Reason.BAD_MULTIPART, "a part header line has no name")
        fields.append((name.strip().decode("latin-1").lower(), value.strip().decode("latin-1")))
    return PartHeaders(tuple(fields))


class MultipartStream:
    """Parts of one multipart body, in order, each body delivered in chunks.

    Usage::

        stream = MultipartStream(response.iter_content(1 << 20), boundary_of(content_type))
        for headers in stream.parts():
            for chunk in stream.body():   # must be read before asking for the next part
                sink.write(chunk)

    ``parts()`` skips whatever of a part's body was not read. Errors from the chunk iterator
    (a connection cut mid-body) propagate unchanged.
    """

    def __init__(self, chunks: Iterator[bytes], boundary: str) -> None:
        self._chunks = iter(chunks)
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        # The opening delimiter may start the body with no CRLF before it.
        self._buf = bytearray(b"\r\n")
        self._eof = False
        self._in_body = False
        self._done = False
        self._expected: int | None = None
        self._received = 0
        self.parts_read = 0

    def _fill(self) -> bool:
        if self._eof:
            return False
        for chunk in self._chunks:
            if chunk:
                self._buf += chunk
                return True
        self._eof = True
        return False

    def _truncated(self, where: str) -> MultipartError:
        return MultipartError(
            Reason.TRUNCATED_RESPONSE,
            f"multipart answer ends {where} (after {self.parts_read} complete parts)",
        )

    def parts(self) -> Iterator[PartHeaders]:
        self._skip_preamble()
        while not self._done:
            if self._in_body:
                for _ in self.body():
                    pass
                continue
            headers = self._after_delimiter()
            if headers is None:
                return
            self._in_body = True
            yield headers
            if self._in_body:
                for _ in self.body():
                    pass

    def _skip_preamble(self) -> None:
        while True:
            at = self._buf.find(self._delimiter)
            if at >= 0:
                del self._buf[: at + len(self._delimiter)]
                return
            if len(self._buf) > MAX_PREAMBLE_BYTES:
                raise MultipartError(Reason.BAD_MULTIPART, "no multipart boundary where expected")
            if not self._fill():
                if self._delimiter.startswith(bytes(self._buf)):
                    raise self._truncated("before its first part")
                raise MultipartError(Reason.BAD_MULTIPART, "no multipart boundary in the answer")

    def _after_delimiter(self) -> PartHeaders | None:
        """After a delimiter: the close marker (None), or the next part's headers."""
        while len(self._buf) < 2 and self._fill():
            pass
        if self._buf[:2] == b"--":
            self._done = True
            return None
        while True:
            line_end = self._buf.find(b"\r\n")
            if line_end >= 0:
                if self._buf[:line_end].strip(b" \t"):
                    raise MultipartError(Reason.BAD_MULTIPART, "junk after a multipart boundary")
                if self._buf[line_end + 2 : line_end + 4] == b"\r\n":  # a part with no headers
                    del self._buf[: line_end + 4]
                    return self._start_part(PartHeaders(()))
                end = self._buf.find(b"\r\n\r\n", line_end + 2)
                if end >= 0:
                    block = bytes(self._buf[line_end + 2 : end])
                    del self._buf[: end + 4]
                    return self._start_part(_parse_headers(block))
            if len(self._buf) > MAX_HEADER_BYTES:
                raise MultipartError(Reason.BAD_MULTIPART, "a part's headers never end")
            if not self._fill():
                raise self._truncated("inside a part's headers")

    def _start_part(self, headers: PartHeaders) -> PartHeaders:
        self._expected = headers.content_length
        self._received = 0
        return headers

    def _take(self, size: int) -> bytes:
        """The first ``size`` bytes of the buffer, removed from it: one copy (a slice of a
        bytearray is a copy of its own before ``bytes`` copies it again), and deleting from the
        front of a bytearray moves no bytes."""
        if not size:
            return b""
        with memoryview(self._buf) as view:
            piece = bytes(view[:size])
        del self._buf[:size]
        return piece

    def body(self) -> Iterator[bytes | memoryview]:
        """The current part's bytes, piece by piece, up to the next delimiter.

        Large pieces are read-only views of the chunks as they came (no copy of the bulk of a
        part); they stay valid after the next piece is asked for.
        """
        if not self._in_body:
            return
        if self._expected is not None:
            yield from self._counted_body(self._expected)
            return
        keep = len(self._delimiter) - 1
        searched = 0
        while True:
            if len(self._buf) <= keep and not self._eof:
                # The usual case inside a large part: what is left is shorter than a delimiter.
                # The next chunk is searched where it is and handed over as a view of itself.
                chunk = self._next_chunk()
                if chunk is not None:
                    found = self._piece_of(chunk, keep)
                    if found is not None:
                        pieces, ended = found
                        yield from pieces
                        if ended:
                            return
                        continue
                    self._buf += chunk  # a delimiter across the chunk's start: the slow way
                searched = 0
            at = self._buf.find(self._delimiter, searched)
            if at >= 0:
                # The part ends here: the state moves past it before its last bytes are handed
                # over, so a reader that stops at them leaves the stream at the next part.
                last = self._take(at)
                del self._buf[: len(self._delimiter)]
                yield from self._end_part(at, last)
                return
            safe = len(self._buf) - keep
            if safe > 0:
                self._received += safe
                yield self._take(safe)
            searched = max(0, len(self._buf) - keep)
            if len(self._buf) <= keep and not self._eof:
                continue
            if not self._fill():
                self._in_body = False
                self._done = True
                raise self._truncated("inside a part")

    def _counted_body(self, expected: int) -> Iterator[bytes | memoryview]:
        """A part that announced its ``Content-Length`` (Orthanc's do): its bytes are handed
        over without searching them for the delimiter, which must then follow them at once.

        Searching is most of the decoder's CPU on large parts (about 0.3 s a GiB here). A part
        that is longer than it announced has no delimiter after its length; one that is
        shorter swallows the delimiter and what follows, so it has none either, or meets the
        end of the body with the close delimiter among its last bytes: both are a size
        mismatch, as on the searching path. A body that ends otherwise was cut.
        """
        remaining = expected - self._received  # a body() asked for again goes on where it was
        tail = b""  # the part's last bytes: where a close delimiter swallowed by it would be
        while remaining:
            if self._buf:
                size = min(remaining, len(self._buf))
                piece: bytes | memoryview = self._take(size)
            else:
                chunk = self._next_chunk()
                if chunk is None:
                    self._in_body = False
                    self._done = True
                    if tail.find(self._delimiter + b"--") >= 0:
                        raise MultipartError(
                            Reason.SIZE_MISMATCH,
                            f"a part announced {expected} bytes; the body closed after "
                            f"{expected - remaining} (its close delimiter among them)",
                        )
                    raise self._truncated("inside a part")
                size = min(remaining, len(chunk))
                if size < len(chunk):
                    view = memoryview(chunk)
                    piece = view[:size]
                    self._buf[:] = view[size:]
                else:
                    piece = chunk
            remaining -= size
            self._received += size
            tail = (tail + bytes(piece[-_TAIL_BYTES:]))[-_TAIL_BYTES:]
            yield piece
        while len(self._buf) < len(self._delimiter) and self._fill():
            pass
        if not self._buf.startswith(self._delimiter):
            self._in_body = False
            self._done = True
            if self._delimiter.startswith(bytes(self._buf)):
                raise self._truncated("inside a part")
            raise MultipartError(
                Reason.SIZE_MISMATCH,
                f"a part announced {expected} bytes and no boundary follows them",
            )
        del self._buf[: len(self._delimiter)]
        self._in_body = False
        self.parts_read += 1

    def _next_chunk(self) -> bytes | None:
        for chunk in self._chunks:
            if chunk:
                return chunk
        self._eof = True
        return None

    def _piece_of(self, chunk: bytes, keep: int) -> tuple[list[bytes | memoryview], bool] | None:
        """The pieces of a part in ``chunk`` (after the short rest in the buffer) and whether
        the part ended there; None when a delimiter may start in the rest, or the chunk is small
        (the caller goes the slow way)."""
        delimiter = self._delimiter
        if len(chunk) <= 2 * keep:
            return None  # small chunks: the buffer is as cheap
        rest = bytes(self._buf)
        # A delimiter starting in the rest ends within the chunk's first ``keep`` bytes.
        if rest and (rest + chunk[:keep]).find(delimiter) >= 0:
            return None
        pieces: list[bytes | memoryview] = []
        if rest:
            self._received += len(rest)
            pieces.append(rest)
            self._buf.clear()
        view = memoryview(chunk)
        at = chunk.find(delimiter)
        if at >= 0:
            self._buf[:] = view[at + len(delimiter) :]
            pieces.extend(self._end_part(at, view[:at]))
            return pieces, True
        safe = len(chunk) - keep
        self._received += safe
        pieces.append(view[:safe])
        self._buf[:] = view[safe:]
        return pieces, False

    def _end_part(self, size: int, last: bytes | memoryview) -> list[bytes | memoryview]:
        """The part's last ``size`` bytes; checks its length, moves the state past it."""
        self._received += size
        self._in_body = False
        if self._expected is not None and self._expected != self._received:
            raise MultipartError(
                Reason.SIZE_MISMATCH,
                f"a part announced {self._expected} bytes and held {self._received}",
            )
        self.parts_read += 1
        return [last] if size else []
