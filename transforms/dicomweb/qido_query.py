"""QIDO-RS queries: attribute names, value encoding, URLs, and query lines from a file. No Beam.

Keys are DICOM keywords (``PatientName``) or tags (``00100010``), resolved with pydicom's data
dictionary; an unknown keyword is a usage error. Values are percent-encoded minimally: a space and
``"#<>%&=+`` only. Orthanc does not percent-decode QIDO values, so ``DOE^J*`` must reach it as
typed (``%5E`` or ``%2A`` match nothing there); Google decodes both forms.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.records import SearchQuery

INCLUDE_ALL = "all"
STUDY_UID_TAG = "0020000D"
SERIES_UID_TAG = "0020000E"
SOP_UID_TAG = "00080018"
STUDY_DATE_TAG = "00080020"

# Matching keys of each level (PS3.18 table 10.6.1-5): a search split into per-study or
# per-series searches lists the parents with these filters only, and every filter below.
STUDY_KEYS = frozenset(
    {"00080020", "00080030", "00080050", "00080061", "00080090", "00100010", "00100020"}
    | {STUDY_UID_TAG, "00200010"}
)
SERIES_KEYS = STUDY_KEYS | {"00080060", SERIES_UID_TAG, "00200011", "00400244", "00400245"}

_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
# What Orthanc needs sent as typed (it does not decode), and what must be escaped so the query
# string stays parseable: a space and "#<>%&=+ (PS3.18 reserves nothing else in a value).
_ESCAPE = {c: f"%{ord(c):02X}" for c in ' "#<>%&=+'}
ENCODING_MINIMAL = "minimal"
ENCODING_FULL = "full"  # every reserved character percent-encoded: what most clients send


def resolve_key(text: str) -> str:
    """A keyword or an 8-digit tag -> the tag as 8 upper-case hex digits.

    Raises ValueError for an unknown keyword (a usage error).
    """
    name = text.strip()
    if _HEX_TAG.fullmatch(name):
        return name.upper()
    # pydicom (with numpy and Pillow behind it) is imported only here: the store job reaches
    # this module through its existence lookups and must not pay ~0.3 s of imports at start.
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(name)
    if tag is None:
        raise ValueError(
            f"unknown DICOM attribute {name!r}: give a keyword such as PatientName or a tag "
            "such as 00100010"
        )
    return f"{tag:08X}"


def key_name(tag: str) -> str:
    """The keyword of a tag for messages (the tag itself when the dictionary has none)."""
    from pydicom.datadict import keyword_for_tag

    try:
        return keyword_for_tag(int(tag, 16)) or tag
    except ValueError:
        return tag


def check_value(value: str) -> str:
    if any(not c.isprintable() for c in value):
        raise ValueError("a query value must not contain control characters or line breaks")
    return value


def parse_filter(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> ``(tag, value)``; raises ValueError without ``=`` or for an unknown key."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"a filter is KEY=VALUE, e.g. PatientName=DOE^J*: got {text!r}")
    return resolve_key(key), check_value(value)


def parse_includefields(values: Iterable[str]) -> tuple[str, ...]:
    """Repeatable and comma-separated keywords or tags, or ``all``."""
    tags: list[str] = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                continue
            if item.strip().lower() == INCLUDE_ALL:
                return (INCLUDE_ALL,)
            tag = resolve_key(item)
            if tag not in tags:
                tags.append(tag)
    return tuple(tags)


def encode_value(value: str, encoding: str = ENCODING_MINIMAL) -> str:
    """Percent-encode a query value: minimally (the default), or fully (``full``)."""
    if encoding == ENCODING_FULL:
        return urllib.parse.quote(value, safe="")
    return "".join(
        _ESCAPE.get(c, c) if c.isascii() else urllib.parse.quote(c, safe="") for c in value
    )


def query_string(query: SearchQuery, encoding: str = ENCODING_MINIMAL) -> str:
    """The query's parameters (scope filters, filters, includefield, fuzzymatching), encoded.

    ``limit`` and ``offset`` are added by the pager.
    """
    params: list[str] = []
    for tag, value in _scope_filters(query) + list(query.filters):
        params.append(f"{tag}={encode_value(value, encoding)}")
    params += [f"includefield={field}" for field in query.includefields]
    if query.fuzzy:
        params.append("fuzzymatching=true")
    return "&".join(params)


def _scope_filters(query: SearchQuery) -> list[tuple[str, str]]:
    """UIDs of the scope that the path cannot carry (a study scope at study level, ...)."""
    out = []
    if query.study is not None and query.level == "studies":
        out.append((STUDY_UID_TAG, query.study))
    if query.series is not None and (query.level == "series" or query.study is None):
        out.append((SERIES_UID_TAG, query.series))
    return out


def search_url(endpoint: DicomwebEndpoint, query: SearchQuery) -> str:
    """The QIDO resource of a query: ``/studies``, ``/studies/{s}/series``, ``/instances``..."""
    base = endpoint.base_url
    if query.level == "studies" or query.study is None:
        return f"{base}/{query.level}"
    study = endpoint.study_url(query.study)
    if query.level == "instances" and query.series is not None:
        return f"{study}/series/{urllib.parse.quote(query.series, safe='.')}/instances"
    return f"{study}/{query.level}"


def describe(query: SearchQuery) -> str:
    """What the user asked, for dead letters and logs (keywords, the values as typed)."""
    parts = [query.level]
    if query.study is not None:
        parts.append(f"study={query.study}")
    if query.series is not None:
        parts.append(f"series={query.series}")
    parts += [f"{key_name(tag)}={value}" for tag, value in query.filters]
    if query.fuzzy:
        parts.append("fuzzy")
    return " ".join(parts)


# --- splitting --------------------------------------------------------------------------------


def parse_date_range(value: str) -> tuple[datetime.date, datetime.date] | None:
    """``A-B``, ``A-`` or ``-B`` (YYYYMMDD) as two dates; None for anything else."""
    low, sep, high = value.partition("-")
    if not sep or "-" in high:
        return None
    try:
        start = _date(low) if low else datetime.date(1800, 1, 1)
        end = _date(high) if high else datetime.date(9999, 12, 31)
    except ValueError:
        return None
    return (start, end) if start <= end else None


def _date(text: str) -> datetime.date:
    if not re.fullmatch(r"\d{8}", text):
        raise ValueError(text)
    return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))


def split_date_range(query: SearchQuery) -> tuple[SearchQuery, SearchQuery] | None:
    """Two queries whose StudyDate ranges halve this one's (None: no range of two days or more)."""
    for i, (tag, value) in enumerate(query.filters):
        if tag != STUDY_DATE_TAG:
            continue
        bounds = parse_date_range(value)
        if bounds is None or bounds[0] == bounds[1]:
            return None
        start, end = bounds
        middle = start + (end - start) // 2
        halves = (
            f"{start:%Y%m%d}-{middle:%Y%m%d}",
            f"{middle + datetime.timedelta(days=1):%Y%m%d}-{end:%Y%m%d}",
        )
        return (
            dataclasses.replace(query, filters=_with_filter(query.filters, i, halves[0])),
            dataclasses.replace(query, filters=_with_filter(query.filters, i, halves[1])),
        )
    return None


