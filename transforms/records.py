"""Frozen element types that flow between the transforms.

Records are small, immutable and equal-comparable so Beam's ``equal_to`` works on them and they
pickle cheaply. They never hold pixel bytes or patient attributes: only paths, sizes and UIDs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

STATUS_STORED = "stored"
STATUS_ALREADY_PRESENT = "already_present"


@dataclass(frozen=True)
class InstanceUids:
    """The three UIDs that name an instance in a DICOMweb store."""

    study: str
    series: str
    sop: str


@dataclass(frozen=True)
class DicomFile:
    """A DICOM file that passed validation and is ready to be stored.

    Attributes:
      path: where the file lives (local path or gs:// URL); opened again when sending.
      size: number of bytes sent for this instance (file size plus ``file_meta_prefix``).
      uids: Study, Series and SOP Instance UIDs.
      sop_class_uid: SOP Class UID of the dataset.
      transfer_syntax_uid: transfer syntax of the stored bytes.
      file_meta_prefix: for a raw dataset (no Part 10 header), the preamble and File Meta
        Information to send before the file's bytes; empty for Part 10 files.
    """

    path: str
    size: int
    uids: InstanceUids
    sop_class_uid: str
    transfer_syntax_uid: str
    file_meta_prefix: bytes = b""

    @property
    def file_size(self) -> int:
        return self.size - len(self.file_meta_prefix)


@dataclass(frozen=True)
class StowBatch:
    """Instances of one study sent together in one STOW-RS request."""

    study_uid: str
    files: tuple[DicomFile, ...]
    # store hardening: byte-identical copies of files of this batch, as (twin path, copy);
    # they are not sent and get their twin's outcome.
    duplicates: tuple[tuple[str, DicomFile], ...] = ()

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class StoredInstance:
    """One input that is in the store at the end of the run.

    ``status`` is ``stored`` when this run sent it, ``already_present`` when the store had it.
    ``duplicate_of`` names the input with the same bytes that was sent instead of this one (its
    status is the twin's, ``bytes`` 0).
    """

    source: str
    uids: InstanceUids
    sop_class_uid: str
    retrieve_url: str | None
    bytes: int
    status: str
    attempts: int
    duplicate_of: str | None = None  # store hardening

    def to_json(self) -> str:
        return json.dumps(_flatten(self), sort_keys=True)


def _flatten(record: Any) -> dict[str, Any]:
    """Dataclass to a flat JSON-ready dict: ``uids`` becomes study_uid/series_uid/sop_uid."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, InstanceUids):
            # An unknown UID is "" in memory and null in JSON.
            out.update(
                study_uid=value.study or None,
                series_uid=value.series or None,
                sop_uid=value.sop or None,
            )
        elif value is None and f.name == "uids":
            out.update(study_uid=None, series_uid=None, sop_uid=None)
        else:
            out[f.name] = value
    return out
