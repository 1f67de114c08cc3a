"""DICOM JSON + JPEG -> validated instance -> Part 10: UID policy, reconciliation, encapsulation."""

from __future__ import annotations

import io
import json
from typing import Any

import jpeg_factory as jf
import numpy as np
import pydicom
import pytest
from factory import PATIENT_NAME
from PIL import Image
from pydicom.encaps import generate_fragmented_frames, get_frame_offsets

from transforms.dicom import build, encode
from transforms.dicom.jpeg import read_jpeg_info
from transforms.errors import InvalidInputError


def prepared(
    meta: dict[str, Any], data: bytes, options: build.BuildOptions | None = None, **kw: Any
) -> build.PreparedInstance:
    args = dict(source="/in/a.json", json_path="/in/a.json", jpeg_path="/in/a.jpg", folder="/in")
    args.update(kw)
    return build.prepare(
        meta,
        read_jpeg_info(io.BytesIO(data), len(data)),
        options or build.BuildOptions(),
        jpeg_size=len(data),
        **args,
    )


def refusal(meta: Any, data: bytes, options: build.BuildOptions | None = None) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        prepared(meta, data, options)
    assert PATIENT_NAME not in caught.value.message
    return caught.value


@pytest.mark.parametrize(
    "jpeg_kwargs, photometric",
    [
        ({"subsampling": 2}, "YBR_FULL_422"),
        ({"subsampling": 0}, "YBR_FULL"),
        ({"colour": False}, "MONOCHROME2"),
    ],
)
def test_part10_decodes_to_the_jpeg_pixels(jpeg_kwargs: dict[str, Any], photometric: str) -> None:
    data = jf.jpeg_bytes(40, 24, **jpeg_kwargs)
    p = prepared(jf.metadata("one"), data)
    ds = pydicom.dcmread(io.BytesIO(build.build_part10(p, data)))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == p.uids.sop
    assert (ds.Rows, ds.Columns, ds.PhotometricInterpretation) == (24, 40, photometric)
    assert str(ds.PatientName) == PATIENT_NAME
    # The JPEG is encapsulated unchanged, one fragment, after a basic offset table of one entry.
    (fragments,) = list(generate_fragmented_frames(ds.PixelData, number_of_frames=1))
    assert fragments == (data + b"\x00" * (len(data) % 2),)
    stream = pydicom.filebase.DicomBytesIO(ds.PixelData)
    stream.is_little_endian = True
    assert get_frame_offsets(stream) == (True, [0])
    colour = "colour" not in jpeg_kwargs
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB" if colour else "L"))
    # Decoders differ a little in chroma upsampling; the picture must be the same.
    assert np.abs(ds.pixel_array.astype(int) - reference.astype(int)).mean() < 2


def test_twelve_bit_extended_builds_with_its_syntax() -> None:
    data = jf.extended_12bit_jpeg()
    p = prepared(jf.metadata("twelve"), data)
    ds = pydicom.dcmread(io.BytesIO(build.build_part10(p, data)))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51"
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
    original = pydicom.dcmread(jf.testdata("JPGExtended.dcm"))
    assert np.array_equal(ds.pixel_array, original.pixel_array)


def test_attributes_absent_are_filled_and_present_ones_kept() -> None:
    meta = jf.metadata("fill", **{"00280010": {"vr": "US", "Value": [24]}})
    p = prepared(meta, jf.jpeg_bytes())
    out = json.loads(p.metadata_json)
    assert out["00280010"]["Value"] == [24] and out["00280011"]["Value"] == [40]
    assert out["00280004"]["Value"] == ["YBR_FULL_422"]
    assert out["00282110"]["Value"] == ["01"]  # lossy compression stated
    assert "7FE00010" not in out


def test_guide_template_photometric_is_wrong_for_greyscale_unless_fixed() -> None:
    meta = jf.metadata(
        "grey",
        **{
            "00280004": {"vr": "CS", "Value": ["YBR_FULL_422"]},
            "00020010": {"vr": "UI", "Value": ["1.2.840.10008.1.2.4.50"]},
            "7FE00010": {"vr": "OB", "BulkDataURI": "jpeg-image"},
        },
    )
    grey = jf.jpeg_bytes(colour=False)
    error = refusal(meta, grey)
    assert error.reason == "metadata_mismatch"
    assert "PhotometricInterpretation is YBR_FULL_422" in error.message
    assert "--fix_metadata" in error.message
    fixed = prepared(meta, grey, build.BuildOptions(fix_metadata=True))
    assert json.loads(fixed.metadata_json)["00280004"]["Value"] == ["MONOCHROME2"]


def test_declared_transfer_syntax_must_match_the_process() -> None:
    meta = jf.metadata("ts", **{"00020010": {"vr": "UI", "Value": ["1.2.840.10008.1.2.4.50"]}})
    error = refusal(meta, jf.extended_12bit_jpeg())
    assert error.reason == "metadata_mismatch" and "1.2.840.10008.1.2.4.51" in error.message


