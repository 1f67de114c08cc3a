"""Unit tests for transforms/stow_response.py on real server answers and hand-made edge cases."""

from __future__ import annotations

import json
from typing import Any

import factory
import pydicom
import pytest
import requests

from transforms.dicomweb.multipart import Part, multipart_related, new_boundary
from transforms.dicomweb.stow_response import (
    BadStowResponse,
    InstanceResult,
    StowResponse,
    parse_stow_response,
)

TIMEOUT = 30
STANDIN_AUTH = {"Authorization": "Bearer standin-token"}


def _ct() -> tuple[bytes, pydicom.Dataset]:
    path = factory.testdata("CT_small.dcm")
    return path.read_bytes(), pydicom.dcmread(path, stop_before_pixels=True)


def _stow(url: str, data: bytes, headers: dict[str, str]) -> requests.Response:
    body, content_type = multipart_related(
        [Part("application/dicom", (data,))],
        root_type="application/dicom",
        boundary=new_boundary(),
    )
    return requests.post(
        url, data=body, headers={"Content-Type": content_type, **headers}, timeout=TIMEOUT
    )


def test_real_orthanc_json_answer(orthanc: Any) -> None:
    data, ds = _ct()
    resp = _stow(orthanc.dicomweb_url + "/studies", data, {"Accept": "application/dicom+json"})
    assert resp.status_code == 200
    parsed = parse_stow_response(resp.content, resp.headers.get("Content-Type", ""))
    sop = str(ds.SOPInstanceUID)
    assert list(parsed.referenced) == [sop]
    assert parsed.failed == {}
    result = parsed.referenced[sop]
    assert result.sop_uid == sop
    assert result.sop_class_uid == str(ds.SOPClassUID)
    assert result.failure_reason is None
    assert result.already_exists is False
    assert result.retrieve_url == (
        f"{orthanc.dicomweb_url}/studies/{ds.StudyInstanceUID}"
        f"/series/{ds.SeriesInstanceUID}/instances/{sop}"
    )
    assert parsed.retrieve_url == f"{orthanc.dicomweb_url}/studies/{ds.StudyInstanceUID}"


def test_real_orthanc_xml_answer(orthanc: Any) -> None:
    data, ds = _ct()
    resp = _stow(orthanc.dicomweb_url + "/studies", data, {"Accept": "application/dicom+xml"})
    assert resp.status_code == 200
    assert "xml" in resp.headers["Content-Type"]
    parsed = parse_stow_response(resp.content, resp.headers["Content-Type"])
    assert list(parsed.referenced) == [str(ds.SOPInstanceUID)]
    assert parsed.referenced[str(ds.SOPInstanceUID)].sop_class_uid == str(ds.SOPClassUID)


def test_google_xml_answer_for_a_duplicate(google_standin: Any) -> None:
    data, ds = _ct()
    url = google_standin.dicomweb_url + "/studies"
    first = _stow(url, data, STANDIN_AUTH)
    assert first.status_code == 200
    stored = parse_stow_response(first.content, first.headers["Content-Type"])
    assert list(stored.referenced) == [str(ds.SOPInstanceUID)]

    second = _stow(url, data, STANDIN_AUTH)
    assert second.status_code == 409
    assert second.content.lstrip().startswith(b"<?xml")
    parsed = parse_stow_response(second.content, second.headers["Content-Type"])
    assert parsed.referenced == {}
    result = parsed.failed[str(ds.SOPInstanceUID)]
    assert result.failure_reason == 272
    assert result.failure_reason_hex == "0x0110"
    assert result.detail is not None and "already exists" in result.detail
    assert result.already_exists is True
    assert result.sop_class_uid == str(ds.SOPClassUID)
    assert parsed.retrieve_url == f"{google_standin.dicomweb_url}/studies/{ds.StudyInstanceUID}"


def test_google_json_answer_for_a_duplicate(google_standin: Any) -> None:
    data, ds = _ct()
    url = google_standin.dicomweb_url + "/studies"
    headers = {**STANDIN_AUTH, "Accept": "application/dicom+json"}
    assert _stow(url, data, headers).status_code == 200
    second = _stow(url, data, headers)
    assert second.status_code == 409
    assert "00091097" in second.json()["00081198"]["Value"][0]
    result = parse_stow_response(second.content, second.headers["Content-Type"]).failed[
        str(ds.SOPInstanceUID)
    ]
    assert result.already_exists is True
    assert result.failure_reason_hex == "0x0110"


