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


# --- search (QIDO-RS) -------------------------------------------------------------------------
# A query holds what the user typed (filter values included: they are the user's, not the
# store's); a match holds what the store answered, which is the search's very output.

SEARCH_LEVELS = ("studies", "series", "instances")


@dataclass(frozen=True)
class SearchQuery:
    """One QIDO-RS search.

    Attributes:
      query_id: the 1-based line of ``--queries`` it comes from, or 1 for a query from options.
      level: ``studies``, ``series`` or ``instances``.
      study: Study Instance UID the search is limited to, or None.
      series: Series Instance UID the search is limited to (series or instance level), or None.
      filters: ``(tag, value)`` pairs; tags as 8 upper-case hex digits (``00100010``).
      includefields: tags to return beyond the defaults, or ``("all",)``.
      fuzzy: ask for fuzzy matching of person names.
    """

    query_id: int
    level: str
    study: str | None = None
    series: str | None = None
    filters: tuple[tuple[str, str], ...] = ()
    includefields: tuple[str, ...] = ()
    fuzzy: bool = False

    def __post_init__(self) -> None:
        if self.level not in SEARCH_LEVELS:
            raise ValueError(f"level must be one of {', '.join(SEARCH_LEVELS)}: {self.level!r}")
        if self.series is not None and self.level == "studies":
            raise ValueError("a series scope (--series) needs --level series or instances")


@dataclass(frozen=True)
class SearchMatch:
    """One dataset a search returned, as the DICOM JSON text the store sent (tag keys).

    ``dataset_json`` is kept as text: it is written out as it is, and parsed only when asked.
    """

    query_id: int
    level: str
    dataset_json: str

    @property
    def dataset(self) -> dict[str, Any]:
        value = json.loads(self.dataset_json)
        return value if isinstance(value, dict) else {}

    def to_json(self) -> str:
        """The dataset plus ``"query_id"``: one line of ``results-*.jsonl``."""
        body = self.dataset_json.strip()
        if body in ("", "{}"):
            return json.dumps({"query_id": self.query_id})
        return f'{{"query_id": {self.query_id}, {body[1:]}'


@dataclass(frozen=True)
class MatchBatch:
    """Consecutive matches of one query in one element (``SearchDicomStore(batch_matches=N)``):
    a job that only writes them pays Beam's per-element cost once per batch, not per match."""

    query_id: int
    level: str
    datasets_json: tuple[str, ...]

    def matches(self) -> list[SearchMatch]:
        return [SearchMatch(self.query_id, self.level, text) for text in self.datasets_json]

    def to_jsonl(self) -> str:
        """The batch's lines of ``results-*.jsonl`` (no final newline: one text element)."""
        return "\n".join(m.to_json() for m in self.matches())


# delete family (transforms/delete.py, transforms/dicomweb/delete.py) ---------------------------
PLAN_TO_DELETE = "to_delete"
STATUS_DELETED = "deleted"
STATUS_ALREADY_ABSENT = "already_absent"


def _uids_from_json(data: dict[str, Any]) -> InstanceUids:
    return InstanceUids(data["study_uid"] or "", data["series_uid"] or "", data["sop_uid"] or "")


@dataclass(frozen=True)
class PlannedDelete:
    """One line of a delete plan: a study, series or instance and what the store holds of it.

    Attributes:
      uids: the target's UIDs ("" below its level: a study target has no series or SOP UID).
      level: ``studies``, ``series`` or ``instances``.
      instances: how many instances the store says the target holds (None when it did not say).
      status: ``to_delete``, or ``already_absent`` when the store does not have the target.
    """

    uids: InstanceUids
    level: str
    instances: int | None
    status: str

    def to_json(self) -> str:
        return json.dumps(_flatten(self), sort_keys=True)

    @staticmethod
    def from_json(line: str) -> PlannedDelete:
        data = json.loads(line)
        return PlannedDelete(
            _uids_from_json(data), data["level"], data["instances"], data["status"]
        )


@dataclass(frozen=True)
class DeletedTarget:
    """A target that is not in the store at the end of the run.

    ``status`` is ``deleted`` when this run deleted it, ``already_absent`` when it was gone.
    ``operation`` is the long-running operation's name when the store answered one, and
    ``duration_seconds`` how long the delete took (request, plus operation polling).
    """

    uids: InstanceUids
    level: str
    status: str
    instances: int | None
    operation: str | None
    duration_seconds: float | None
    attempts: int

    def to_json(self) -> str:
        return json.dumps(_flatten(self), sort_keys=True)


# --- retrieve (WADO-RS) family ---
STATUS_RETRIEVED = "retrieved"
STATUS_ALREADY_COMPLETE = "already_complete"


@dataclass(frozen=True)
class RetrievedFile:
    """One file written (or found complete) by a retrieve: a line of ``retrieved-*.jsonl``.

    Attributes:
      path: the file (under the job's output prefix).
      uids: the instance it holds; ``sop`` is "" for a series or study metadata document.
      bytes: its size.
      content_type: the media type the server answered (``application/dicom``, ``image/png``...).
      sha256: hex digest of its bytes.
      status: ``retrieved`` (written by this run) or ``already_complete`` (a re-run skipped it).
      attempts: requests made for it (0 when skipped).
    """

    path: str
    uids: InstanceUids
    bytes: int
    content_type: str
    sha256: str
    status: str
    attempts: int = 0

    def to_json(self) -> str:
        return json.dumps(_flatten(self), sort_keys=True)


# JSON + JPEG pairs (pipelines.store_json_jpeg)
STATUS_BUILT = "built"


@dataclass(frozen=True)
class CreatedInstance:
    """An instance created from a JSON + JPEG pair: stored, already present, or built.

    Attributes:
      source: the input the user knows it by (the JSON file, or the JPEG in template mode).
      json_path: the JSON file (None in template mode); jpeg_path: the JPEG file.
      generated_uids: (keyword, UID) of each UID the run generated.
      dicom_path: with ``--build_only``, the Part 10 file written.
      The others as in ``StoredInstance``; ``status`` is ``stored``, ``already_present`` or
      ``built``.
    """

    source: str
    json_path: str | None
    jpeg_path: str
    uids: InstanceUids
    sop_class_uid: str
    transfer_syntax_uid: str
    retrieve_url: str | None
    bytes: int
    status: str
    attempts: int
    generated_uids: tuple[tuple[str, str], ...] = ()
    dicom_path: str | None = None

    def to_json(self) -> str:
        out = _flatten(self)
        out["generated_uids"] = dict(self.generated_uids)
        return json.dumps(out, sort_keys=True)
