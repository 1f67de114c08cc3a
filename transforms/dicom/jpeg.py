"""Read what DICOM needs from a JPEG's header, without decoding it. No Beam, no pydicom.

``read_jpeg_info(stream, size)`` walks the markers from SOI to the first SOS (seeking over
application segments, so a 60 KB ICC profile costs nothing), checks that the file ends with EOI,
and returns the image's size, components, chroma subsampling, sample precision and coding
process. From those follow the DICOM attributes (Rows, Columns, SamplesPerPixel, Bits*,
PhotometricInterpretation) and the transfer syntax (PS3.5 8.2.1, A.4.1):

=====================================  ===========================
SOF marker (process)                   transfer syntax
=====================================  ===========================
SOF0 baseline (8-bit)                  1.2.840.10008.1.2.4.50
SOF1 extended (8 or 12-bit)            1.2.840.10008.1.2.4.51
SOF3 lossless, selection value 1       1.2.840.10008.1.2.4.70
SOF3 lossless, other selection values  1.2.840.10008.1.2.4.57
SOF2 progressive                       refused (its syntax is retired)
hierarchical, arithmetic coding        refused
=====================================  ===========================

Colour: three components are RGB when the JPEG says so (Adobe APP14 transform 0, or component
ids 'R','G','B' without JFIF), otherwise YCbCr: YBR_FULL when the chroma is not subsampled
(4:4:4), YBR_FULL_422 when it is (PS3.5 8.2.1 uses YBR_FULL_422 for any chroma subsampling,
4:2:0 included). Lossless JPEGs keep the colour space they were given, so theirs is RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from transforms.dead_letter import Reason
from transforms.errors import InvalidInputError

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_APP0, _APP14 = 0xE0, 0xEE
_SOF_PROCESS = {
    0xC0: "baseline",
    0xC1: "extended",
    0xC2: "progressive",
    0xC3: "lossless",
    0xC5: "hierarchical",
    0xC6: "hierarchical",
    0xC7: "hierarchical",
    0xC9: "arithmetic",
    0xCA: "arithmetic",
    0xCB: "arithmetic",
    0xCD: "arithmetic",
    0xCE: "arithmetic",
    0xCF: "arithmetic",
}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field
_VALID_PRECISION = {"baseline": (8,), "extended": (8, 12)}
_LOSSLESS_PRECISION = range(2, 17)
_NOT_PLAIN = frozenset({0x00, 0xFF, _SOI, _EOI, *_STANDALONE})  # left to the reader's walk
_MAX_TRAILING = 64  # bytes after EOI tolerated (some writers pad); more means not one image
_BLOCK = 16 << 10  # the first read: headers are usually a few hundred bytes


@dataclass(frozen=True)
class JpegInfo:
    """What a JPEG header says, and the DICOM attributes that follow from it."""

    rows: int
    columns: int
    components: int
    precision: int
    process: str  # baseline, extended, lossless
    sampling: tuple[tuple[int, int], ...]  # (horizontal, vertical) factor per component
    rgb: bool  # three components stored as RGB (not YCbCr)
    predictor: int = 0  # lossless: the selection value of the first scan

    @property
    def transfer_syntax_uid(self) -> str:
        if self.process == "baseline":
            return JPEG_BASELINE
        if self.process == "extended":
            return JPEG_EXTENDED
        return JPEG_LOSSLESS_SV1 if self.predictor == 1 else JPEG_LOSSLESS

    @property
    def subsampled(self) -> bool:
        return len(set(self.sampling)) > 1

    @property
    def photometric_interpretation(self) -> str:
        if self.components == 1:
            return "MONOCHROME2"
        if self.rgb or self.process == "lossless":
            return "RGB"
        return "YBR_FULL_422" if self.subsampled else "YBR_FULL"

    @property
    def bits_allocated(self) -> int:
        return 8 if self.precision <= 8 else 16

    def dicom_attributes(self) -> dict[str, int | str]:
        """Image Pixel module values (keyword -> value) this JPEG implies."""
        attrs: dict[str, int | str] = {
            "Rows": self.rows,
            "Columns": self.columns,
            "SamplesPerPixel": self.components,
            "PhotometricInterpretation": self.photometric_interpretation,
            "BitsAllocated": self.bits_allocated,
            "BitsStored": self.precision,
            "HighBit": self.precision - 1,
            "PixelRepresentation": 0,
        }
        if self.components > 1:
            attrs["PlanarConfiguration"] = 0
        return attrs


def _bad(message: str) -> InvalidInputError:
    return InvalidInputError(Reason.NOT_JPEG, message)


def _truncated(message: str) -> InvalidInputError:
    return InvalidInputError(Reason.TRUNCATED, message)


class _Reader:
    """Reads the header from one block read up front (a marker walk makes dozens of small
    reads), reading further blocks only for headers that do not fit."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self._size = size
        self._buf = stream.read(_BLOCK)
        self._start = 0  # file offset of _buf[0]
        self.pos = 0

    def first(self, n: int) -> bytes:
        """Up to ``n`` bytes from the file's start, as far as the first block goes."""
        return self._buf[:n] if self._start == 0 else b""

    def peek(self, n: int) -> bytes:
        i = self.pos - self._start
        return self._buf[i : i + n]

    def read(self, n: int, what: str) -> bytes:
        if self.pos + n > self._start + len(self._buf):
            self._stream.seek(self.pos)
            self._buf = self._stream.read(max(n, _BLOCK))
            self._start = self.pos
        i = self.pos - self._start
        data = self._buf[i : i + n]
        self.pos += len(data)
        if len(data) < n:
            raise _truncated(f"the JPEG ends inside its {what}")
        return data

    def marker(self) -> int:
        """The next marker: two bytes from the block when they are a plain one."""
        i = self.pos - self._start
        buf = self._buf
        if i + 1 < len(buf) and buf[i] == 0xFF and buf[i + 1] not in (0x00, 0xFF):
            self.pos += 2
            return buf[i + 1]
        return _next_marker(self)

    def skip(self, n: int, what: str) -> None:
        if self.pos + n > self._size:
            raise _truncated(f"the JPEG ends inside its {what}")
        self.pos += n


