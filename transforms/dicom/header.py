"""A fast structural walk of a Part 10 DICOM file: every element must fit in the file. No Beam.

pydicom builds an object per element (about 0.7 ms for a CT header of 256 elements); a store
job only needs a few UIDs and proof that the file is whole. This walker reads element headers
with ``struct`` from one cached block, skips values by offset, descends into sequences of
undefined length, checks the pixel data (defined length or encapsulated fragments) and the
elements after it, and collects the raw bytes of the tags asked for. It understands explicit and
implicit VR, little and big endian; deflated datasets and anything it finds odd are left to
pydicom by raising ``Unsupported``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import BinaryIO

from transforms.dead_letter import Reason
from transforms.errors import InvalidInputError

HEAD_BLOCK = 64 * 1024
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
TRANSFER_SYNTAX_TAG = 0x00020010
META_GROUP_LENGTH_TAG = 0x00020000
_META_TAGS = frozenset({META_GROUP_LENGTH_TAG, TRANSFER_SYNTAX_TAG})
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# What the walker takes for an explicit VR: any two upper-case letters (a set lookup per element
# instead of two bytes methods: the walk is the hot loop of a store job).
_UPPER_PAIRS = frozenset(bytes((a, b)) for a in range(65, 91) for b in range(65, 91))
# An element header read in one unpack: tag, VR (explicit) and the 16-bit length that follows.
_HEADER = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}
_LENGTH = {True: struct.Struct("<L"), False: struct.Struct(">L")}
_SHORT_VRS = _UPPER_PAIRS - _LONG_VRS
_MAX_WANTED_LENGTH = 1024
_MAX_DEPTH = 32

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"


class Unsupported(Exception):
    """Not something this walker handles; let pydicom read it."""


@dataclass
class HeaderScan:
    transfer_syntax: str
    values: dict[int, bytes] = field(default_factory=dict)  # top-level tag -> raw value
    has_pixels: bool = False


class _Reader:
    """Random-access reads with the file's first block cached (headers live there)."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self.size = size
        stream.seek(0)
        self.head = stream.read(min(size, HEAD_BLOCK))

    def read(self, offset: int, n: int) -> bytes:
        if offset + n <= len(self.head):
            return self.head[offset : offset + n]
        self._stream.seek(offset)
        return self._stream.read(n)


def _truncated(message: str) -> InvalidInputError:
    return InvalidInputError(Reason.TRUNCATED, message)


def scan_part10(stream: BinaryIO, size: int, wanted: frozenset[int]) -> HeaderScan:
    """Walk a Part 10 file (preamble and 'DICM' already checked by the caller).

    Raises:
      InvalidInputError: ``truncated`` when an element, a sequence or the pixel data runs past
        the end of the file.
      Unsupported: for what pydicom should read instead (deflated, malformed structure).
    """
    reader = _Reader(stream, size)
    meta: dict[int, bytes] = {}
    position = _walk(reader, 132, meta, _META_TAGS, meta_only=True)
    group_length = meta.get(META_GROUP_LENGTH_TAG, b"")
    if len(group_length) == 4 and 132 + 12 + struct.unpack("<L", group_length)[0] > size:
        raise _truncated("the file ends inside its File Meta Information")
    syntax = meta.get(TRANSFER_SYNTAX_TAG, b"").rstrip(b"\x00 ").decode("ascii", "replace")
    if syntax == IMPLICIT_LE:
        implicit, little = True, True
    elif syntax == EXPLICIT_BE:
        implicit, little = False, False
    elif syntax and syntax != DEFLATED:
        implicit, little = False, True  # every other syntax encodes the dataset this way
    else:
        raise Unsupported("deflated or missing transfer syntax")
    scan = HeaderScan(transfer_syntax=syntax)
    _walk(reader, position, scan.values, wanted, implicit=implicit, little=little, scan=scan)
    return scan


