"""The pure parts of the WADO-RS client: options, file names, Accept headers, status policy,
bulk data and frames found in metadata; and the atomic output files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.wado import (
    Layout,
    WadoConfig,
    bulk_file_suffix,
    bulkdata_uris,
    dicom_accepts,
    failure_reason,
    frame_batches,
    keeps_retrying,
    number_of_frames,
    octet_accepts,
    parse_bulkdata_path,
    parse_frame_list,
    parse_viewport,
    request_headers,
    try_next_accept,
)
from transforms.output_files import SPOOL_DIR, OutputFiles

ENDPOINT = DicomwebEndpoint("http://127.0.0.1:8042/dicom-web")


def test_frame_lists() -> None:
    assert parse_frame_list("1,3,5") == (1, 3, 5)
    assert parse_frame_list(" all ") == ()
    assert parse_frame_list("2,2,1") == (2, 1)
    for bad in ("0", "1,,2", "x", "-1", ""):
        with pytest.raises(ValueError):
            parse_frame_list(bad)
    assert list(frame_batches(tuple(range(1, 130)))) == [
        tuple(range(1, 65)),
        tuple(range(65, 129)),
        (129,),
    ]


def test_viewport_and_bulkdata_paths() -> None:
    assert parse_viewport("512,256") == (512, 256)
    for bad in ("512", "0,5", "a,b"):
        with pytest.raises(ValueError):
            parse_viewport(bad)
    assert parse_bulkdata_path("7fe00010") == "7FE00010"
    assert parse_bulkdata_path("00540016/0/00181079") == "00540016/0/00181079"
    for bad in ("7FE0001", "00540016/x/00181079", "7FE00010/", "../etc"):
        with pytest.raises(ValueError):
            parse_bulkdata_path(bad)
    assert bulk_file_suffix("00540016/0/00181079") == "_00540016_0_00181079.bin"


def test_layout_names_files_and_refuses_escapes() -> None:
    layout = Layout()
    assert layout.relative("1.2", "3.4", "5.6", ".dcm") == "1.2/3.4/5.6.dcm"
    assert layout.relative("1.2", "3.4", "5.6", "_frame2.raw") == "1.2/3.4/5.6_frame2.raw"
    assert layout.series_document("1.2", "3.4", ".json") == "1.2/3.4/metadata.json"
    assert Layout.study_document("1.2", ".json") == "1.2/metadata.json"
    assert Layout("{series}-{instance}").relative("1", "2", "3", ".png") == "2-3.png"
    assert Layout("{study}/{instance}").series_document("1", "2", ".json") == "1/2/metadata.json"
    for bad in (
        "{study}/{series}",
        "/abs/{instance}",
        "../{instance}",
        "{study}//{instance}",
        "{sop}",
    ):
        with pytest.raises(ValueError):
            Layout(bad)


def test_config_checks_combinations() -> None:
    assert WadoConfig(ENDPOINT).unit_level == "instances"
    assert WadoConfig(ENDPOINT, granularity="series").unit_level == "series"
    assert WadoConfig(ENDPOINT, what="metadata", granularity="study").unit_level == "studies"
    with pytest.raises(ValueError):
        WadoConfig(ENDPOINT, what="rendered", granularity="series")
    with pytest.raises(ValueError):
        WadoConfig(ENDPOINT, transfer_syntax="1.2.x")
    with pytest.raises(ValueError):
        WadoConfig(ENDPOINT, what="thumbnails")


def test_accept_headers() -> None:
    assert dicom_accepts("*", single_part_first=True) == (
        "application/dicom; transfer-syntax=*",
        'multipart/related; type="application/dicom"; transfer-syntax=*',
    )
    assert dicom_accepts("1.2.840.10008.1.2.1", single_part_first=False) == (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
    )
    assert octet_accepts()[0].startswith('multipart/related; type="application/octet-stream"')
    assert request_headers("image/png")["Accept-Encoding"] == "identity"
    assert "Accept-Encoding" not in request_headers("application/dicom+json")


def test_status_policy() -> None:
    assert failure_reason(404) == failure_reason(403) == "not_found"  # Google: 403 for missing
    assert failure_reason(400) == failure_reason(406) == "unsupported"
    assert failure_reason(500) == "server_error"
    assert failure_reason(401) == "http_error"
    assert try_next_accept(400) and try_next_accept(406) and not try_next_accept(404)
    # A 500 is retried up to the per-resource cap; a 503 follows the job's retry policy.
    assert keeps_retrying(500, 1, 2) and not keeps_retrying(500, 2, 2)
    assert keeps_retrying(503, 50, 2) and keeps_retrying(None, 50, 2)


def test_bulkdata_and_frames_found_in_metadata() -> None:
    dataset = {
        "00280008": {"vr": "IS", "Value": [3]},
        "7FE00010": {"vr": "OW", "BulkDataURI": "http://s/bulk/7fe00010"},
        "00540016": {
            "vr": "SQ",
            "Value": [
                {"00100010": {"vr": "PN"}},
                {"00181079": {"vr": "OB", "BulkDataURI": "http://s/bulk/00540016/2/00181079"}},
            ],
        },
    }
    assert list(bulkdata_uris(dataset)) == [
        ("00540016/1/00181079", "http://s/bulk/00540016/2/00181079"),  # 0-based name, URI as given
        ("7FE00010", "http://s/bulk/7fe00010"),
    ]
    assert number_of_frames(dataset) == 3
    assert number_of_frames({}) == 1


def test_output_files_are_atomic_and_measured(tmp_path: Path) -> None:
    files = OutputFiles(str(tmp_path))
    spool = files.spool()
    spool.write(b"abc")
    spool.write(b"def")
    assert files.size("a/b.dcm") is None  # nothing at the final name while writing
    final = files.commit(spool, "a/b.dcm")
    assert Path(final).read_bytes() == b"abcdef"
    assert files.size("a/b.dcm") == 6
    assert files.sha256("a/b.dcm") == spool.sha256
    assert spool.sha256 == "bef57ec7f53a6d40beb640a780a639c83bc29ac8a9816f1fc6c5c6dcd93c4721"
    assert files.any_below("a") and not files.any_below("z")
    aborted = files.spool()
    aborted.write(b"partial")
    aborted.discard()
    assert os.listdir(tmp_path / SPOOL_DIR) == []


class _PrefixedFileSystems:
    """Beam's FileSystems for ``fake://`` paths, mapped to a local directory: the remote code
    path of OutputFiles (temporary object, rename, match, open) without a bucket."""

    def __init__(self, root: Path) -> None:
        from apache_beam.io.filesystems import FileSystems

        self._fs = FileSystems
        self._root = str(root)
        self.renames: list[tuple[str, str]] = []

    def _local(self, path: str) -> str:
        assert path.startswith("fake://")
        return self._root + "/" + path[len("fake://") :]

    def create(self, path: str) -> object:
        os.makedirs(os.path.dirname(self._local(path)), exist_ok=True)
        return self._fs.create(self._local(path))

    def rename(self, sources: list[str], destinations: list[str]) -> None:
        self.renames += list(zip(sources, destinations, strict=True))
        self._fs.rename([self._local(s) for s in sources], [self._local(d) for d in destinations])

    def match(self, patterns: list[str]) -> object:
        return self._fs.match([self._local(p) for p in patterns])

    def open(self, path: str, compression_type: object) -> object:
        return self._fs.open(self._local(path), compression_type=compression_type)


def test_remote_outputs_go_through_a_temporary_object_then_a_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transforms.output_files as output_files

    fake = _PrefixedFileSystems(tmp_path / "bucket")
    monkeypatch.setattr(output_files, "_filesystems", lambda: fake)
    files = OutputFiles("fake://export")
    assert not files.is_local and files.size("1/2/3.dcm") is None
    spool = files.spool()
    assert spool.path.startswith(tempfile.gettempdir())  # spooled locally first
    spool.write(b"DICM" * 1000)
    final = files.commit(spool, "1/2/3.dcm")
    assert final == "fake://export/1/2/3.dcm"
    [(temporary, destination)] = fake.renames
    assert destination == final and temporary.startswith(final + ".part-")
    assert (tmp_path / "bucket/export/1/2/3.dcm").read_bytes() == b"DICM" * 1000
    assert not os.path.exists(spool.path)
    assert files.size("1/2/3.dcm") == 4000
    assert files.sha256("1/2/3.dcm") == spool.sha256
    assert files.any_below("1/2") and not files.any_below("9")