def read_jpeg_info(stream: BinaryIO, size: int) -> JpegInfo:
    """Validate the JPEG in ``stream`` (seekable, at its start, ``size`` bytes long).

    Raises:
      InvalidInputError: ``not_jpeg`` (no SOI, no frame header, malformed markers),
        ``truncated`` (ends before its scan or without EOI), ``progressive_jpeg`` or
        ``unsupported_jpeg`` (a coding process DICOM cannot carry here, or 2 or 4 components).
    """
    r = _Reader(stream, size)
    head = r.peek(2)
    r.pos = len(head)
    if head != b"\xff\xd8":
        raise _bad("the file does not start with a JPEG SOI marker (is it a JPEG?)")
    walked = _walk_block(r.first(size)) or _walk(r)
    frame, jfif, adobe_transform, predictor, header_end = walked
    if frame is None:
        raise _bad("the JPEG has no frame header (SOF) before its scan")
    info = _frame_info(frame[0], frame[1], jfif, adobe_transform, predictor)
    _check_end(stream, size, header_end)
    return info


# (frame marker and header, JFIF, Adobe transform, lossless predictor, end of the scan header)
_Walked = tuple[tuple[int, bytes] | None, bool, int | None, int, int]


def _walk_block(block: bytes) -> _Walked | None:
    """``_walk`` over a header that lies whole in ``block`` (the file's first bytes) and has
    nothing unusual (fill bytes, standalone markers, bad lengths): the common case, in plain
    indexing. None otherwise: ``_walk`` then finds the same values, or the error to raise."""
    n = len(block)
    i = 2
    frame: tuple[int, bytes] | None = None
    jfif = False
    adobe_transform: int | None = None
    while i + 4 <= n:
        marker = block[i + 1]
        if block[i] != 0xFF or marker in _NOT_PLAIN:
            return None
        length = (block[i + 2] << 8) | block[i + 3]
        start, end = i + 4, i + 2 + length
        if length < 2 or end > n:
            return None
        if marker in _SOF_PROCESS:
            if frame is not None:
                return None
            frame = (marker, block[start:end])
        elif marker == _SOS:
            scan = block[start:end]
            predictor = 0
            if len(scan) >= 1 + 2 * scan[0] + 1:
                predictor = scan[1 + 2 * scan[0]]
            return frame, jfif, adobe_transform, predictor, end
        elif marker == _APP0 and length >= 7:
            jfif = jfif or block.startswith(b"JFIF\x00", start)
        elif marker == _APP14 and length >= 14 and block.startswith(b"Adobe", start):
            adobe_transform = block[start + 11]
        i = end
    return None


