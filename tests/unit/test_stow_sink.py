"""Unit tests for benchmarks/stow_sink.py using pydicom's own test files."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from stow_sink import StowSink, sop_uids_from_part10  # noqa: E402

TIMEOUT = 10
CT = Path(get_testdata_file("CT_small.dcm", download=False))
MR = Path(get_testdata_file("MR_small.dcm", download=False))
MULTIPART = 'multipart/related; type="application/dicom"; boundary="{b}"'


def _multipart(parts: list[bytes], boundary: str) -> bytes:
    out = b""
    for part in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def _uids(path: Path) -> tuple[str, str]:
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    return str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID)


def _referenced(payload: dict, key: str = "00081199") -> list[tuple[str, str]]:
    return [
        (item["00081150"]["Value"][0], item["00081155"]["Value"][0])
        for item in payload[key]["Value"]
    ]


@pytest.fixture
def sink() -> Iterator[StowSink]:
    with StowSink() as s:
        yield s


def test_multipart_of_two_files(sink: StowSink) -> None:
    parts = [CT.read_bytes(), MR.read_bytes()]
    with requests.Session() as s:
        for boundary in ("abc123", "a=b:c"):  # second one needs the quotes
            r = s.post(
                sink.base_url + "/dicom-web/studies",
                data=_multipart(parts, boundary),
                headers={"Content-Type": MULTIPART.format(b=boundary)},
                timeout=TIMEOUT,
            )
            assert r.status_code == 200
            assert r.headers["Content-Type"] == "application/dicom+json"
            payload = r.json()
            assert _referenced(payload) == [_uids(CT), _uids(MR)]
            urls = [item["00081190"]["Value"][0] for item in payload["00081199"]["Value"]]
            assert (
                urls[1] == sink.base_url + "/dicom-web/studies/x/series/x/instances/" + _uids(MR)[1]
            )
            assert "00081198" not in payload
    assert sink.counters["instances"] == 4
    assert sink.counters["stow_requests"] == 2


def test_unquoted_boundary_chunked_and_study_path(sink: StowSink) -> None:
    body = _multipart([MR.read_bytes()], "xyz")
    r = requests.post(
        sink.base_url + "/dicom-web/studies/1.2.3",
        data=iter([body[:1000], body[1000:]]),  # generator -> chunked transfer encoding
        headers={"Content-Type": "multipart/related; type=application/dicom; boundary=xyz"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200
    assert _referenced(r.json()) == [_uids(MR)]


def test_single_part_application_dicom(sink: StowSink) -> None:
    r = requests.post(
        sink.base_url + "/dicom-web/studies",
        data=CT.read_bytes(),
        headers={"Content-Type": "application/dicom"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200
    assert _referenced(r.json()) == [_uids(CT)]


def test_junk_part_gives_409(sink: StowSink) -> None:
    data = CT.read_bytes()
    sop_end = data.index(_uids(CT)[1].encode()) + len(_uids(CT)[1])
    truncated = data[: sop_end + 5]  # SOP Instance UID readable, meta cut short after it
    parts = [data, b"not dicom at all" * 20, truncated]
    r = requests.post(
        sink.base_url + "/dicom-web/studies",
        data=_multipart(parts, "bnd"),
        headers={"Content-Type": MULTIPART.format(b="bnd")},
        timeout=TIMEOUT,
    )
    assert r.status_code == 409
    payload = r.json()
    assert _referenced(payload) == [_uids(CT)]
    assert [item["00081155"]["Value"][0] for item in payload["00081198"]["Value"]] == [_uids(CT)[1]]
    assert sink.counters["failed"] == 2


def test_get_instances_is_empty(sink: StowSink) -> None:
    r = requests.get(
        sink.base_url + "/dicom-web/studies/1.2.3/instances?includefield=all", timeout=TIMEOUT
    )
    assert r.status_code == 200
    assert r.json() == []
    assert requests.get(sink.base_url + "/nope", timeout=TIMEOUT).status_code == 404


def _dcm_files() -> list[Path]:
    return sorted(CT.parent.rglob("*.dcm"))


@pytest.mark.parametrize("path", _dcm_files(), ids=lambda p: p.name)
def test_hand_parser_agrees_with_pydicom(path: Path) -> None:
    data = path.read_bytes()
    if data[128:132] != b"DICM":
        assert sop_uids_from_part10(data) is None
        return
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:
        pytest.skip("pydicom cannot read the file meta")
    cls = meta.get("MediaStorageSOPClassUID")
    sop = meta.get("MediaStorageSOPInstanceUID")
    if not cls or not sop:
        assert sop_uids_from_part10(data) is None
        return
    assert sop_uids_from_part10(data) == (str(cls), str(sop))


def test_hand_parser_checked_many_files() -> None:
    assert sum(sop_uids_from_part10(p.read_bytes()) is not None for p in _dcm_files()) >= 50


@pytest.mark.parametrize("path", [CT, MR], ids=lambda p: p.name)
def test_hand_parser_rejects_every_truncation_of_meta(path: Path) -> None:
    data = path.read_bytes()
    meta = pydicom.filereader.read_file_meta_info(path)
    meta_end = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    assert sop_uids_from_part10(data[:meta_end]) == _uids(path)
    for cut in range(meta_end):
        assert sop_uids_from_part10(data[:cut]) is None, cut


@pytest.mark.parametrize(
    "junk", [b"", b"junk", b"\0" * 128 + b"DICM", b"\0" * 128 + b"DICM" + b"\x02\x00\x02\x00zz"]
)
def test_hand_parser_rejects_junk(junk: bytes) -> None:
    assert sop_uids_from_part10(junk) is None
    assert sop_uids_from_part10(junk + b"\xff" * 300) is None


def test_cli_prints_listening_line() -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "stow_sink.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("LISTENING http://127.0.0.1:")
        url = line.split(" ", 1)[1]
        r = requests.get(url + "/dicom-web/studies/1/instances", timeout=TIMEOUT)
        assert r.json() == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- store performance (issue 9): Beam's UploadToDicomStore is pointed at the sink ------------


def test_google_path_form_is_stored_and_counted(sink: StowSink) -> None:
    """What UploadToDicomStore sends once its client's base URL is the sink (single part to
    Google's path), and the counters the benchmark reads to check every instance arrived."""
    google = "/projects/p/locations/r/datasets/d/dicomStores/s/dicomWeb/studies"
    with requests.Session() as s:
        r = s.post(
            sink.base_url + google,
            data=CT.read_bytes(),
            headers={"Content-Type": "application/dicom"},
            timeout=TIMEOUT,
        )
        assert r.status_code == 200
        assert _referenced(r.json()) == [_uids(CT)]
        other = s.post(
            sink.base_url + "/projects/p/studies",
            data=CT.read_bytes(),
            headers={"Content-Type": "application/dicom"},
            timeout=TIMEOUT,
        )
        assert other.status_code == 404
        counters = s.get(sink.base_url + "/_sink/counters", timeout=TIMEOUT).json()
    assert counters == {"requests": 2, "stow_requests": 1, "instances": 1, "failed": 0}


