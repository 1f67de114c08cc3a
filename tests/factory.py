"""Test inputs: real DICOM from pydicom's bundled files, cloned with new UIDs, plus bad inputs.

Shared by the tests and the benchmarks. Everything is generated under a given directory; nothing
is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.uid import generate_uid

PATIENT_NAME = "SENSITIVE^PATIENT^NAME"  # planted to prove it never reaches outputs or logs


def testdata(name: str) -> Path:
    return Path(pydicom.data.get_testdata_file(name, download=False))


def pydicom_test_files_dir() -> Path:
    return testdata("CT_small.dcm").parent


def pydicom_data_dir() -> Path | None:
    try:
        import data_store  # the pydicom-data package
    except ImportError:
        return None
    return Path(data_store.__file__).parent / "data"


def uid(seed: str) -> str:
    return generate_uid(entropy_srcs=[seed])


def write_ct_instances(
    directory: Path,
    *,
    count: int,
    studies: int = 1,
    seed: str = "ct",
    template: str = "CT_small.dcm",
) -> list[Path]:
    """``count`` copies of a real CT instance with fresh UIDs, spread over ``studies`` studies."""
    directory.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(testdata(template))
    ds.PatientName = PATIENT_NAME
    paths = []
    for i in range(count):
        study = i % studies
        ds.StudyInstanceUID = uid(f"{seed}-study-{study}")
        ds.SeriesInstanceUID = uid(f"{seed}-series-{study}")
        ds.SOPInstanceUID = uid(f"{seed}-sop-{i}")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        path = directory / f"{seed}-{i:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class BadInput:
    path: Path
    reason: str


def write_bad_inputs(directory: Path) -> list[BadInput]:
    """One file per way an input can be unusable, with the dead-letter reason it must get."""
    directory.mkdir(parents=True, exist_ok=True)
    good = testdata("CT_small.dcm").read_bytes()
    out: list[BadInput] = []

    def put(name: str, data: bytes, reason: str) -> None:
        path = directory / name
        path.write_bytes(data)
        out.append(BadInput(path, reason))

    put("notes.txt", b"this is a text file, not an image\n" * 20, "not_dicom")
    put("empty.dcm", b"", "not_dicom")
    put("random.dcm", random.Random(7).randbytes(5000), "not_dicom")
    put("cut-in-pixels.dcm", good[: len(good) - 1000], "truncated")
    put("cut-in-header.dcm", good[:700], "truncated")

    def variant(name: str, reason: str, **changes: object) -> None:
        ds = pydicom.dcmread(testdata("CT_small.dcm"))
        ds.PatientName = PATIENT_NAME
        ds.SOPInstanceUID = uid(f"bad-{name}")
        for keyword, value in changes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        path = directory / name
        ds.save_as(path, enforce_file_format=True)
        out.append(BadInput(path, reason))

    variant("no-study-uid.dcm", "missing_uid", StudyInstanceUID=None)
    variant("letters-in-uid.dcm", "invalid_uid", SeriesInstanceUID="1.2.abc.4")
    variant("uid-too-long.dcm", "invalid_uid", StudyInstanceUID="1." + "2" * 70)
    return out


def copy_files(names: list[str], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        target = directory / name
        shutil.copyfile(testdata(name), target)
        paths.append(target)
    return paths


def sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_size(path: Path | str) -> int:
    return os.path.getsize(path)