def _with_filter(
    filters: tuple[tuple[str, str], ...], index: int, value: str
) -> tuple[tuple[str, str], ...]:
    return tuple((t, value if i == index else v) for i, (t, v) in enumerate(filters))


def parent_query(query: SearchQuery) -> SearchQuery | None:
    """The listing of parents a capped query can be split over, or None (nothing to descend).

    Instances or series store-wide -> the studies (with the study-level filters); instances of
    one study -> its series (with the study- and series-level filters).
    """
    if query.study is None and query.series is None and query.level in ("series", "instances"):
        keys = STUDY_KEYS
        level = "studies"
    elif query.study is not None and query.series is None and query.level == "instances":
        keys = SERIES_KEYS
        level = "series"
    else:
        return None
    return SearchQuery(
        query_id=query.query_id,
        level=level,
        study=query.study,
        filters=tuple((t, v) for t, v in query.filters if t in keys),
        includefields=(),
        fuzzy=query.fuzzy,
    )


def child_query(query: SearchQuery, parent_level: str, uid: str) -> SearchQuery:
    """``query`` limited to one parent found by ``parent_query``."""
    if parent_level == "studies":
        return dataclasses.replace(query, study=uid)
    return dataclasses.replace(query, series=uid)


# --- queries files ----------------------------------------------------------------------------

FORMAT_CSV = "csv"
FORMAT_JSONL = "jsonl"


def queries_format(path: str, first_line: str) -> str:
    """CSV or JSONL, by extension, else by the first non-blank line."""
    lowered = path.lower()
    if lowered.endswith(".csv"):
        return FORMAT_CSV
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return FORMAT_JSONL
    return FORMAT_JSONL if first_line.lstrip().startswith("{") else FORMAT_CSV


def parse_csv_header(line: str) -> tuple[str, ...]:
    """The header row of a CSV queries file: keywords or tags (ValueError when unknown)."""
    cells = next(csv.reader([line]), [])
    if not cells or not any(c.strip() for c in cells):
        raise ValueError("the CSV queries file needs a header row of keywords (PatientID,...)")
    return tuple(resolve_key(c.lstrip("\ufeff")) for c in cells)


def query_from_line(
    line: str,
    line_number: int,
    base: SearchQuery,
    *,
    fmt: str,
    header: tuple[str, ...] = (),
) -> SearchQuery | None:
    """One line of a queries file as ``base`` plus the line's filters; None for a blank line.

    Raises ValueError naming the line number (never its values beyond what it is about).
    """
    text = line.strip()
    if not text:
        return None
    try:
        if fmt == FORMAT_CSV:
            cells = next(csv.reader([text]))
            if len(cells) != len(header):
                raise ValueError(f"{len(cells)} cells where the header has {len(header)}")
            pairs = [(tag, cell) for tag, cell in zip(header, cells, strict=True) if cell.strip()]
            if not pairs:
                return None
        else:
            pairs = _json_filters(text)
        filters = tuple(base.filters) + tuple((t, check_value(v.strip())) for t, v in pairs)
    except ValueError as exc:
        raise ValueError(f"line {line_number}: {exc}") from None
    return dataclasses.replace(base, query_id=line_number, filters=filters)


def _json_filters(text: str) -> list[tuple[str, str]]:
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("not a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    pairs = []
    for key, value in data.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)  # a UID list
        elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"the value of {key!r} is not a string, a number or a list")
        pairs.append((resolve_key(key), str(value)))
    return pairs


# --- matches as text --------------------------------------------------------------------------


def element_text(element: Any) -> str:
    """A DICOM JSON element as one cell: person names by their alphabetic form, several values
    joined with ``\\`` (DICOM's own separator), sequences and binary data left empty."""
    if not isinstance(element, dict) or element.get("vr") == "SQ":
        return ""
    values = element.get("Value")
    if not isinstance(values, list):
        return ""
    cells = []
    for value in values:
        if isinstance(value, dict):  # a person name: {"Alphabetic": ..., "Ideographic": ...}
            value = value.get("Alphabetic") or value.get("Ideographic") or ""
        cells.append("" if value is None else str(value))
    return "\\".join(cells)
