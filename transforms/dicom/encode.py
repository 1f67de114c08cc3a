"""Explicit VR Little Endian encoding of simple DICOM JSON datasets, and of File Meta groups.
No Beam, no pydicom.

Client mode builds one Part 10 instance per pair; pydicom spends about a millisecond per
instance turning DICOM JSON into a Dataset and writing it, as much as the server takes to store
it. Metadata of JSON + JPEG pairs is nearly always flat text and numbers, which this module
encodes directly. Anything else (sequences, binary or inline data, AT, a character set other
than the default or ISO_IR 192, floats in DS, very long values) makes ``encode_dataset`` return
None, and the caller lets pydicom do it. Tests check the bytes equal pydicom's.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

_TEXT_VRS = frozenset(
    "AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split()
)  # fmt: skip
_NUMBER_FORMATS = {
    "US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "FL": "<f", "FD": "<d", "SV": "<q", "UV": "<Q",
}  # fmt: skip
# VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset("OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_UTF8_CHARSETS = ("ISO_IR 192",)
_CHARSET_TAG = "00080005"
_MAX_SHORT = 0xFFFE


_SHORT_HEADER = struct.Struct("<HH2sH")
_LONG_HEADER = struct.Struct("<HH2sHI")
_PLAIN_KEYS = frozenset({"vr", "Value"})
_VR_BYTES = {vr: vr.encode("ascii") for vr in (*_TEXT_VRS, *_NUMBER_FORMATS)}


def _header(tag: int, vr: str, length: int) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if vr in _LONG_VRS:
        return _LONG_HEADER.pack(group, element, vr.encode("ascii"), 0, length)
    return _SHORT_HEADER.pack(group, element, _VR_BYTES.get(vr) or vr.encode("ascii"), length)


def _text(vr: str, values: list[Any], encoding: str) -> bytes | None:
    if len(values) == 1 and type(values[0]) is str and vr != "PN":  # the common case
        try:
            data = values[0].encode(encoding)
        except UnicodeEncodeError:
            return None
        return data + (b"\x00" if vr == "UI" else b" ") if len(data) % 2 else data
    parts = []
    for v in values:
        if vr == "PN":
            if not isinstance(v, dict) or set(v) - {"Alphabetic", "Ideographic", "Phonetic"}:
                return None
            groups = [v.get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
            v = "=".join(groups).rstrip("=")
        elif vr == "IS" and isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            return None  # floats in DS, numbers elsewhere: pydicom's formatting applies
        parts.append(v)
    try:
        data = "\\".join(parts).encode(encoding)
    except UnicodeEncodeError:
        return None
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return data


def _numbers(vr: str, values: list[Any]) -> bytes | None:
    fmt = _NUMBER_FORMATS[vr]
    if len(values) == 1 and type(values[0]) is int:  # the common case (a bool is no int here)
        try:
            return struct.pack(fmt, values[0])
        except struct.error:
            return None
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        return None
    if fmt[-1] not in "fd" and any(not isinstance(v, int) for v in values):
        return None
    try:
        return b"".join(struct.pack(fmt, v) for v in values)
    except struct.error:
        return None


def encode_dataset(elements: Mapping[str, Any]) -> bytes | None:
    """The dataset's bytes (Explicit VR Little Endian), or None when pydicom should do it."""
    charset = elements.get(_CHARSET_TAG, {}).get("Value") or []
    if charset and charset not in (["ISO_IR 192"], ["ISO_IR 6"]):
        return None
    encoding = "utf-8" if charset == ["ISO_IR 192"] else "ascii"
    out = []
    for tag, key in sorted((int(k, 16), k) for k in elements):
        element = elements[key]
        vr = element.get("vr")
        if not element.keys() <= _PLAIN_KEYS:
            return None  # BulkDataURI, InlineBinary
        values = element.get("Value") or []
        if not isinstance(values, list) or None in values:
            return None
        if tag >> 16 == 0x0002 or tag >= 0x7FE00010:
            return None
        if vr in _TEXT_VRS:
            data = _text(vr, values, encoding)
        elif vr in _NUMBER_FORMATS:
            data = _numbers(vr, values)
        else:
            return None
        if data is None or (vr not in _LONG_VRS and len(data) > _MAX_SHORT):
            return None
        out.append(_header(tag, vr, len(data)) + data)
    return b"".join(out)


def _uid(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\x00" * (len(data) % 2)


def encode_file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group (PS3.10 7.1)."""
    version = implementation_version_name.encode("ascii")
    version += b" " * (len(version) % 2)
    body = b"".join(
        [
            _header(0x00020001, "OB", 2) + b"\x00\x01",
            _header(0x00020002, "UI", len(_uid(sop_class_uid))) + _uid(sop_class_uid),
            _header(0x00020003, "UI", len(_uid(sop_instance_uid))) + _uid(sop_instance_uid),
            _header(0x00020010, "UI", len(_uid(transfer_syntax_uid))) + _uid(transfer_syntax_uid),
            _header(0x00020012, "UI", len(_uid(implementation_class_uid)))
            + _uid(implementation_class_uid),
            _header(0x00020013, "SH", len(version)) + version,
        ]
    )
    group_length = _header(0x00020000, "UL", 4) + struct.pack("<I", len(body))
    return b"\x00" * 128 + b"DICM" + group_length + body
