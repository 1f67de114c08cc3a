"""The WADO-RS client against a real Orthanc holding pydicom's and pydicom-data's files.

Instances come back byte for byte at every granularity (``transfer-syntax=*``); rendered images
decode to Rows x Columns; frames equal the instance's frames; metadata and bulk data equal the
stored file's attributes and element values; what Orthanc cannot serve is a dead letter.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import factory
import pydicom
import pytest
import requests
from pydicom.encaps import generate_fragmented_frames

from pipelines.local_orthanc import LocalOrthanc
from transforms.dead_letter import DeadLetter
from transforms.dicom.uid import check_uid
from transforms.dicomweb import http
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.qido import iter_qido
from transforms.dicomweb.retriever import Retriever
from transforms.dicomweb.wado import WadoConfig
from transforms.output_files import OutputFiles
from transforms.records import RetrievedFile
from transforms.targets import Target

pytestmark = pytest.mark.integration

FAST = http.RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


@dataclass(frozen=True)
class Corpus:
    server: LocalOrthanc
    files: dict[str, Path]  # SOP Instance UID -> input file
    units: list[Target]  # one per stored instance

    def dataset(self, sop: str) -> pydicom.Dataset:
        return pydicom.dcmread(self.files[sop])


def _inputs() -> Iterator[Path]:
    data_dir = factory.pydicom_data_dir()
    assert data_dir is not None, "pydicom-data is a test dependency"
    for folder in (factory.pydicom_test_files_dir(), data_dir):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".dcm"):
                yield folder / name


@pytest.fixture(scope="module")
def corpus(orthanc_server: LocalOrthanc) -> Corpus:
    """Every file Orthanc accepts, one per SOP Instance UID (variants share UIDs)."""
    orthanc_server.delete_all()
    files: dict[str, Path] = {}
    for path in _inputs():
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            sop = str(ds.SOPInstanceUID)
            for uid in uids:
                check_uid(str(uid), "UID")
        except Exception:  # noqa: BLE001 - unreadable files and bad UIDs cannot be addressed
            continue
        if sop in files:
            continue
        resp = requests.post(f"{orthanc_server.rest_url}/instances", data=path.read_bytes())
        if resp.status_code == 200:
            files[sop] = path
    assert len(files) >= 50
    session = requests.Session()
    rows = iter_qido(session, f"{orthanc_server.dicomweb_url}/instances", policy=FAST)
    units = [Target.from_dicom_json(row) for row in rows]
    assert {u.sop for u in units} == set(files)
    return Corpus(orthanc_server, files, units)


def _retriever(url: str, out: Path, **config: object) -> Retriever:
    wado = WadoConfig(DicomwebEndpoint(url), retry=FAST, **config)  # type: ignore[arg-type]
    return Retriever(requests.Session(), wado, OutputFiles(str(out)))


def _run(retriever: Retriever, units: list[Target]) -> tuple[list[RetrievedFile], list[DeadLetter]]:
    files: list[RetrievedFile] = []
    letters: list[DeadLetter] = []
    for unit in units:
        for outcome in retriever.retrieve(unit).outcomes:
            (files if isinstance(outcome, RetrievedFile) else letters).append(outcome)  # type: ignore[arg-type]
    return files, letters


@pytest.mark.parametrize("granularity", ["instance", "series", "study"])
def test_instances_come_back_byte_for_byte(
    corpus: Corpus, tmp_path: Path, granularity: str
) -> None:
    retriever = _retriever(
        corpus.server.dicomweb_url, tmp_path, granularity=granularity, verify=True
    )
    level = {"instance": "instances", "series": "series", "study": "studies"}[granularity]
    units = sorted({u.at_level(level) for u in corpus.units})
    files, letters = _run(retriever, units)
    assert letters == []
    assert sorted(f.uids.sop for f in files) == sorted(corpus.files)
    for f in files:
        data = Path(f.path).read_bytes()
        assert data == corpus.files[f.uids.sop].read_bytes(), corpus.files[f.uids.sop].name
        assert f.bytes == len(data) and f.status == "retrieved"
        assert f.path == str(tmp_path / f.uids.study / f.uids.series / f"{f.uids.sop}.dcm")
    assert not os.listdir(tmp_path / ".retrieve-tmp")  # no spool file left behind


def _first(corpus: Corpus, check: Callable[[pydicom.Dataset], bool]) -> Target:
    for unit in corpus.units:
        if check(pydicom.dcmread(corpus.files[unit.sop or ""], stop_before_pixels=True)):
            return unit
    raise AssertionError("no such file in the corpus")


def _syntax(*uids: str) -> Callable[[pydicom.Dataset], bool]:
    return lambda ds: ds.file_meta.TransferSyntaxUID in uids and "Rows" in ds


def _frames(ds: pydicom.Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except ValueError:
        return 1


J2K = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
RLE = "1.2.840.10008.1.2.5"
NATIVE = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


def _image_units(corpus: Corpus, limit: int = 12) -> list[Target]:
    chosen = []
    for unit in corpus.units:
        ds = pydicom.dcmread(corpus.files[unit.sop or ""], stop_before_pixels=True)
        if "Rows" in ds and ds.file_meta.TransferSyntaxUID in (
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2",
        ):
            chosen.append(unit)
    return chosen[:limit]


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_rendered_images_decode_to_rows_by_columns(
    corpus: Corpus, tmp_path: Path, fmt: str
) -> None:
    from PIL import Image

    units = _image_units(corpus)
    files, letters = _run(
        _retriever(corpus.server.dicomweb_url, tmp_path, what="rendered", render_format=fmt), units
    )
    assert len(files) + len(letters) == len(units)
    assert len(files) >= len(units) - 2  # Orthanc cannot render a few (16-bit colour)
    for f in files:
        ds = corpus.dataset(f.uids.sop)
        image = Image.open(f.path)
        assert image.format == ("PNG" if fmt == "png" else "JPEG")
        assert image.size == (ds.Columns, ds.Rows)
        assert f.path.endswith(".png" if fmt == "png" else ".jpg")
    for letter in letters:
        assert letter.reason in ("unsupported", "server_error"), letter


def test_what_orthanc_cannot_render_is_a_dead_letter(corpus: Corpus, tmp_path: Path) -> None:
    j2k = [_first(corpus, _syntax(*J2K))]
    files, letters = _run(_retriever(corpus.server.dicomweb_url, tmp_path, what="rendered"), j2k)
    assert files == [] and [(d.reason, d.http_status) for d in letters] == [("unsupported", 400)]
    assert not list(tmp_path.glob("**/*.png"))


def test_frames_equal_the_instance_frames(corpus: Corpus, tmp_path: Path) -> None:
    checked_multi = 0
    for unit in corpus.units:
        ds = corpus.dataset(unit.sop or "")
        if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID not in (
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.5",
        ):
            continue
        if str(ds.get("NumberOfFrames") or "1").strip() != str(_frames(ds)):
            continue  # badVR.dcm: a NumberOfFrames no server can use
        frames = _frames(ds)
        files, letters = _run(
            _retriever(corpus.server.dicomweb_url, tmp_path, what="frames"), [unit]
        )
        assert letters == [], (corpus.files[unit.sop or ""].name, letters)
        got = {
            int(Path(f.path).stem.rsplit("_frame", 1)[1]): Path(f.path).read_bytes() for f in files
        }
        assert sorted(got) == list(range(1, frames + 1))
        if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5":
            expected = [
                b"".join(f)
                for f in generate_fragmented_frames(ds.PixelData, number_of_frames=frames)
            ]
        else:
            size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
            expected = [ds.PixelData[i * size : (i + 1) * size] for i in range(frames)]
        assert [got[i + 1] for i in range(frames)] == expected, corpus.files[unit.sop or ""].name
        checked_multi += frames > 1
    assert checked_multi >= 2  # multi-frame files included


def test_chosen_frames_and_a_missing_frame(corpus: Corpus, tmp_path: Path) -> None:
    unit = _first(corpus, lambda ds: _syntax(*NATIVE)(ds) and _frames(ds) >= 5)
    files, letters = _run(
        _retriever(corpus.server.dicomweb_url, tmp_path, what="frames", frames=(2, 5)), [unit]
    )
    assert sorted(Path(f.path).name.rsplit("_", 1)[1] for f in files) == [
        "frame2.raw",
        "frame5.raw",
    ]
    _, letters = _run(
        _retriever(corpus.server.dicomweb_url, tmp_path / "x", what="frames", frames=(99,)), [unit]
    )
    assert [d.reason for d in letters] == ["unsupported"]


def test_metadata_matches_the_stored_attributes(corpus: Corpus, tmp_path: Path) -> None:
    files, letters = _run(
        _retriever(corpus.server.dicomweb_url, tmp_path, what="metadata"), corpus.units
    )
    assert letters == [] and len(files) == len(corpus.units)
    for f in files:
        [document] = json.loads(Path(f.path).read_text())
        ds = corpus.dataset(f.uids.sop)
        assert document["00080018"]["Value"] == [ds.SOPInstanceUID]
        assert document["0020000D"]["Value"] == [ds.StudyInstanceUID]
        if "Rows" in ds:
            assert document["00280010"]["Value"] == [ds.Rows]
            assert document["00280011"]["Value"] == [ds.Columns]
    series = sorted({u.at_level("series") for u in corpus.units})
    docs, letters = _run(
        _retriever(
            corpus.server.dicomweb_url, tmp_path / "s", what="metadata", granularity="series"
        ),
        series,
    )
    assert letters == [] and len(docs) == len(series)
    total = sum(len(json.loads(Path(d.path).read_text())) for d in docs)
    assert total == len(corpus.units)
    assert all(d.path.endswith("/metadata.json") for d in docs)


def test_xml_metadata(corpus: Corpus, tmp_path: Path) -> None:
    unit = corpus.units[0]
    files, letters = _run(
        _retriever(corpus.server.dicomweb_url, tmp_path, what="metadata", metadata_format="xml"),
        [unit],
    )
    assert letters == []
    text = Path(files[0].path).read_text()
    assert files[0].path.endswith(".xml") and "<NativeDicomModel" in text and unit.sop in text


def test_bulk_data_equals_the_element_values(corpus: Corpus, tmp_path: Path) -> None:
    ct = next(u for u in corpus.units if corpus.files[u.sop or ""].name == "CT_small.dcm")
    ecg = next(u for u in corpus.units if corpus.files[u.sop or ""].name == "waveform_ecg.dcm")
    files, letters = _run(
        _retriever(corpus.server.dicomweb_url, tmp_path, what="bulkdata"), [ct, ecg]
    )
    assert letters == []
    by_name = {Path(f.path).name.split("_", 1)[1]: Path(f.path).read_bytes() for f in files}
    assert by_name["7FE00010.bin"] == corpus.dataset(ct.sop or "").PixelData
    waveform = corpus.dataset(ecg.sop or "").WaveformSequence[0].WaveformData
    assert by_name["54000100_0_54001010.bin"] == waveform  # inside a sequence, item 0-based
    chosen, _ = _run(
        _retriever(
            corpus.server.dicomweb_url,
            tmp_path / "one",
            what="bulkdata",
            bulkdata_paths=("7FE00010",),
        ),
        [ct],
    )
    assert [Path(f.path).name.split("_", 1)[1] for f in chosen] == ["7FE00010.bin"]


def test_a_missing_instance_is_a_dead_letter(corpus: Corpus, tmp_path: Path) -> None:
    unit = corpus.units[0]
    missing = Target(unit.study, unit.series, "1.2.3.4.5.6.7")
    files, letters = _run(_retriever(corpus.server.dicomweb_url, tmp_path), [missing])
    assert files == []
    assert [(d.reason, d.http_status, d.uids.sop if d.uids else None) for d in letters] == [
        ("not_found", 404, "1.2.3.4.5.6.7")
    ]
    assert not list(tmp_path.glob("**/*.dcm"))


def test_a_transcode_orthanc_cannot_do_is_dead_lettered_quickly(
    corpus: Corpus, tmp_path: Path
) -> None:
    j2k = [_first(corpus, _syntax(*J2K))]
    slow = http.RetryPolicy(max_attempts=6, initial_backoff=2.0, max_backoff=2.0)
    wado = WadoConfig(
        DicomwebEndpoint(corpus.server.dicomweb_url),
        transfer_syntax="1.2.840.10008.1.2.4.50",
        retry=slow,
        max_server_error_attempts=1,
    )
    retriever = Retriever(requests.Session(), wado, OutputFiles(str(tmp_path)))
    [letter] = retriever.retrieve(j2k[0]).outcomes
    assert isinstance(letter, DeadLetter)
    assert letter.reason in ("server_error", "unsupported")
    assert letter.attempts <= 2  # not six tries with backoff


def test_a_transcode_to_explicit_little_endian_parses(corpus: Corpus, tmp_path: Path) -> None:
    unit = _first(corpus, _syntax(RLE, "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70"))
    files, letters = _run(
        _retriever(
            corpus.server.dicomweb_url, tmp_path, transfer_syntax="1.2.840.10008.1.2.1", verify=True
        ),
        [unit],
    )
    assert letters == []
    ds = pydicom.dcmread(io.BytesIO(Path(files[0].path).read_bytes()))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_rendered_frames_and_viewport(corpus: Corpus, tmp_path: Path) -> None:
    from PIL import Image

    unit = _first(
        corpus,
        lambda ds: _syntax(*NATIVE)(ds) and _frames(ds) >= 3 and ds.BitsAllocated in (8, 16),
    )  # Orthanc renders neither 32-bit dose grids nor 16-bit colour
    ds = corpus.dataset(unit.sop or "")
    retriever = _retriever(
        corpus.server.dicomweb_url,
        tmp_path,
        what="rendered",
        render_frames=(),
    )
    files, letters = _run(retriever, [unit])
    assert letters == [], [(d.source.rsplit("/", 3)[1:], d.message) for d in letters]
    names = sorted(Path(f.path).name.rsplit("_", 1)[1] for f in files)
    assert names == sorted(f"frame{i}.png" for i in range(1, _frames(ds) + 1))
    for f in files:
        assert Image.open(f.path).size == (ds.Columns, ds.Rows)
    ct = _first(corpus, lambda d: _syntax(*NATIVE)(d) and d.Modality == "CT")
    small = _retriever(
        corpus.server.dicomweb_url, tmp_path / "vp", what="rendered", viewport=(32, 32)
    )
    [image], _ = _run(small, [ct])
    assert max(Image.open(image.path).size) <= 32  # scaled into the viewport


def test_xml_metadata_of_a_series_is_one_document_per_instance(
    corpus: Corpus, tmp_path: Path
) -> None:
    series = sorted({u.at_level("series") for u in corpus.units})[:5]
    retriever = _retriever(
        corpus.server.dicomweb_url,
        tmp_path,
        what="metadata",
        metadata_format="xml",
        granularity="series",
    )
    files, letters = _run(retriever, series)
    assert letters == []
    expected = {u.sop for u in corpus.units if u.at_level("series") in series}
    assert {f.uids.sop for f in files} == expected
    for f in files:
        assert f.path.endswith(f"{f.uids.sop}.xml") and f.uids.sop in Path(f.path).read_text()
