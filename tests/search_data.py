"""Search test data: generated studies with known attributes plus pydicom's own test files.

The expected result of a search is computed here from the datasets themselves (plain Python
predicates), never written by hand, so a test compares the store's answer with the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from factory import testdata, uid

# Each study: name (with ^), patient id, date, accession, [(modality, instances), ...]
STUDIES = [
    ("DOE^JOHN", "PID-1", "20200115", "ACC-0001", [("CT", 3), ("MR", 2)]),
    ("DOE^JANE", "PID-2", "20200620", "ACC-0002", [("CT", 4)]),
    ("SMITH^ANNA^MARIA", "PID-3", "20210301", "ACC-0003", [("US", 2)]),
    ("MILLER^BOB", "PID-4", "20211231", "ACC-0004", [("CT", 1), ("SR", 1)]),
    ("DOE^JOHNNY", "PID-5", "20190704", "ACC-0005", [("MR", 3)]),
]
# Real files with their own attributes (and distinct SOP Instance UIDs); reportsi.dcm has a
# space in its PatientName ("Last Name^First Name").
PYDICOM_FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "waveform_ecg.dcm", "reportsi.dcm"]


@dataclass(frozen=True)
class Corpus:
    paths: list[Path]
    datasets: list[pydicom.Dataset]  # headers only

    def uids(
        self, level: str, where: Callable[[pydicom.Dataset], bool] = lambda ds: True
    ) -> set[str]:
        """The UIDs at ``level`` of the datasets ``where`` holds for (the expected matches)."""
        key = {"studies": "StudyInstanceUID", "series": "SeriesInstanceUID"}
        name = key.get(level, "SOPInstanceUID")
        return {str(ds[name].value) for ds in self.datasets if where(ds)}

    def json_datasets(self) -> list[dict[str, object]]:
        return [ds.to_json_dict() for ds in self.datasets]


def write_corpus(directory: Path, *, seed: str = "search") -> Corpus:
    directory.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(testdata("CT_small.dcm"))
    paths: list[Path] = []
    n = 0
    for s, (name, pid, date, accession, series) in enumerate(STUDIES):
        for se, (modality, count) in enumerate(series):
            for i in range(count):
                ds = template.copy()
                ds.PatientName = name
                ds.PatientID = pid
                ds.StudyDate = date
                ds.SeriesDate = date
                ds.AccessionNumber = accession
                ds.Modality = modality
                ds.StudyInstanceUID = uid(f"{seed}-study-{s}")
                ds.SeriesInstanceUID = uid(f"{seed}-series-{s}-{se}")
                ds.SOPInstanceUID = uid(f"{seed}-sop-{s}-{se}-{i}")
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.InstanceNumber = i + 1
                ds.SeriesNumber = se + 1
                path = directory / f"{seed}-{n:03d}.dcm"
                ds.save_as(path, enforce_file_format=True)
                paths.append(path)
                n += 1
    for name in PYDICOM_FILES:
        path = directory / name
        path.write_bytes(testdata(name).read_bytes())
        paths.append(path)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    for ds in datasets:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    return Corpus(paths, datasets)


def value(ds: pydicom.Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "")
