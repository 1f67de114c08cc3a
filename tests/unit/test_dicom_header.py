"""The fast header walker must agree with the pydicom path it short-cuts."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import factory
import pytest

from transforms.dicom import peek as dicom_peek
from transforms.dicom.header import Unsupported, scan_part10
from transforms.errors import InvalidInputError


def _part10_corpus() -> list[Path]:
    folders = [factory.pydicom_test_files_dir(), factory.pydicom_data_dir()]
    paths = []
    for folder in folders:
        assert folder is not None
        for root, _, names in os.walk(folder):
            for name in sorted(names):
                path = Path(root) / name
                with open(path, "rb") as f:
                    if f.read(132)[128:132] == b"DICM":
                        paths.append(path)
    return sorted(paths)


CORPUS = _part10_corpus()


def _outcome(fn: object, data: bytes, **kwargs: object) -> tuple[object, ...]:
    try:
        r = fn(io.BytesIO(data), path="p", size=len(data), **kwargs)  # type: ignore[operator]
    except InvalidInputError as exc:
        return ("dead_letter", exc.reason)
    except Unsupported:
        return ("unsupported",)
    return ("ok", r.uids, r.sop_class_uid, r.transfer_syntax_uid, r.size)


def test_corpus_is_large() -> None:
    assert len(CORPUS) > 100


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_same_verdict_as_pydicom_on_whole_files(path: Path) -> None:
    data = path.read_bytes()
    fast = _outcome(dicom_peek._peek_fast, data)
    if fast == ("unsupported",):
        pytest.skip("left to pydicom")
    assert fast == _outcome(dicom_peek._peek_with_pydicom, data, is_part10=True)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_never_accepts_a_cut_that_pydicom_refuses(path: Path) -> None:
    data = path.read_bytes()
    step = max(1, len(data) // 25)
    for cut in range(133, len(data), step):
        fast = _outcome(dicom_peek._peek_fast, data[:cut])
        if fast == ("unsupported",):
            continue
        slow = _outcome(dicom_peek._peek_with_pydicom, data[:cut], is_part10=True)
        # Both may name different true reasons (truncated / missing_uid), never ok vs refused.
        assert (fast[0] == "ok") == (slow[0] == "ok"), (cut, fast, slow)


def test_deflated_is_left_to_pydicom() -> None:
    data = factory.testdata("image_dfl.dcm").read_bytes()
    with pytest.raises(Unsupported):
        scan_part10(io.BytesIO(data), len(data), frozenset())


def test_cut_inside_a_nested_sequence_is_truncated() -> None:
    data = factory.testdata("rtplan.dcm").read_bytes()  # deep nested sequences
    for cut in range(400, len(data) - 8, 97):
        result = _outcome(dicom_peek._peek_fast, data[:cut])
        assert result[0] in ("dead_letter", "unsupported"), (cut, result)


def test_values_of_wanted_tags_are_collected() -> None:
    data = factory.testdata("CT_small.dcm").read_bytes()
    scan = scan_part10(io.BytesIO(data), len(data), frozenset({0x00080018, 0x00280010}))
    assert (
        scan.values[0x00080018].rstrip(b"\x00")
        == b"1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    )
    assert int.from_bytes(scan.values[0x00280010], "little") == 128
    assert scan.has_pixels and scan.transfer_syntax == "1.2.840.10008.1.2.1"


# --- store performance: plain elements are skipped in a tight loop (_skip_plain) ---------------


def test_a_plain_element_claiming_more_than_the_file_is_truncated_wherever_it_is() -> None:
    """Every short-VR element of CT_small in turn gets a length past the end of the file: the
    tight loop must hand it to the general walk, which reports it, never skip past the end."""
    data = factory.testdata("CT_small.dcm").read_bytes()
    wanted = frozenset({0x0020000D, 0x0020000E, 0x00080018, 0x00080016})
    offsets = []
    position = 132
    while position + 8 <= len(data):
        group, element, vr, length = struct.unpack_from("<HH2sH", data, position)
        if group == 0x7FE0:
            break
        if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
            (length,) = struct.unpack_from("<L", data, position + 8)
            if length == 0xFFFFFFFF:
                break  # the walk goes into sequences: enough elements before it
            position += 12 + length
            continue
        if group != 0x0002:
            offsets.append(position)
        position += 8 + length
    assert len(offsets) > 30
    for offset in offsets:
        bad = bytearray(data)
        struct.pack_into("<H", bad, offset + 6, 0xFFFF)
        bad = bad[: offset + 8 + 100]  # the file ends long before 64 KiB of value
        with pytest.raises(InvalidInputError) as caught:
            scan_part10(io.BytesIO(bytes(bad)), len(bad), wanted)
        assert caught.value.reason == "truncated"
