"""Unit tests for transforms/dicom_peek.py on pydicom's real test files and generated bad inputs."""

from __future__ import annotations

import io
import os
from pathlib import Path

import factory
import pydicom
import pydicom.uid
import pytest
from pydicom.multival import MultiValue
from pydicom.uid import UID

from transforms.dicom.peek import check_uid, file_meta_prefix, peek_dicom
from transforms.errors import InvalidInputError
from transforms.records import DicomFile, InstanceUids

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on bad UIDs


def peek_path(path: Path) -> DicomFile:
    with open(path, "rb") as f:
        return peek_dicom(f, path=str(path), size=os.path.getsize(path))


def peek_bytes(data: bytes, path: str = "mem.dcm") -> DicomFile:
    return peek_dicom(io.BytesIO(data), path=path, size=len(data))


def reason_of(data: bytes) -> str:
    with pytest.raises(InvalidInputError) as info:
        peek_bytes(data)
    assert factory.PATIENT_NAME not in info.value.message
    return info.value.reason


def test_every_bad_input_gets_its_expected_reason(tmp_path: Path) -> None:
    bad = factory.write_bad_inputs(tmp_path)
    assert len(bad) >= 8
    for item in bad:
        with pytest.raises(InvalidInputError) as info:
            peek_path(item.path)
        assert (item.path.name, info.value.reason) == (item.path.name, item.reason)
        assert info.value.message == str(info.value)
        for secret in (factory.PATIENT_NAME, "SENSITIVE", "1.2.abc.4", "2" * 70):
            assert secret not in info.value.message


@pytest.mark.parametrize(
    ("name", "transfer_syntax"),
    [
        ("CT_small.dcm", pydicom.uid.ExplicitVRLittleEndian),
        ("MR_small.dcm", pydicom.uid.ExplicitVRLittleEndian),
        ("JPEG-lossy.dcm", pydicom.uid.JPEGExtended12Bit),
        ("JPEG2000.dcm", pydicom.uid.JPEG2000),
        ("MR_small_jp2klossless.dcm", pydicom.uid.JPEG2000Lossless),
        ("MR_small_RLE.dcm", pydicom.uid.RLELossless),
        ("MR_small_bigendian.dcm", pydicom.uid.ExplicitVRBigEndian),
        ("image_dfl.dcm", pydicom.uid.DeflatedExplicitVRLittleEndian),
    ],
)
def test_valid_files_are_accepted(name: str, transfer_syntax: str) -> None:
    path = factory.testdata(name)
    ds = pydicom.dcmread(path)
    result = peek_path(path)
    assert result == DicomFile(
        path=str(path),
        size=path.stat().st_size,
        uids=InstanceUids(
            str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        ),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=transfer_syntax,
        file_meta_prefix=b"",
    )
    assert ds.file_meta.TransferSyntaxUID == transfer_syntax
    assert result.file_size == result.size
    assert type(result.uids.sop) is str  # plain strings: records stay cheap to pickle


