"""JPEG header reading: dimensions, components, subsampling, precision, process, and refusals."""

from __future__ import annotations

import io

import jpeg_factory as jf
import pytest

from transforms.dicom import jpeg
from transforms.errors import InvalidInputError


def info(data: bytes) -> jpeg.JpegInfo:
    return jpeg.read_jpeg_info(io.BytesIO(data), len(data))


def reason(data: bytes) -> str:
    with pytest.raises(InvalidInputError) as caught:
        info(data)
    return caught.value.reason


@pytest.mark.parametrize(
    "kwargs, photometric, sampling",
    [
        ({"subsampling": 2}, "YBR_FULL_422", ((2, 2), (1, 1), (1, 1))),  # 4:2:0
        ({"subsampling": 1}, "YBR_FULL_422", ((2, 1), (1, 1), (1, 1))),  # 4:2:2
        ({"subsampling": 0}, "YBR_FULL", ((1, 1), (1, 1), (1, 1))),  # 4:4:4
        ({"colour": False}, "MONOCHROME2", ((1, 1),)),
    ],
)
def test_baseline_attributes(kwargs: dict[str, object], photometric: str, sampling: object) -> None:
    got = info(jf.jpeg_bytes(40, 24, **kwargs))  # type: ignore[arg-type]
    assert (got.rows, got.columns, got.precision, got.process) == (24, 40, 8, "baseline")
    assert got.sampling == sampling
    assert got.photometric_interpretation == photometric
    assert got.transfer_syntax_uid == jpeg.JPEG_BASELINE
    attrs = got.dicom_attributes()
    assert attrs["BitsAllocated"] == 8 and attrs["BitsStored"] == 8 and attrs["HighBit"] == 7
    assert attrs["SamplesPerPixel"] == got.components
    assert ("PlanarConfiguration" in attrs) == (got.components == 3)


def test_twelve_bit_extended_from_pydicom() -> None:
    got = info(jf.extended_12bit_jpeg())
    assert (got.rows, got.columns, got.precision, got.process) == (1024, 256, 12, "extended")
    assert got.transfer_syntax_uid == jpeg.JPEG_EXTENDED
    attrs = got.dicom_attributes()
    assert (attrs["BitsAllocated"], attrs["BitsStored"], attrs["HighBit"]) == (16, 12, 11)


def test_lossless_selection_value_picks_the_syntax() -> None:
    from pydicom import dcmread
    from pydicom.encaps import generate_frames

    ds = dcmread(jf.testdata("JPEG-LL.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    got = info(frame)
    assert got.process == "lossless" and got.predictor == 1
    assert got.transfer_syntax_uid == jpeg.JPEG_LOSSLESS_SV1 == ds.file_meta.TransferSyntaxUID
    # The same stream with another predictor (Ss of the scan header) is process 14, .57.
    sos = frame.index(b"\xff\xda")
    ns = frame[sos + 4]
    ss_at = sos + 5 + 2 * ns
    other = frame[:ss_at] + bytes([6]) + frame[ss_at + 1 :]
    assert info(other).transfer_syntax_uid == jpeg.JPEG_LOSSLESS


def test_adobe_transform_zero_means_rgb() -> None:
    data = jf.jpeg_bytes(subsampling=0)
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"  # transform 0
    got = info(data[:2] + adobe + data[2:])
    assert got.rgb and got.photometric_interpretation == "RGB"


def test_large_application_segments_are_skipped() -> None:
    data = jf.jpeg_bytes()
    app2 = b"\xff\xe2\xff\xff" + b"\x00" * 0xFFFD
    got = info(data[:2] + app2 * 3 + data[2:])
    assert (got.rows, got.columns) == (24, 40)


def test_padding_after_eoi_is_tolerated() -> None:
    assert info(jf.jpeg_bytes() + b"\x00").rows == 24


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", "not_jpeg"),
        (jf.png_bytes(), "not_jpeg"),
        (b"\xff\xd8" + b"\x00" * 100, "not_jpeg"),
        (b"\xff\xd8\xff\xd9", "not_jpeg"),
        (jf.jpeg_bytes()[:300], "truncated"),
        (jf.jpeg_bytes()[:-2], "truncated"),
        (jf.jpeg_bytes()[:20], "truncated"),
        (jf.jpeg_bytes(progressive=True), "progressive_jpeg"),
        (jf.jpeg_bytes() + b"trailing garbage after the image" * 4, "truncated"),
    ],
)
def test_refusals(data: bytes, expected: str) -> None:
    assert reason(data) == expected


def test_arithmetic_and_cmyk_are_unsupported() -> None:
    data = bytearray(jf.jpeg_bytes(colour=False))
    sof = data.index(b"\xff\xc0")
    arithmetic = bytes(data[: sof + 1]) + b"\xc9" + bytes(data[sof + 2 :])
    assert reason(arithmetic) == "unsupported_jpeg"
    two = bytes(data[: sof + 9]) + b"\x02" + bytes(data[sof + 10 :])  # Nf=2 (header now short)
    assert reason(two) in ("unsupported_jpeg", "not_jpeg")


def test_component_ids_r_g_b_without_jfif_mean_rgb() -> None:
    data = jf.jpeg_bytes(subsampling=0)
    app0 = data.index(b"\xff\xe0")
    no_jfif = data[:app0] + data[app0 + 2 + int.from_bytes(data[app0 + 2 : app0 + 4], "big") :]
    sof = no_jfif.index(b"\xff\xc0")
    ids = bytearray(no_jfif)
    for n, letter in enumerate(b"RGB"):
        ids[sof + 10 + 3 * n] = letter  # Ci of each component (after Nf at sof + 9)
    got = info(bytes(ids))
    assert got.rgb and got.photometric_interpretation == "RGB"
    assert not info(no_jfif).rgb


@pytest.mark.parametrize("block", [8, 64, 1 << 20])
def test_the_header_read_from_one_block_or_in_pieces_says_the_same(
    monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    data = jf.jpeg_bytes(subsampling=2)
    # Fill bytes and a standalone marker before the frame header: the reader's walk.
    odd = data[:2] + b"\xff\xff\xff\x01" + data[2:]
    monkeypatch.setattr(jpeg, "_BLOCK", block)
    for d in (data, odd):
        got = info(d)
        assert (got.rows, got.columns, got.sampling) == (24, 40, ((2, 2), (1, 1), (1, 1)))
        assert got.transfer_syntax_uid == jpeg.JPEG_BASELINE