def _walk(r: _Reader) -> _Walked:
    """The markers from after SOI to the end of the first scan header, read through ``r``."""
    frame: tuple[int, bytes] | None = None
    jfif = False
    adobe_transform: int | None = None
    predictor = 0
    while True:
        marker = r.marker()
        if marker in _STANDALONE:
            continue
        if marker in (_SOI, _EOI):
            raise _bad(f"unexpected marker FF{marker:02X} before the image's scan")
        length = int.from_bytes(r.read(2, "marker segments"), "big")
        if length < 2:
            raise _bad(f"marker FF{marker:02X} has an impossible length")
        if marker in _SOF_PROCESS:
            if frame is not None:
                raise _bad("the JPEG has two frame headers")
            frame = (marker, r.read(length - 2, "frame header"))
        elif marker == _SOS:
            scan = r.read(length - 2, "scan header")
            if len(scan) >= 1 + 2 * scan[0] + 1:
                predictor = scan[1 + 2 * scan[0]]  # Ss: the predictor in lossless mode
            break
        elif marker == _APP0 and length >= 7:
            body = r.read(length - 2, "APP0 segment")
            jfif = jfif or body.startswith(b"JFIF\x00")
        elif marker == _APP14 and length >= 14:
            body = r.read(length - 2, "APP14 segment")
            if body.startswith(b"Adobe"):
                adobe_transform = body[11]
        else:
            r.skip(length - 2, f"FF{marker:02X} segment")
    return frame, jfif, adobe_transform, predictor, r.pos


def _next_marker(r: _Reader) -> int:
    byte = r.read(1, "marker segments")
    if byte != b"\xff":
        raise _bad("a JPEG marker was expected but other bytes were found")
    while byte == b"\xff":  # fill bytes may precede a marker
        byte = r.read(1, "marker segments")
    if byte == b"\x00":
        raise _bad("a JPEG marker was expected but other bytes were found")
    return byte[0]


def _frame_info(
    marker: int, body: bytes, jfif: bool, adobe_transform: int | None, predictor: int
) -> JpegInfo:
    process = _SOF_PROCESS[marker]
    if process == "progressive":
        raise InvalidInputError(
            Reason.PROGRESSIVE_JPEG,
            "the JPEG is progressive; DICOM retired its transfer syntax, so no store should "
            "accept it: save it as a baseline JPEG",
        )
    if process not in ("baseline", "extended", "lossless"):
        raise InvalidInputError(
            Reason.UNSUPPORTED_JPEG,
            f"the JPEG uses {process} coding (SOF FF{marker:02X}); only baseline, extended and "
            "lossless (process 14) JPEGs can be stored",
        )
    if len(body) < 6:
        raise _bad("the JPEG frame header is too short")
    precision = body[0]
    rows = int.from_bytes(body[1:3], "big")
    columns = int.from_bytes(body[3:5], "big")
    components = body[5]
    if len(body) < 6 + 3 * components:
        raise _bad("the JPEG frame header is too short for its components")
    ids = body[6 : 6 + 3 * components : 3]
    sampling = tuple((b >> 4, b & 0x0F) for b in body[7 : 7 + 3 * components : 3])
    if rows == 0 or columns == 0:
        raise InvalidInputError(
            Reason.UNSUPPORTED_JPEG, "the JPEG's height is not in its frame header (DNL marker)"
        )
    if components not in (1, 3):
        raise InvalidInputError(
            Reason.UNSUPPORTED_JPEG,
            f"the JPEG has {components} components; DICOM images here have 1 or 3",
        )
    if precision not in _VALID_PRECISION.get(process, _LOSSLESS_PRECISION):
        raise _bad(f"{precision}-bit samples are not valid in a {process} JPEG")
    if adobe_transform is not None:
        rgb = adobe_transform == 0
    else:
        rgb = not jfif and ids == b"RGB"
    return JpegInfo(
        rows=rows,
        columns=columns,
        components=components,
        precision=precision,
        process=process,
        sampling=sampling,
        rgb=components == 3 and rgb,
        predictor=predictor if process == "lossless" else 0,
    )


def _check_end(stream: BinaryIO, size: int, header_end: int) -> None:
    """EOI must end the file (a little padding after it is tolerated)."""
    tail_len = min(size - header_end, _MAX_TRAILING + 2)
    if tail_len < 2:
        raise _truncated("the JPEG ends right after its scan header")
    stream.seek(size - tail_len)
    tail = stream.read(tail_len)
    if len(tail) < tail_len:
        raise _truncated("the JPEG is shorter than its listed size")
    end = tail.rfind(b"\xff\xd9")
    if end < 0 or tail[end + 2 :].strip(b"\x00\xff") != b"":
        raise _truncated("the JPEG does not end with an EOI marker (cut short?)")