def test_generated_instances_are_accepted(tmp_path: Path) -> None:
    for path in factory.write_ct_instances(tmp_path, count=3, studies=2, seed="peek"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        result = peek_path(path)
        assert result.uids == InstanceUids(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        )


def test_peek_leaves_big_values_unread(tmp_path: Path) -> None:
    ds = pydicom.dcmread(factory.testdata("CT_small.dcm"))
    ds.Rows, ds.Columns = 1024, 1024
    ds.PixelData = bytes(2 * 1024 * 1024)  # 2 MiB of 16-bit pixels
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    reads: list[int] = []

    class CountingIO(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            reads.append(len(data))
            return data

    data = path.read_bytes()
    result = peek_dicom(CountingIO(data), path=str(path), size=len(data))
    assert result.size == len(data)
    # The header block is read; the 2 MiB of pixels are checked by offset, not read.
    assert sum(reads) < 100 * 1024


@pytest.mark.parametrize(
    ("name", "transfer_syntax", "little_endian"),
    [
        ("ExplVR_LitEndNoMeta.dcm", pydicom.uid.ExplicitVRLittleEndian, True),
        ("ExplVR_BigEndNoMeta.dcm", pydicom.uid.ExplicitVRBigEndian, False),
    ],
)
def test_raw_datasets_get_a_file_meta_prefix(
    name: str, transfer_syntax: str, little_endian: bool
) -> None:
    path = factory.testdata(name)
    raw = path.read_bytes()
    assert raw[128:132] != b"DICM"
    original = pydicom.dcmread(path, force=True)
    result = peek_path(path)
    prefix = result.file_meta_prefix
    assert prefix[:132] == b"\x00" * 128 + b"DICM"
    assert result.size == len(prefix) + len(raw)
    assert result.file_size == len(raw)
    assert result.transfer_syntax_uid == transfer_syntax

    part10 = pydicom.dcmread(io.BytesIO(prefix + raw))
    assert part10.file_meta.TransferSyntaxUID == transfer_syntax
    assert part10.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert part10.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
    assert part10.SOPInstanceUID == original.SOPInstanceUID == result.uids.sop
    assert part10.StudyInstanceUID == result.uids.study
    assert part10.original_encoding == (False, little_endian)
    # Every element reads back the same as from the raw file.
    assert [e.tag for e in part10] == [e.tag for e in original]
    assert part10 == original
    # And the generated Part 10 file is itself accepted, without a prefix this time.
    again = peek_bytes(prefix + raw)
    assert again.file_meta_prefix == b""
    assert again.uids == result.uids
    assert again.transfer_syntax_uid == transfer_syntax


def test_file_meta_prefix_is_even_and_self_consistent() -> None:
    prefix = file_meta_prefix(
        "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", pydicom.uid.ImplicitVRLittleEndian
    )
    assert len(prefix) % 2 == 0
    meta = pydicom.filereader.read_preamble(io.BytesIO(prefix), force=False)
    assert meta == b"\x00" * 128
    ds = pydicom.dcmread(io.BytesIO(prefix), force=True)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    assert ds.file_meta.FileMetaInformationGroupLength == len(prefix) - 132 - 12


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_pydicom_truncated_files_are_truncated(name: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        peek_path(factory.testdata(name))
    assert info.value.reason == "truncated"


def _pixel_data_span(data: bytes) -> tuple[int, int]:
    """Start and end of CT_small's (explicit VR little endian, OW) pixel data value."""
    tag = data.find(b"\xe0\x7f\x10\x00OW\x00\x00")
    assert tag > 0
    length = int.from_bytes(data[tag + 8 : tag + 12], "little")
    return tag + 12, tag + 12 + length


def test_truncation_anywhere_inside_the_pixel_data_is_detected() -> None:
    data = factory.testdata("CT_small.dcm").read_bytes()
    start, end = _pixel_data_span(data)
    assert end - start == 512 * 512 // 8 and end <= len(data)  # 128x128x16 bits
    cuts = [start + (end - start) * k // 51 for k in range(1, 51)]
    assert len(set(cuts)) == 50 and all(start < c < end for c in cuts)
    reasons = {cut: reason_of(data[:cut]) for cut in cuts}
    assert set(reasons.values()) == {"truncated"}


@pytest.mark.parametrize("offset", [1, 2, 5, 7])
def test_truncation_inside_the_pixel_data_tag_and_vr_is_detected(offset: int) -> None:
    data = factory.testdata("CT_small.dcm").read_bytes()
    header = _pixel_data_span(data)[0] - 12
    assert reason_of(data[: header + offset]) == "truncated"


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("CT_small.dcm", "pixel data length"),
        ("CT_small.dcm", 142),  # inside the File Meta group length value
        ("JPEG2000.dcm", 900),  # inside a sequence of the dataset
    ],
)
def test_truncation_inside_a_long_element_header_or_sequence_is_truncated(
    name: str, where: int | str
) -> None:
    data = factory.testdata(name).read_bytes()
    cut = _pixel_data_span(data)[0] - 2 if where == "pixel data length" else int(where)
    assert reason_of(data[:cut]) == "truncated"


def test_truncation_inside_elements_after_the_pixel_data_is_detected() -> None:
    data = factory.testdata("CT_small.dcm").read_bytes()
    end = _pixel_data_span(data)[1]
    assert end < len(data)  # CT_small has elements after its pixels
    boundaries = set()
    position = end
    while position < len(data):  # explicit VR little endian: (FFFC,FFFC) OB padding here
        vr = data[position + 4 : position + 6]
        assert vr.isalpha()
        if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
            position += 12 + int.from_bytes(data[position + 8 : position + 12], "little")
        else:
            position += 8 + int.from_bytes(data[position + 6 : position + 8], "little")
        boundaries.add(position)
    assert position == len(data) and len(boundaries) >= 1
    cuts = [cut for cut in range(end + 1, len(data)) if cut not in boundaries]
    assert len(cuts) > 100
    assert {reason_of(data[:cut]) for cut in cuts} == {"truncated"}


def test_a_header_without_its_pixels_is_truncated() -> None:
    data = factory.testdata("CT_small.dcm").read_bytes()
    header = _pixel_data_span(data)[0] - 12
    assert reason_of(data[:header]) == "truncated"


@pytest.mark.parametrize("cut", [140, 200, 260, 300])
def test_truncation_inside_the_file_meta_is_truncated(cut: int) -> None:
    data = factory.testdata("CT_small.dcm").read_bytes()
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    assert cut < meta_end
    assert reason_of(data[:cut]) == "truncated"


def test_encapsulated_pixel_data_cut_in_a_fragment_is_truncated() -> None:
    data = factory.testdata("JPEG2000.dcm").read_bytes()
    assert reason_of(data[: len(data) - 100]) == "truncated"
    assert reason_of(data[: len(data) - 4]) == "truncated"  # inside the sequence delimiter


@pytest.mark.parametrize(
    "data",
    [b"", b"DICM", b"\x00" * 132, b"\x00" * 128 + b"DICX" + b"\x00" * 100, b"hello world" * 50],
)
def test_not_dicom(data: bytes) -> None:
    assert reason_of(data) == "not_dicom"


def test_raw_dataset_without_sop_uid_is_not_dicom() -> None:
    ds = pydicom.Dataset()
    ds.PatientName = factory.PATIENT_NAME
    ds.StudyInstanceUID = "1.2.3"
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=True, little_endian=True)
    assert reason_of(buffer.getvalue()) == "not_dicom"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "missing_uid"),
        ("", "missing_uid"),
        ("1." + "2" * 63, "invalid_uid"),  # 65 characters
        ("1.2.abc", "invalid_uid"),
        ("1.2 .3", "invalid_uid"),
        (" 1.2.3", "invalid_uid"),
        ("1.2.3.", "invalid_uid"),
        (".1.2", "invalid_uid"),
        ("1..2", "invalid_uid"),
        ("1.2.٣", "invalid_uid"),  # a non-ASCII digit
        (MultiValue(str, ["1.2", "1.3"]), "invalid_uid"),
        (123, "invalid_uid"),
        (b"1.2.3", "invalid_uid"),
    ],
)
def test_check_uid_refuses(value: object, reason: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_uid(value, "SOPInstanceUID (0008,0018)")
    assert info.value.reason == reason
    assert info.value.message.startswith("SOPInstanceUID (0008,0018) ")
    if isinstance(value, str) and value:
        assert value not in info.value.message


@pytest.mark.parametrize(
    "value", ["1", "0", "1.2.840.10008.1.2.1", "1." + "2" * 62, UID("1.2.840.10008.1.2")]
)
def test_check_uid_accepts(value: str) -> None:
    assert len(value) <= 64
    result = check_uid(value, "x")
    assert result == value
    assert isinstance(result, str)


def test_check_uid_refuses_a_trailing_newline() -> None:
    with pytest.raises(InvalidInputError):
        check_uid("1.2.3\n", "SOPInstanceUID")


# --- fuzzed headers (store hardening) --------------------------------------------------------


def _raw_dataset() -> bytes:
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    ds.PatientName = factory.PATIENT_NAME
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.5"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.PixelData = 2, 2, 8, b"\0" * 4
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(buffer, ds)
    return buffer.getvalue()


def test_a_corrupt_vr_read_lazily_is_not_dicom_not_an_exception() -> None:
    data = bytearray(_raw_dataset())
    at = data.index(b"1.2.3.4\x00") - 4  # the VR of StudyInstanceUID (0020,000D)
    assert data[at : at + 2] == b"UI"
    data[at : at + 2] = b"\x55\xfd"
    with pytest.raises(InvalidInputError) as info:
        peek_bytes(bytes(data))
    assert info.value.reason == "not_dicom"
    assert "NotImplementedError" in info.value.message


@pytest.mark.parametrize("source", ["raw", "CT_small.dcm", "MR_small.dcm", "rtplan.dcm"])
def test_mutated_headers_give_a_record_or_a_reason_never_another_exception(source: str) -> None:
    import random

    if source == "raw":
        original = _raw_dataset()
    else:
        original = Path(pydicom.data.get_testdata_file(source, download=False)).read_bytes()
    rng = random.Random(source)
    for _ in range(300):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(min(len(data), 2000))] = rng.randrange(256)
        try:
            peek_bytes(bytes(data))
        except InvalidInputError as exc:
            assert factory.PATIENT_NAME not in exc.message