@pytest.mark.parametrize(
    "meta, expected",
    [
        ({"PatientName": PATIENT_NAME}, "not_dicom_json"),
        ({"00100010": {"vr": "XX", "Value": [PATIENT_NAME]}}, "not_dicom_json"),
        (jf.metadata("x", **{"7FE00010": {"vr": "OB", "InlineBinary": "AAAA"}}), "not_dicom_json"),
        (jf.metadata("x", **{"00420011": {"vr": "OB", "BulkDataURI": "a.pdf"}}), "not_dicom_json"),
        (jf.metadata("x", uids=False), "missing_uid"),
        (jf.metadata("x", sop_class=None), "missing_uid"),
        (jf.metadata("x", sop="1.2.3a"), "invalid_uid"),
        (jf.metadata("x", study="1." + "2" * 70), "invalid_uid"),
        (jf.metadata("x", **{"00280008": {"vr": "IS", "Value": [3]}}), "metadata_mismatch"),
    ],
)
def test_refusals(meta: dict[str, Any], expected: str) -> None:
    assert refusal(meta, jf.jpeg_bytes()).reason == expected


def test_load_dicom_json_accepts_an_array_of_one_only() -> None:
    assert build.load_dicom_json('[{"00080060": {"vr": "CS", "Value": ["XC"]}}]')
    for text in ("[]", "[{}, {}]", "3", "{nope"):
        with pytest.raises(InvalidInputError):
            build.load_dicom_json(text)
    assert build.pixel_data_uri(jf.metadata("u", pixel_uri="x.jpg")) == "x.jpg"


def test_generated_uids_are_deterministic_and_shared_by_a_folder() -> None:
    options = build.BuildOptions(generate_uids=True, uid_root="1.2.3.4")
    data = jf.jpeg_bytes()
    meta = jf.metadata("gen", uids=False)
    a = prepared(meta, data, options, source="/in/a.json", content_digest="da")
    again = prepared(meta, data, options, source="/in/a.json", content_digest="da")
    b = prepared(meta, data, options, source="/in/b.json", content_digest="db")
    other = prepared(meta, data, options, source="/other/c.json", folder="/other")
    assert a.uids == again.uids
    assert (a.uids.study, a.uids.series) == (b.uids.study, b.uids.series)
    assert a.uids.sop != b.uids.sop
    assert other.uids.study != a.uids.study
    assert [k for k, _ in a.generated_uids] == [
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"
    ]  # fmt: skip
    for _, value in a.generated_uids:
        assert value.startswith("1.2.3.4.") and len(value) <= 64
    # A UID the metadata gives is kept; only the missing ones are generated.
    given = prepared(jf.metadata("gen", sop=None, uids=True), data, options)
    assert [k for k, _ in given.generated_uids] == []
    # SOPClassUID is never generated, but --sop_class_uid supplies it.
    no_class = jf.metadata("gen", sop_class=None, uids=False)
    assert refusal(no_class, data, options).reason == "missing_uid"
    supplied = build.BuildOptions(generate_uids=True, sop_class_uid=jf.VL_PHOTOGRAPHIC)
    assert prepared(no_class, data, supplied).sop_class_uid == jf.VL_PHOTOGRAPHIC


def test_bad_build_options_are_refused() -> None:
    with pytest.raises(ValueError, match="uid_root"):
        build.BuildOptions(uid_root="1.2.x")
    with pytest.raises(ValueError, match="longer"):
        build.BuildOptions(uid_root="1." + "2" * 50)


def test_a_generated_series_depends_on_the_study_it_belongs_to() -> None:
    options = build.BuildOptions(generate_uids=True)
    data = jf.jpeg_bytes()
    metas = [jf.metadata("s", study=jf.uid(f"study-{n}")) for n in "ab"]
    for meta in metas:
        del meta["0020000E"]
    a, b = (prepared(meta, data, options) for meta in metas)
    assert a.uids.series != b.uids.series
    assert [k for k, _ in a.generated_uids] == ["SeriesInstanceUID"]


def test_lossless_jpeg_builds_with_its_syntax_and_decodes_unchanged() -> None:
    from pydicom.encaps import generate_frames

    original = pydicom.dcmread(jf.testdata("JPEG-LL.dcm"))
    data = next(generate_frames(original.PixelData, number_of_frames=1))
    p = prepared(jf.metadata("lossless"), data)
    ds = pydicom.dcmread(io.BytesIO(build.build_part10(p, data)))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    assert "LossyImageCompression" not in ds
    assert np.array_equal(ds.pixel_array, original.pixel_array)


