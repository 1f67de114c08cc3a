"""Tests of the Google DICOM store stand-in used by the store pipeline tests."""

import http.client
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))

import google_standin  # noqa: E402
from google_standin import GoogleStandin, RecordedRequest, StoredBlob  # noqa: E402

NS = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
TOKEN = "secret-token-123"


def _testdata(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    assert path is not None
    return Path(str(path)).read_bytes()


CT = _testdata("CT_small.dcm")
MR = _testdata("MR_small.dcm")


def _uids(data: bytes) -> tuple[str, str, str, str]:
    ds = dcmread(BytesIO(data), stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID


def _variant(data: bytes, sop: str, study: str | None = None) -> bytes:
    ds = dcmread(BytesIO(data))
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    if study is not None:
        ds.StudyInstanceUID = study
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _multipart(parts: list[bytes], boundary: str = "b0undary") -> bytes:
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
        for p in parts
    )
    return body + b"--" + boundary.encode() + b"--\r\n"


@pytest.fixture
def standin() -> Iterator[GoogleStandin]:
    with GoogleStandin() as s:
        yield s


@pytest.fixture
def secured() -> Iterator[GoogleStandin]:
    with GoogleStandin(expected_token=TOKEN) as s:
        yield s


def _xml_items(root: ET.Element, seq_tag: str) -> list[ET.Element]:
    return root.findall(f"d:DicomAttribute[@tag='{seq_tag}']/d:Item", NS)


def _xml_value(item: ET.Element, tag: str) -> str | None:
    return item.findtext(f"d:DicomAttribute[@tag='{tag}']/d:Value", namespaces=NS)


def test_single_part_store_answers_xml(standin: GoogleStandin) -> None:
    study, series, sop, sop_class = _uids(CT)
    r = requests.post(
        f"{standin.dicomweb_url}/studies", data=CT, headers={"Content-Type": "application/dicom"}
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/dicom+xml"
    assert r.text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(r.content)
    assert root.tag == "{http://dicom.nema.org/PS3.19/models/NativeDICOM}NativeDicomModel"
    assert _xml_value(root, "00081190") == f"{standin.dicomweb_url}/studies/{study}"
    (item,) = _xml_items(root, "00081199")
    assert _xml_value(item, "00081155") == sop
    assert _xml_value(item, "00081150") == sop_class
    expected_url = f"{standin.dicomweb_url}/studies/{study}/series/{series}/instances/{sop}"
    assert _xml_value(item, "00081190") == expected_url
    assert _xml_items(root, "00081198") == []
    assert standin.instances[(study, series, sop)] == StoredBlob(CT, "STANDARD")


@pytest.mark.parametrize("quoted", [True, False])
def test_multipart_two_instances_json(standin: GoogleStandin, quoted: bool) -> None:
    boundary = "abc.123-XYZ"
    b = f'"{boundary}"' if quoted else boundary
    r = requests.post(
        f"{standin.dicomweb_url}/studies",
        data=b"preamble to ignore\r\n" + _multipart([CT, MR], boundary),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={b}',
            "Accept": "application/dicom+json",
        },
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/dicom+json"
    answer = r.json()
    refs = answer["00081199"]["Value"]
    assert answer["00081199"]["vr"] == "SQ"
    assert {i["00081155"]["Value"][0] for i in refs} == {_uids(CT)[2], _uids(MR)[2]}
    assert all(i["00081150"]["vr"] == "UI" for i in refs)
    assert "00081198" not in answer
    assert len(standin.instances) == 2


def test_restore_conflicts_with_already_exists_in_xml_and_json(standin: GoogleStandin) -> None:
    standin.preload(CT)
    url = f"{standin.dicomweb_url}/studies"
    headers = {"Content-Type": "application/dicom"}
    r = requests.post(url, data=CT, headers=headers)
    assert r.status_code == 409
    root = ET.fromstring(r.content)
    (item,) = _xml_items(root, "00081198")
    assert _xml_value(item, "00081197") == "272"
    assert "already exists" in (_xml_value(item, "00090097") or "")
    assert _xml_value(item, "00081155") == _uids(CT)[2]
    assert _xml_items(root, "00081199") == []

    r = requests.post(url, data=CT, headers={**headers, "Accept": "application/dicom+json"})
    assert r.status_code == 409
    (failed,) = r.json()["00081198"]["Value"]
    assert failed["00081197"] == {"vr": "US", "Value": [272]}
    assert "already exists" in failed["00091097"]["Value"][0]
    assert len(standin.instances) == 1


def test_study_mismatch_fails_with_a900(standin: GoogleStandin) -> None:
    r = requests.post(
        f"{standin.dicomweb_url}/studies/1.2.3.4",
        data=CT,
        headers={"Content-Type": "application/dicom", "Accept": "application/dicom+json"},
    )
    assert r.status_code == 409
    answer = r.json()
    assert answer["00081190"]["Value"] == [f"{standin.dicomweb_url}/studies/1.2.3.4"]
    (failed,) = answer["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xA900]
    assert standin.instances == {}


def test_study_in_url_matching_is_stored(standin: GoogleStandin) -> None:
    study = _uids(CT)[0]
    r = requests.post(
        f"{standin.dicomweb_url}/studies/{study}",
        data=_multipart([CT]),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'},
    )
    assert r.status_code == 200
    assert len(standin.instances) == 1


def test_storage_class(standin: GoogleStandin) -> None:
    url = f"{standin.dicomweb_url}/studies"
    r = requests.post(
        url, data=CT, headers={"Content-Type": "application/dicom", "Storage-Class": "FROZEN"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert standin.instances == {}
    r = requests.post(
        url, data=CT, headers={"Content-Type": "application/dicom", "Storage-Class": "NEARLINE"}
    )
    assert r.status_code == 200
    (blob,) = standin.instances.values()
    assert blob.storage_class == "NEARLINE"


def test_unparseable_part_gives_409_without_sequence_item(standin: GoogleStandin) -> None:
    r = requests.post(
        f"{standin.dicomweb_url}/studies",
        data=_multipart([b"not dicom at all", MR]),
        headers={
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary',
            "Accept": "application/dicom+json",
        },
    )
    assert r.status_code == 409
    answer = r.json()
    assert "00081198" not in answer
    assert [i["00081155"]["Value"][0] for i in answer["00081199"]["Value"]] == [_uids(MR)[2]]


@pytest.mark.parametrize(
    "content_type",
    ["application/octet-stream", 'multipart/related; type="application/dicom+json"; boundary=x'],
)
def test_unsupported_content_type_is_415(standin: GoogleStandin, content_type: str) -> None:
    r = requests.post(
        f"{standin.dicomweb_url}/studies", data=CT, headers={"Content-Type": content_type}
    )
    assert r.status_code == 415
    assert standin.instances == {}


def test_missing_closing_delimiter_is_400(standin: GoogleStandin) -> None:
    body = b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n" + CT
    r = requests.post(
        f"{standin.dicomweb_url}/studies",
        data=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'},
    )
    assert r.status_code == 400


def test_chunked_request_body(standin: GoogleStandin) -> None:
    def gen() -> Iterator[bytes]:
        for i in range(0, len(CT), 1000):
            yield CT[i : i + 1000]

    r = requests.post(
        f"{standin.dicomweb_url}/studies", data=gen(), headers={"Content-Type": "application/dicom"}
    )
    assert r.status_code == 200
    assert standin.requests[-1].headers.get("Transfer-Encoding") == "chunked"
    assert standin.requests[-1].body_length == len(CT)
    (blob,) = standin.instances.values()
    assert blob.data == CT


def test_bearer_token_required(secured: GoogleStandin) -> None:
    url = f"{secured.dicomweb_url}/studies/1.2/instances"
    r = requests.get(url)
    assert r.status_code == 401
    assert r.json()["error"] == {
        "code": 401,
        "message": r.json()["error"]["message"],
        "status": "UNAUTHENTICATED",
    }
    assert requests.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    r = requests.post(
        f"{secured.dicomweb_url}/studies", data=CT, headers={"Content-Type": "application/dicom"}
    )
    assert r.status_code == 401
    assert secured.instances == {}
    ok = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok.json() == []


def test_token_endpoint(secured: GoogleStandin) -> None:
    r = requests.post(
        secured.token_url,
        data={"grant_type": "refresh_token", "refresh_token": "rt", "client_id": "c"},
    )
    assert r.status_code == 200
    assert r.json() == {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}
    rec = secured.requests[-1]
    assert (rec.method, rec.path) == ("POST", "/token")
    assert rec.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert requests.post(secured.token_url, data={"grant_type": "password"}).status_code == 400


def test_token_endpoint_default_token(standin: GoogleStandin) -> None:
    r = requests.post(standin.token_url, data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert r.json()["access_token"] == "standin-token"


def test_qido_paging(standin: GoogleStandin) -> None:
    sops = [f"1.2.826.0.1.3680043.99.{n}" for n in (5, 3, 1, 4, 2)]
    for sop in sops:
        standin.preload(_variant(CT, sop))
    standin.preload(_variant(CT, "1.2.826.0.1.3680043.99.9", study="1.2.999"))
    study, series, _, sop_class = _uids(CT)
    url = f"{standin.dicomweb_url}/studies/{study}/instances"

    def page(**params: str) -> list[dict[str, dict[str, object]]]:
        r = requests.get(url, params={"includefield": "all", **params})
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "application/dicom+json"
        return r.json()

    everything = page()
    assert [o["00080018"]["Value"][0] for o in everything] == sorted(sops)
    assert everything[0]["0020000D"] == {"vr": "UI", "Value": [study]}
    assert everything[0]["0020000E"] == {"vr": "UI", "Value": [series]}
    assert everything[0]["00080016"] == {"vr": "UI", "Value": [sop_class]}
    first = page(limit="2")
    second = page(limit="2", offset="2")
    last = page(limit="2", offset="4")
    got = [o["00080018"]["Value"][0] for o in first + second + last]
    assert (len(first), len(second), len(last)) == (2, 2, 1)
    assert got == sorted(sops)
    assert page(offset="5") == []
    assert requests.get(f"{standin.dicomweb_url}/studies/7.7.7/instances").json() == []
    assert requests.get(url, params={"limit": "x"}).status_code == 400


def test_wado_returns_stored_bytes_and_403_for_unknown(standin: GoogleStandin) -> None:
    standin.preload(MR)
    study, series, sop, _ = _uids(MR)
    base = f"{standin.dicomweb_url}/studies/{study}/series/{series}/instances"
    r = requests.get(f"{base}/{sop}", headers={"Accept": "application/dicom; transfer-syntax=*"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/dicom"
    assert r.content == MR
    missing = requests.get(f"{base}/1.2.3")
    assert missing.status_code == 403
    assert missing.json()["error"]["code"] == 403


def test_unknown_path_is_404(standin: GoogleStandin) -> None:
    r = requests.get(f"{standin.root_url}/v1/projects/other/whatever")
    assert r.status_code == 404
    assert r.json()["error"]["status"] == "NOT_FOUND"
    assert requests.delete(f"{standin.dicomweb_url}/studies/1.2").status_code == 404


def test_requests_are_recorded_with_headers(standin: GoogleStandin) -> None:
    requests.post(
        f"{standin.dicomweb_url}/studies",
        data=CT,
        headers={"Content-Type": "application/dicom", "X-Probe-Header": "Value-1"},
    )
    requests.get(f"{standin.dicomweb_url}/studies/1.2/instances?limit=5&offset=1")
    post, get = standin.requests
    assert isinstance(post, RecordedRequest)
    assert (post.method, post.path, post.body_length) == (
        "POST",
        f"{google_standin.GoogleStandin().dicomweb_path}/studies",
        len(CT),
    )
    assert post.headers["X-Probe-Header"] == "Value-1"  # original case kept
    assert "x-probe-header" not in post.headers
    assert (get.method, get.query, get.body_length) == ("GET", "limit=5&offset=1", 0)


def test_keep_alive_and_content_length(standin: GoogleStandin) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", int(standin.root_url.rsplit(":", 1)[1]))
    try:
        conn.request("GET", f"{standin.dicomweb_path}/studies/1/instances")
        first = conn.getresponse()
        assert first.getheader("Content-Length") == str(len(first.read()))
        sock = conn.sock
        assert sock is not None  # the server did not ask to close
        conn.request("GET", "/nowhere")
        second = conn.getresponse()
        body = second.read()
        assert second.status == 404
        assert second.getheader("Content-Length") == str(len(body))
        assert json.loads(body)["error"]["code"] == 404
        assert conn.sock is sock
    finally:
        conn.close()


def test_preload_rejects_garbage_and_stop_is_idempotent() -> None:
    s = GoogleStandin().start()
    with pytest.raises(ValueError):
        s.preload(b"garbage")
    s.stop()
    s.stop()
    with pytest.raises(RuntimeError):
        _ = s.root_url


def test_xml_text_is_escaped(standin: GoogleStandin) -> None:
    r = requests.post(
        f"{standin.dicomweb_url}/studies/1&2",
        data=CT,
        headers={"Content-Type": "application/dicom"},
    )
    assert r.status_code == 409
    root = ET.fromstring(r.content)  # would raise on a bare "&"
    assert _xml_value(root, "00081190") == f"{standin.dicomweb_url}/studies/1&2"
    (item,) = _xml_items(root, "00081198")
    assert _xml_value(item, "00081197") == str(0xA900)


def test_multipart_part_without_headers(standin: GoogleStandin) -> None:
    body = b"--x\r\n\r\n" + MR + b"\r\n--x--"
    r = requests.post(
        f"{standin.dicomweb_url}/studies",
        data=body,
        headers={"Content-Type": "multipart/related; type=application/dicom; boundary=x"},
    )
    assert r.status_code == 200
    assert standin.instances[_uids(MR)[:3]].data == MR