def test_json_jpeg_request_answered_from_its_metadata_part_and_drained(
    sink: StowSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JPEG parts are read to the end but not parsed (the parser is fed the first chunk
    only): the request is answered from its metadata, and the connection serves again."""
    import json  # noqa: PLC0415

    import stow_sink  # noqa: PLC0415

    fed: list[int] = []
    feed = stow_sink.PartHeads.feed

    def counting_feed(self: stow_sink.PartHeads, chunk: bytes) -> None:
        fed.append(len(chunk))
        feed(self, chunk)

    monkeypatch.setattr(stow_sink.PartHeads, "feed", counting_feed)

    metadata = [
        {"00080016": {"vr": "UI", "Value": ["1.2.3"]}, "00080018": {"vr": "UI", "Value": [sop]}}
        for sop in ("1.2.3.4", "1.2.3.5")
    ]
    boundary = "jj"
    junk = (b"\r\n--j \xff\xd8" * 1000 + bytes(range(256)) * 40) * 170  # about 3 MiB each
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom+json\r\n\r\n".encode()
        + json.dumps(metadata).encode()
        + b"".join(
            f"\r\n--{boundary}\r\nContent-Type: image/jpeg\r\n".encode()
            + f"Content-Location: p{i}\r\n\r\n".encode()
            + junk
            for i in range(2)
        )
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom+json"; boundary={boundary}'
    with requests.Session() as s:
        for _ in range(2):  # the same connection: the whole body was consumed
            r = s.post(
                sink.base_url + "/dicom-web/studies",
                data=body,
                headers={"Content-Type": content_type},
                timeout=TIMEOUT,
            )
            assert r.status_code == 200
            assert _referenced(r.json()) == [("1.2.3", "1.2.3.4"), ("1.2.3", "1.2.3.5")]
    assert sink.counters["instances"] == 4
    assert len(body) > 6_000_000 and len(fed) == 2  # one 1 MiB chunk of each 6 MB request
