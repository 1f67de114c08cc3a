"""What a retrieve or delete acts on: a study, a series or an instance, named by its UIDs.

No Beam here. ``Target`` is the element; ``parse_target_line`` reads one line of a ``--uids_file``:

- ``study``, ``study/series`` or ``study/series/instance`` (UIDs separated by ``/``);
- a JSON object: a line of ``pipelines.search``'s ``results-*.jsonl`` (a DICOM JSON dataset, plus
  ``query_id``), or any DICOM JSON object carrying StudyInstanceUID (0020000D) and optionally
  SeriesInstanceUID (0020000E) and SOPInstanceUID (00080018);
- blank lines and lines starting with ``#`` are not targets (``None``).

A line that cannot be read raises ``InvalidInputError`` whose message names the line number, never
the line's text beyond the UIDs' positions (a mistaken file may hold anything).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from transforms.dead_letter import Reason
from transforms.dicom.uid import check_uid
from transforms.errors import InvalidInputError

STUDIES = "studies"
SERIES = "series"
INSTANCES = "instances"
LEVELS = (STUDIES, SERIES, INSTANCES)
_SINGULAR = {"study": STUDIES, "series": SERIES, "instance": INSTANCES}

STUDY_UID_TAG = "0020000D"
SERIES_UID_TAG = "0020000E"
SOP_UID_TAG = "00080018"


def parse_level(text: str) -> str:
    """``studies|series|instances``; the singular forms are accepted too."""
    value = text.strip().lower()
    value = _SINGULAR.get(value, value)
    if value not in LEVELS:
        raise ValueError(f"level must be one of studies, series, instances (got {text!r})")
    return value


@dataclass(frozen=True, order=True)
class Target:
    """A study (``series`` and ``sop`` None), a series (``sop`` None) or an instance."""

    study: str
    series: str | None = None
    sop: str | None = None

    def __post_init__(self) -> None:
        if self.sop is not None and self.series is None:
            raise ValueError("an instance target needs its series UID")

    @property
    def level(self) -> str:
        if self.sop is not None:
            return INSTANCES
        if self.series is not None:
            return SERIES
        return STUDIES

    @property
    def key(self) -> str:
        """``study[/series[/sop]]``: a plain string to group, de-duplicate and sort by."""
        return "/".join(u for u in (self.study, self.series, self.sop) if u is not None)

    def at_level(self, level: str) -> Target:
        """This target cut down to ``level`` (an instance's series, a series' study).

        Raises ValueError when the target is coarser than ``level``: that needs a search.
        """
        if LEVELS.index(level) > LEVELS.index(self.level):
            raise ValueError(f"a {self.level} target cannot name {level} without a search")
        if level == STUDIES:
            return Target(self.study)
        if level == SERIES:
            return Target(self.study, self.series)
        return self

    @staticmethod
    def from_dicom_json(dataset: dict[str, Any]) -> Target:
        """The target a DICOM JSON dataset names (a QIDO match, a metadata object)."""
        uids = [_json_uid(dataset, tag) for tag in (STUDY_UID_TAG, SERIES_UID_TAG, SOP_UID_TAG)]
        study, series, sop = uids
        if study is None:
            raise InvalidInputError(Reason.MISSING_UID, "StudyInstanceUID (0020000D) is missing")
        if sop is not None and series is None:
            raise InvalidInputError(
                Reason.MISSING_UID, "SOPInstanceUID given without SeriesInstanceUID"
            )
        return Target(
            check_uid(study, "StudyInstanceUID"),
            None if series is None else check_uid(series, "SeriesInstanceUID"),
            None if sop is None else check_uid(sop, "SOPInstanceUID"),
        )


def _json_uid(dataset: dict[str, Any], tag: str) -> str | None:
    element = dataset.get(tag)
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    if not isinstance(values, list) or not values:
        return None
    value = values[0]
    return value if isinstance(value, str) else str(value)


def parse_target_line(line: str, line_number: int) -> Target | None:
    """One line of a ``--uids_file`` as a Target, or None for a blank or comment line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    where = f"line {line_number}"
    try:
        if text.startswith("{"):
            try:
                dataset = json.loads(text)
            except json.JSONDecodeError:
                raise InvalidInputError(Reason.UNREADABLE, "not a JSON object") from None
            if not isinstance(dataset, dict):
                raise InvalidInputError(Reason.UNREADABLE, "not a JSON object")
            return Target.from_dicom_json(dataset)
        parts = text.split("/")
        if len(parts) > 3:
            raise InvalidInputError(
                Reason.UNREADABLE, f"{len(parts)} UIDs; expected study[/series[/instance]]"
            )
        names = ("study UID", "series UID", "instance UID")
        uids = [check_uid(part.strip(), name) for part, name in zip(parts, names, strict=False)]
        return Target(*uids)
    except InvalidInputError as exc:
        raise InvalidInputError(exc.reason, f"{where}: {exc.message}") from None