@pytest.mark.parametrize(
    "extra",
    [
        {},  # flat text and numbers: encoded here
        {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Dupré^Zoë", "Ideographic": "X"}]}},
        {"00181030": {"vr": "LO", "Value": ["a", "b"]}, "00280030": {"vr": "DS", "Value": ["0.5"]}},
        {"00186011": {"vr": "SQ", "Value": [{"00186012": {"vr": "US", "Value": [1]}}]}},  # pydicom
        {"00280030": {"vr": "DS", "Value": [0.25, 0.25]}},  # float DS: pydicom formats it
        {"00080005": {"vr": "CS", "Value": ["ISO_IR 100"]}},  # another charset: pydicom
        {"00091010": {"vr": "OB", "InlineBinary": "AAAA"}},  # binary: pydicom
        {"00280009": {"vr": "AT", "Value": ["00181063"]}},  # AT: pydicom
        {"00081030": {"vr": "LO"}, "00200020": {"vr": "CS", "Value": ["A", "F"]}},  # empty value
        {"00181063": {"vr": "DS", "Value": ["33.3"]}, "00209057": {"vr": "UL", "Value": [7]}},
    ],
)
def test_the_fast_layout_equals_pydicoms_own(extra: dict[str, Any]) -> None:
    data = jf.jpeg_bytes(33, 17)
    p = prepared(jf.metadata("same", **extra), data)
    fast = build.build_part10(p, data)
    slow = build._build_with_pydicom(
        pydicom.Dataset.from_json(p.metadata_json), build._file_meta(p), data
    )
    assert fast == slow
    assert pydicom.dcmread(io.BytesIO(fast)).pixel_array.shape == (17, 33, 3)
    if not extra:  # plain metadata really takes the fast path
        assert encode.encode_dataset(json.loads(p.metadata_json)) is not None


def test_elements_after_pixel_data_go_through_pydicom() -> None:
    data = jf.jpeg_bytes(33, 17)
    meta = jf.metadata("trailing", **{"FFFCFFFC": {"vr": "OB", "InlineBinary": "AAAA"}})
    ds = pydicom.dcmread(io.BytesIO(build.build_part10(prepared(meta, data), data)))
    assert "DataSetTrailingPadding" in ds and ds.pixel_array.shape == (17, 33, 3)


@pytest.mark.parametrize(
    "options, drop",
    [
        (build.BuildOptions(), ()),
        (build.BuildOptions(generate_uids=True), ("0020000D", "0020000E", "00080018")),
        (build.BuildOptions(sop_class_uid="1.2.840.10008.5.1.4.1.1.7"), ("00080016",)),
        (build.BuildOptions(fix_metadata=True), ()),
    ],
)
def test_a_slim_pair_completed_from_its_file_has_the_same_metadata(
    options: build.BuildOptions, drop: tuple[str, ...]
) -> None:
    meta = jf.metadata("slim", **{"00280004": {"vr": "CS", "Value": ["YBR_FULL_422"]}})
    for tag in drop:
        meta.pop(tag)
    text = json.dumps(meta).encode()
    data = jf.jpeg_bytes(colour=False)  # disagrees with YBR_FULL_422: fixed, or refused
    if not options.fix_metadata:
        meta["00280004"]["Value"] = ["MONOCHROME2"]
        text = json.dumps(meta).encode()
    full = prepared(
        meta, data, options, content_digest="d" * 64, json_digest=build.json_digest(text)
    )
    small = build.slim(full)
    assert small.is_slim and small.metadata_json == ""
    assert build.complete(small, text) == full


def test_completing_a_slim_pair_refuses_a_json_file_that_changed() -> None:
    meta = jf.metadata("changed")
    text = json.dumps(meta).encode()
    full = prepared(meta, jf.jpeg_bytes(), json_digest=build.json_digest(text))
    meta["00100020"] = {"vr": "LO", "Value": ["OTHER"]}
    with pytest.raises(InvalidInputError) as caught:
        build.complete(build.slim(full), json.dumps(meta).encode())
    assert caught.value.reason == "unreadable" and "changed" in caught.value.message


def test_template_pairs_are_not_slimmed() -> None:
    full = prepared(jf.metadata("template"), jf.jpeg_bytes(), json_path=None)
    assert build.slim(full) is full


def test_a_pair_crosses_groupings_as_plain_values() -> None:
    meta = jf.metadata("row")
    meta.pop("00080018")
    text = json.dumps(meta).encode()
    pair = prepared(
        meta,
        jf.jpeg_bytes(subsampling=0),
        build.BuildOptions(generate_uids=True),
        content_digest="e" * 64,
        json_digest=build.json_digest(text),
    )
    assert pair.generated_uids and pair.jpeg_info is not None
    for p in (pair, build.slim(pair)):
        row = build.to_row(p)
        assert all(isinstance(v, str | int | bool | tuple | type(None)) for v in row)
        assert build.from_row(row) == p
        # A coder may hand nested tuples back as lists.
        listed = tuple(list(v) if isinstance(v, tuple) else v for v in row)
        assert build.from_row(listed) == p
