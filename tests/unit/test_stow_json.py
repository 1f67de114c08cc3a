"""JSON + JPEG STOW: the request layout (the guide's, byte for byte) and the client against the
Google stand-in extended with Google's JSON + JPEG creation (no Beam)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import jpeg_factory as jf
import pydicom
import pytest
import requests
from google_json_standin import GoogleJsonStandin, split_parts
from pydicom.encaps import generate_frames

from transforms.dead_letter import DeadLetter
from transforms.dicom.build import BuildOptions, PreparedInstance, json_digest, prepare, slim
from transforms.dicom.jpeg import read_jpeg_info
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.http import RetryPolicy
from transforms.dicomweb.multipart import Part, StreamingBody, multipart_related
from transforms.dicomweb.stow import StowConfig
from transforms.dicomweb.stow_json import JsonJpegStowClient, json_jpeg_segments, part10_segments
from transforms.records import StoredInstance


def pair(directory: Path, name: str, data: bytes, **meta: object) -> PreparedInstance:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.jpg"
    path.write_bytes(data)
    return prepare(
        jf.metadata(name, **meta),  # type: ignore[arg-type]
        read_jpeg_info(io.BytesIO(data), len(data)),
        BuildOptions(),
        source=str(directory / f"{name}.json"),
        json_path=str(directory / f"{name}.json"),
        jpeg_path=str(path),
        jpeg_size=len(data),
        folder=str(directory),
    )


def test_body_follows_the_guide_layout(tmp_path: Path) -> None:
    a = pair(tmp_path, "a", jf.jpeg_bytes(seed=1))
    b = pair(tmp_path, "b", jf.extended_12bit_jpeg())
    body = StreamingBody(json_jpeg_segments([a, b], "B0undary")).read()
    head = b"--B0undary\r\nContent-Type: application/dicom+json\r\n\r\n"
    assert body.startswith(head)
    metadata_end = body.index(b"\r\n--B0undary\r\nContent-Location: jpeg-image-1\r\n")
    metadata = json.loads(body[len(head) : metadata_end])
    assert [m["7FE00010"] for m in metadata] == [
        {"vr": "OB", "BulkDataURI": "jpeg-image-1"},
        {"vr": "OB", "BulkDataURI": "jpeg-image-2"},
    ]
    assert [m["00020010"]["Value"] for m in metadata] == [
        ["1.2.840.10008.1.2.4.50"],
        ["1.2.840.10008.1.2.4.51"],
    ]
    assert all(m["00080005"]["Value"] == ["ISO_IR 192"] for m in metadata)
    expected_tail = (
        b"\r\n--B0undary\r\nContent-Location: jpeg-image-1\r\n"
        b"Content-Type: image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50\r\n\r\n"
        + Path(a.jpeg_path).read_bytes()
        + b"\r\n--B0undary\r\nContent-Location: jpeg-image-2\r\n"
        b"Content-Type: image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.51\r\n\r\n"
        + Path(b.jpeg_path).read_bytes()
        + b"\r\n--B0undary--"
    )
    assert body[metadata_end:] == expected_tail


@pytest.fixture
def standin() -> Iterator[GoogleJsonStandin]:
    with GoogleJsonStandin() as server:
        yield server


def client(standin: GoogleJsonStandin, **config: object) -> JsonJpegStowClient:
    endpoint = DicomwebEndpoint(standin.dicomweb_url)
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.0)
    return JsonJpegStowClient(
        requests.Session(),
        StowConfig(endpoint, retry=policy, **config),  # type: ignore[arg-type]
    )


def test_several_pairs_in_one_request_are_created_and_reported(
    standin: GoogleJsonStandin, tmp_path: Path
) -> None:
    study = jf.uid("one-study")
    pairs = [
        pair(tmp_path, "c420", jf.jpeg_bytes(seed=1), study=study),
        pair(tmp_path, "c444", jf.jpeg_bytes(seed=2, subsampling=0), study=study),
        pair(tmp_path, "grey", jf.jpeg_bytes(seed=3, colour=False), study=study),
    ]
    report = client(standin, storage_class="NEARLINE").store_pairs(study, pairs)
    assert [type(o) for o in report.outcomes] == [StoredInstance] * 3
    assert {o.uids.sop for o in report.outcomes} == {p.uids.sop for p in pairs}
    (request,) = standin.json_requests
    assert request.headers["Storage-Class"] == "NEARLINE"
    assert request.path.endswith(f"/studies/{study}")
    boundary = re.fullmatch(
        r'multipart/related; type="application/dicom\+json"; boundary=(\S+)',
        request.headers["Content-Type"],
    )
    assert boundary is not None
    first, *bulk = split_parts(request.body, boundary.group(1))
    assert len(bulk) == 3 and json.loads(first.payload)[2]["00280004"]["Value"] == ["MONOCHROME2"]
    for p in pairs:  # what the store created holds the JPEG unchanged
        blob = standin.instances[(p.uids.study, p.uids.series, p.uids.sop)]
        assert blob.storage_class == "NEARLINE"
        ds = pydicom.dcmread(io.BytesIO(blob.data))
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        assert frame.rstrip(b"\x00") == Path(p.jpeg_path).read_bytes().rstrip(b"\x00")


def test_already_present_pairs_are_reported_not_sent_twice(
    standin: GoogleJsonStandin, tmp_path: Path
) -> None:
    study = jf.uid("again-study")
    pairs = [pair(tmp_path, f"p{i}", jf.jpeg_bytes(seed=i), study=study) for i in range(2)]
    client(standin).store_pairs(study, pairs)
    report = client(standin).store_pairs(study, pairs)  # a fresh client: asks the store first
    assert [o.status for o in report.outcomes if isinstance(o, StoredInstance)] == [
        "already_present"
    ] * 2
    assert len(standin.json_requests) == 1
    # Without the lookup the store answers 409 "already exists": still already present.
    blind = client(standin, check_existing=False).store_pairs(study, pairs)
    assert {o.status for o in blind.outcomes if isinstance(o, StoredInstance)} == {
        "already_present"
    }
    assert len(standin.json_requests) == 2


def test_a_refused_instance_is_dead_lettered_alone(
    standin: GoogleJsonStandin, tmp_path: Path
) -> None:
    study = jf.uid("refused-study")
    good = pair(tmp_path, "good", jf.jpeg_bytes(seed=1), study=study)
    other_study = pair(tmp_path, "elsewhere", jf.jpeg_bytes(seed=2))
    report = client(standin).store_pairs(study, [good, other_study])
    outcomes = {o.uids.sop: o for o in report.outcomes if o.uids}
    assert isinstance(outcomes[good.uids.sop], StoredInstance)
    refused = outcomes[other_study.uids.sop]
    assert isinstance(refused, DeadLetter) and refused.reason == "rejected"
    assert refused.http_status == 409 and refused.server_reason == "0xA900"


def test_the_benchmark_sink_answers_json_jpeg_requests_per_instance(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from stow_sink import StowSink

    study = jf.uid("sink-study")
    pairs = [pair(tmp_path, f"s{i}", jf.jpeg_bytes(seed=i), study=study) for i in range(3)]
    with StowSink() as sink:
        endpoint = DicomwebEndpoint(sink.base_url + "/dicom-web")
        stow = JsonJpegStowClient(requests.Session(), StowConfig(endpoint))
        report = stow.store_pairs(study, pairs)
        assert sink.counters["instances"] == 3 and sink.counters["stow_requests"] == 1
    assert [o.status for o in report.outcomes if isinstance(o, StoredInstance)] == ["stored"] * 3


def test_client_mode_builds_at_send_time_and_dead_letters_a_pair_that_changed(
    standin: GoogleJsonStandin, tmp_path: Path
) -> None:
    from transforms.dicomweb.stow_json import Part10StowClient

    study = jf.uid("part10-study")
    good = pair(tmp_path, "good", jf.jpeg_bytes(seed=1), study=study)
    changed = pair(tmp_path, "changed", jf.jpeg_bytes(seed=2), study=study)
    Path(changed.jpeg_path).write_bytes(jf.png_bytes())  # replaced after validation
    endpoint = DicomwebEndpoint(standin.dicomweb_url)
    stow = Part10StowClient(requests.Session(), StowConfig(endpoint, storage_class="NEARLINE"))
    report = stow.store_pairs(study, [good, changed])
    outcomes = {o.uids.sop: o for o in report.outcomes if o.uids}
    assert isinstance(outcomes[good.uids.sop], StoredInstance)
    letter = outcomes[changed.uids.sop]
    assert isinstance(letter, DeadLetter)
    assert (letter.stage, letter.reason, letter.attempts) == ("build", "not_jpeg", 0)
    post = next(r for r in standin.requests if r.method == "POST")
    assert post.headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    assert post.headers["Storage-Class"] == "NEARLINE"
    blob = standin.instances[(study, good.uids.series, good.uids.sop)]
    frame = next(
        generate_frames(pydicom.dcmread(io.BytesIO(blob.data)).PixelData, number_of_frames=1)
    )
    assert frame.rstrip(b"\x00") == Path(good.jpeg_path).read_bytes().rstrip(b"\x00")


def slim_pair(directory: Path, name: str, data: bytes, **meta: object) -> PreparedInstance:
    """A pair as the pipeline carries it: its metadata left in its JSON file."""
    full = pair(directory, name, data, **meta)
    text = json.dumps(jf.metadata(name, **meta)).encode()  # type: ignore[arg-type]
    Path(full.source).write_bytes(text)
    return slim(dataclasses.replace(full, json_digest=json_digest(text)))


def test_slim_pairs_are_sent_with_their_metadata_and_a_changed_json_is_dead_lettered(
    standin: GoogleJsonStandin, tmp_path: Path
) -> None:
    study = jf.uid("slim-study")
    good = slim_pair(tmp_path, "good", jf.jpeg_bytes(seed=1), study=study)
    changed = slim_pair(tmp_path, "changed", jf.jpeg_bytes(seed=2), study=study)
    assert good.is_slim and changed.is_slim
    meta = json.loads(Path(changed.source).read_text())
    meta["00100020"] = {"vr": "LO", "Value": ["EDITED"]}  # edited after validation
    Path(changed.source).write_text(json.dumps(meta))
    stow = JsonJpegStowClient(
        requests.Session(), StowConfig(DicomwebEndpoint(standin.dicomweb_url))
    )
    report = stow.store_pairs(study, [good, changed])
    outcomes = {o.uids.sop: o for o in report.outcomes if o.uids}
    assert isinstance(outcomes[good.uids.sop], StoredInstance)
    letter = outcomes[changed.uids.sop]
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.attempts) == ("unreadable", 0)
    assert "changed since it was validated" in letter.message
    (request,) = standin.json_requests
    boundary = request.headers["Content-Type"].rsplit("boundary=", 1)[1]
    first, *bulk = split_parts(request.body, boundary)
    assert len(bulk) == 1
    (metadata,) = json.loads(first.payload)  # only the good pair was sent, with its metadata
    assert metadata["00080018"]["Value"] == [good.uids.sop]
    assert (
        metadata["00100020"]["Value"]
        == json.loads(Path(good.source).read_text())["00100020"]["Value"]
    )
    assert metadata["00280004"]["Value"] == ["YBR_FULL_422"]  # completed from the JPEG again


def test_store_transform_shows_its_configuration_without_credentials() -> None:
    from apache_beam.transforms.display import DisplayData

    from transforms.store_json_jpeg import StoreJsonJpegPairs

    endpoint = DicomwebEndpoint("https://example.org/dicom-web")
    transform = StoreJsonJpegPairs(StowConfig(endpoint, storage_class="COLDLINE"), mode="server")
    shown = {item.key: item.value for item in DisplayData.create_from(transform).items}
    assert shown["mode"] == "server" and shown["storage_class"] == "COLDLINE"
    assert shown["dicomweb_url"] == "https://example.org/dicom-web"
    with pytest.raises(ValueError, match="mode"):
        StoreJsonJpegPairs(StowConfig(endpoint), mode="both")


@pytest.mark.parametrize("count", [0, 1, 3])
def test_part10_bodies_are_laid_out_as_the_store_lays_them_out(count: int) -> None:
    instances = [bytes([n]) * (1000 + n) for n in range(count)]
    parts = [Part("application/dicom", (data,)) for data in instances]
    expected, _ = multipart_related(parts, root_type="application/dicom", boundary="B0undary")
    body = StreamingBody(part10_segments(instances, "B0undary"))
    assert body.read() == expected.read()
    assert all(any(s is data for s in part10_segments(instances, "B")) for data in instances)