def _walk(
    reader: _Reader,
    position: int,
    values: dict[int, bytes],
    wanted: frozenset[int],
    *,
    implicit: bool = False,
    little: bool = True,
    meta_only: bool = False,
    scan: HeaderScan | None = None,
    depth: int = 0,
    end: int | None = None,
) -> int:
    """Walk elements from ``position`` to ``end`` (or the end of the file, or an item
    delimiter when ``end`` is None inside an item); return where the walk stopped."""
    size = reader.size
    limit = size if end is None else end
    head = reader.head
    head_room = len(head) - 12  # element headers up to here are read from the cached block
    header_format = _HEADER[little]
    length_format = _LENGTH[little]
    # Top-level explicit VR little endian (nearly every file): plain elements are skipped by
    # _skip_plain; this loop handles the others (wanted tags, pixel data, sequences, odd VRs).
    plain = depth == 0 and end is None and little and not implicit and not meta_only
    stops = wanted | PIXEL_TAGS | {ITEM_DELIMITER} if plain else wanted
    while position < limit:
        if plain:
            position = _skip_plain(head, position, size, stops)
            if position >= limit:
                break
        if position <= head_room:
            buf, at = head, position
        else:
            buf, at = reader.read(position, 12), 0
            if len(buf) < 8:
                raise _truncated("the file ends inside an element header")
        group, element, vr, short_length = header_format.unpack_from(buf, at)
        if meta_only and group != 0x0002:
            return position
        tag = group << 16 | element
        if tag == ITEM_DELIMITER:
            if depth == 0:
                raise Unsupported("item delimiter at top level")
            return position + 8
        # File Meta is always explicit VR little endian.
        element_implicit = not meta_only and (implicit or vr not in _UPPER_PAIRS)
        if element_implicit:
            (length,) = length_format.unpack_from(buf, at + 4)
            value_start = position + 8
        elif vr in _LONG_VRS:
            if len(buf) < at + 12:
                raise _truncated("the file ends inside an element header")
            (length,) = length_format.unpack_from(buf, at + 8)
            value_start = position + 12
        else:
            length = short_length
            value_start = position + 8
        if depth == 0 and tag in PIXEL_TAGS and scan is not None:
            scan.has_pixels = True
            if length == UNDEFINED_LENGTH:
                position = _items(
                    reader, value_start, implicit=implicit, little=little, depth=0, fragments=True
                )
                continue
        if length == UNDEFINED_LENGTH:
            # A sequence (or UN of undefined length, whose content is implicit VR LE).
            inner_implicit = element_implicit or vr == b"UN"
            inner_little = True if vr == b"UN" else little
            position = _items(
                reader,
                value_start,
                implicit=inner_implicit,
                little=inner_little,
                depth=depth,
                fragments=False,
            )
            continue
        value_end = value_start + length
        if value_end > size:
            raise _truncated(
                f"the file ends inside element ({group:04X},{element:04X}) "
                f"({size} bytes, {value_end} needed)"
            )
        if depth == 0 and tag in wanted and length <= _MAX_WANTED_LENGTH:
            values[tag] = reader.read(value_start, length)
        position = value_end
    if end is not None and position != end:
        raise Unsupported("an item's elements overrun its length")
    if end is None and depth > 0:
        raise _truncated("the file ends inside a sequence item")
    return position


def _skip_plain(head: bytes, position: int, size: int, stops: frozenset[int]) -> int:
    """Skip top-level explicit VR little endian elements of defined length that fit in the file
    and are not in ``stops``, while their headers are in ``head``; return where the first other
    element starts (the general loop then reads it, and raises if it is cut)."""
    unpack = _HEADER[True].unpack_from
    unpack_length = _LENGTH[True].unpack_from
    room = len(head) - 12
    while position <= room:
        group, element, vr, length = unpack(head, position)
        if group << 16 | element in stops:
            return position
        if vr in _SHORT_VRS:
            after = position + 8 + length
        elif vr in _LONG_VRS:
            (length,) = unpack_length(head, position + 8)
            if length == UNDEFINED_LENGTH:
                return position
            after = position + 12 + length
        else:
            return position
        if after > size:
            return position
        position = after
    return position


def walk_rest(stream: BinaryIO, size: int, position: int, *, implicit: bool, little: bool) -> None:
    """Walk the top-level elements from ``position`` (the pixel data) to the end of the file."""
    reader = _Reader(stream, size)
    _walk(reader, position, {}, frozenset(), implicit=implicit, little=little, scan=HeaderScan(""))


def ends_with_sequence_delimiter(stream: BinaryIO, size: int, *, little: bool) -> bool:
    """Whether the file's last 8 bytes are a Sequence Delimitation Item."""
    if size < 8:
        return False
    stream.seek(size - 8)
    tail = stream.read(8)
    if len(tail) < 8:
        return False
    group, element, length = struct.unpack(("<" if little else ">") + "HHL", tail)
    return (group << 16 | element, length) == (SEQUENCE_DELIMITER, 0)


def _items(
    reader: _Reader, position: int, *, implicit: bool, little: bool, depth: int, fragments: bool
) -> int:
    """Walk items up to the sequence delimiter: a sequence's, or encapsulated pixel data's
    fragments (which never nest)."""
    what = "encapsulated pixel data" if fragments else "a sequence"
    if depth >= _MAX_DEPTH:
        raise Unsupported("sequences nested too deep")
    endian = "<" if little else ">"
    while True:
        header = reader.read(position, 8)
        if len(header) < 8:
            raise _truncated(f"the file ends inside {what}")
        group, element, length = struct.unpack(endian + "HHL", header)
        tag = group << 16 | element
        if tag == SEQUENCE_DELIMITER:
            return position + 8
        if tag != ITEM or (fragments and length == UNDEFINED_LENGTH):
            raise Unsupported(f"{what} is malformed (expected an item)")
        start = position + 8
        if length == UNDEFINED_LENGTH:
            position = _walk(
                reader, start, {}, frozenset(), implicit=implicit, little=little, depth=depth + 1
            )
        elif start + length > reader.size:
            raise _truncated(f"the file ends inside an item of {what}")
        else:
            position = start + length