def _item(sop: str, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00081155": {"vr": "UI", "Value": [sop]},
    }
    for tag, (vr, value) in extra.items():
        item[tag] = {"vr": vr, "Value": [value]}
    return item


def _dataset(referenced: list[dict[str, Any]], failed: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"00081190": {"vr": "UR", "Value": ["http://h/studies/1"]}}
    if referenced:
        out["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        out["00081198"] = {"vr": "SQ", "Value": failed}
    return out


def test_json_with_google_detail_tag() -> None:
    body = json.dumps(
        _dataset(
            [_item("1.1", **{"00081190": ("UR", "http://h/1.1"), "00081196": ("US", 0xB000)})],
            [
                _item(
                    "1.2",
                    **{"00081197": ("US", 272), "00091097": ("LO", "Instance  already\n exists")},
                )
            ],
        )
    ).encode()
    parsed = parse_stow_response(body, "application/dicom+json")
    assert parsed.retrieve_url == "http://h/studies/1"
    ok = parsed.referenced["1.1"]
    assert (ok.retrieve_url, ok.warning_reason, ok.failure_reason) == ("http://h/1.1", 0xB000, None)
    failed = parsed.failed["1.2"]
    assert failed.detail == "Instance already exists"  # whitespace collapsed
    assert failed.already_exists
    assert failed.failure_reason_hex == "0x0110"


def test_json_failure_without_detail_is_not_already_exists() -> None:
    body = json.dumps(_dataset([], [_item("1.2", **{"00081197": ("US", 272)})])).encode()
    result = parse_stow_response(body).failed["1.2"]
    assert result.detail is None
    assert result.already_exists is False
    assert result.failure_reason_hex == "0x0110"


@pytest.mark.parametrize("reason", [0x0111, "273"])
def test_duplicate_sop_instance_reason_counts_as_already_exists(reason: int | str) -> None:
    body = json.dumps(_dataset([], [_item("1.2", **{"00081197": ("US", reason)})])).encode()
    result = parse_stow_response(body).failed["1.2"]
    assert result.failure_reason == 0x0111
    assert result.failure_reason_hex == "0x0111"
    assert result.already_exists is True


@pytest.mark.parametrize(
    ("reason", "detail", "expected"),
    [
        (0xA700, None, False),
        # Words alone never make a duplicate: only with Google's processing-failure code.
        (0xC000, "Duplicate SOP instance", False),
        (0xC000, "it ALREADY EXISTS", False),
        (0xA700, "duplicate key: already exists", False),
        (None, "already exists", False),
        (0x0110, "Instance already exists", True),
        (0x0110, "Instance ALREADY EXISTS", True),
        (0x0110, "processing failed", False),
        (0x0111, None, True),
        (0xC000, "study instance UID mismatch", False),
        (None, None, False),
    ],
)
def test_already_exists_rules(reason: int | None, detail: str | None, expected: bool) -> None:
    assert InstanceResult("1", failure_reason=reason, detail=detail).already_exists is expected


def test_failure_reason_hex() -> None:
    assert InstanceResult("1", failure_reason=0xA700).failure_reason_hex == "0xA700"
    assert InstanceResult("1", failure_reason=0x0110).failure_reason_hex == "0x0110"
    assert InstanceResult("1").failure_reason_hex is None


@pytest.mark.parametrize("body", [b"", b"   \r\n\t"])
def test_empty_body_is_an_empty_response(body: bytes) -> None:
    assert parse_stow_response(body, "application/dicom+json") == StowResponse()
    assert parse_stow_response(body) == StowResponse()


@pytest.mark.parametrize(
    "body",
    [
        b"garbage",
        b"\x00\x01\x02\xff",
        b"{not json",
        b"null",
        b"42",
        b'"text"',
        b"[]",
        b"[{}, {}]",
        b"<NativeDicomModel><unclosed></NativeDicomModel>",
        b"<html><body>Bad gateway<br></body></html>",
    ],
)
def test_garbage_raises_bad_stow_response(body: bytes) -> None:
    with pytest.raises(BadStowResponse):
        parse_stow_response(body)


def test_xml_content_type_wins_over_sniffing() -> None:
    with pytest.raises(BadStowResponse, match="not XML"):
        parse_stow_response(b'{"00081199": {}}', "application/dicom+xml; charset=utf-8")


XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">
  <DicomAttribute tag="00081190" vr="UR"><Value number="1">http://h/studies/1</Value></DicomAttribute>
  <DicomAttribute tag="00081198" vr="SQ">
    <Item number="1">
      <DicomAttribute tag="00081150" vr="UI"><Value number="1">1.2.840.1</Value></DicomAttribute>
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">1.2</Value></DicomAttribute>
      <DicomAttribute tag="00081197" vr="US"><Value number="1">273</Value></DicomAttribute>
    </Item>
    <Item number="2">
      <DicomAttribute tag="00081150" vr="UI"><Value number="1">1.2.840.1</Value></DicomAttribute>
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">1.3</Value></DicomAttribute>
      <DicomAttribute tag="00081197" vr="US"><Value number="1">43264</Value></DicomAttribute>
      <DicomAttribute tag="00090097" vr="LO"><Value number="1">mismatch</Value></DicomAttribute>
    </Item>
  </DicomAttribute>
  <DicomAttribute tag="00081199" vr="SQ">
    <Item number="1">
      <DicomAttribute tag="00081150" vr="UI"><Value number="1">1.2.840.1</Value></DicomAttribute>
      <DicomAttribute tag="00081155" vr="UI"><Value number="1"> 1.1 </Value></DicomAttribute>
      <DicomAttribute tag="00081190" vr="UR"><Value number="1">http://h/1.1</Value></DicomAttribute>
    </Item>
  </DicomAttribute>
</NativeDicomModel>
"""


def test_xml_with_namespace() -> None:
    parsed = parse_stow_response(XML, "application/dicom+xml")
    assert parsed.retrieve_url == "http://h/studies/1"
    assert list(parsed.referenced) == ["1.1"]
    assert parsed.referenced["1.1"].retrieve_url == "http://h/1.1"
    assert parsed.referenced["1.1"].sop_class_uid == "1.2.840.1"
    assert set(parsed.failed) == {"1.2", "1.3"}
    assert parsed.failed["1.2"].already_exists is True
    assert parsed.failed["1.2"].failure_reason_hex == "0x0111"
    mismatch = parsed.failed["1.3"]
    assert (mismatch.failure_reason, mismatch.detail) == (0xA900, "mismatch")
    assert mismatch.already_exists is False


def test_xml_without_namespace_and_sniffed_without_content_type() -> None:
    body = XML.replace(b' xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM"', b"")
    assert parse_stow_response(body) == parse_stow_response(XML, "application/dicom+xml")


def test_json_array_wrapping_the_dataset() -> None:
    dataset = _dataset([_item("1.1")], [_item("1.2", **{"00081197": ("US", 0xA700)})])
    wrapped = parse_stow_response(json.dumps([dataset]).encode(), "application/dicom+json")
    assert wrapped == parse_stow_response(json.dumps(dataset).encode())
    assert list(wrapped.referenced) == ["1.1"]
    assert wrapped.failed["1.2"].failure_reason_hex == "0xA700"


def test_items_without_a_sop_uid_are_skipped() -> None:
    dataset = _dataset(
        [{"00081150": {"vr": "UI", "Value": ["1.2"]}}, "not an item", _item("1.5")],
        [{"00081197": {"vr": "US", "Value": [272]}}],
    )
    parsed = parse_stow_response(json.dumps(dataset).encode())
    assert list(parsed.referenced) == ["1.5"]
    assert parsed.failed == {}


def test_sequences_without_values_are_empty() -> None:
    body = json.dumps({"00081198": {"vr": "SQ"}, "00081199": {"vr": "SQ"}}).encode()
    assert parse_stow_response(body) == StowResponse()


def test_long_detail_is_shortened() -> None:
    item = _item("1.2", **{"00081197": ("US", 0xC000), "00091097": ("LO", "x" * 5000)})
    detail = parse_stow_response(json.dumps(_dataset([], [item])).encode()).failed["1.2"].detail
    assert detail is not None and len(detail) == 300
