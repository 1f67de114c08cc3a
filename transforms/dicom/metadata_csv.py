"""Per-image metadata from a CSV, merged into a DICOM JSON template. No Beam here.

The CSV has a header row: the first column, ``file``, holds the JPEG's base name; the other
columns are DICOM keywords (``PatientID``, ``StudyDate``, ``SOPInstanceUID``...). A cell becomes
the DICOM JSON element of its keyword (VR from the data dictionary; ``\\`` separates values); an
empty cell keeps the template's value.
"""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from transforms.dead_letter import Reason
from transforms.errors import InvalidInputError

FILE_COLUMN = "file"
_INT_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_REFUSED_VRS = frozenset({"SQ", "OB", "OW", "OD", "OF", "OL", "OV", "UN", "AT"})


def check_header(header: Sequence[str]) -> list[str]:
    """The keyword columns of a header row; ValueError naming what is wrong."""
    if not header or header[0].strip().lower() != FILE_COLUMN:
        raise ValueError(f"the metadata CSV's first column must be {FILE_COLUMN!r}")
    keywords = [h.strip() for h in header[1:]]
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"metadata CSV column {keyword!r} is not a DICOM keyword")
        if dictionary_VR(tag).split(" ")[0] in _REFUSED_VRS:
            raise ValueError(f"metadata CSV column {keyword!r} cannot be given as text")
    if len(set(keywords)) != len(keywords):
        raise ValueError("the metadata CSV names a keyword twice")
    return keywords


def read_rows(text: str) -> Iterator[tuple[int, str, dict[str, str]]]:
    """(line number, file name, {keyword: cell}) per data row; the header is checked first."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    keywords = check_header(header or [])
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        cells = {k: row[i + 1].strip() for i, k in enumerate(keywords) if i + 1 < len(row)}
        yield reader.line_num, row[0].strip(), cells


def row_elements(cells: Mapping[str, str]) -> dict[str, Any]:
    """DICOM JSON elements of one row's non-empty cells."""
    out: dict[str, Any] = {}
    for keyword, text in cells.items():
        if not text:
            continue
        tag = tag_for_keyword(keyword)
        assert tag is not None  # check_header refused unknown keywords
        vr = dictionary_VR(tag).split(" ")[0]
        values: list[Any] = text.split("\\")
        try:
            if vr in _INT_VRS:
                values = [int(v) for v in values]
            elif vr in _FLOAT_VRS:
                values = [float(v) for v in values]
        except ValueError:
            raise InvalidInputError(
                Reason.NOT_DICOM_JSON, f"the CSV's {keyword} cell is not a number"
            ) from None
        if vr == "PN":
            values = [{"Alphabetic": v} for v in values]
        out[f"{tag:08X}"] = {"vr": vr, "Value": values}
    return out


def merge(template: Mapping[str, Any], elements: Mapping[str, Any]) -> dict[str, Any]:
    """The template with the row's elements put over it (the template is not changed)."""
    merged = {k.upper(): v for k, v in copy.deepcopy(dict(template)).items()}
    merged.update(elements)
    return merged
