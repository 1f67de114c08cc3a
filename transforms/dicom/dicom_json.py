"""Is this DICOM JSON? pydicom decides; a fast path answers "yes" for the common flat case.

``check(elements)`` raises ``InvalidInputError(not_dicom_json)`` exactly when pydicom's
``Dataset.from_json`` refuses the dataset (or its shape is not DICOM JSON's: keys of 8 hex
digits mapping to objects with a known VR), and returns None otherwise. No Beam here.

pydicom builds a ``DataElement`` per attribute (about 1 ms for a dozen attributes), which is most
of a pair's cost in ``pipelines.store_json_jpeg``. The fast path (``obviously_valid``) only
*accepts*: a dataset whose every element is a plain one it knows pydicom accepts (tested on
pydicom's and pydicom-data's files converted with ``to_json_dict`` and on fuzzed mutations of
them, ``tests/unit/test_dicom_json.py``); anything else (sequences, person names, binary VRs,
BulkDataURI, InlineBinary, AT, UN, private or group-length tags, strings in numeric VRs, values
of an unexpected type) goes to pydicom, which stays the authority.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from typing import Any

from transforms.dead_letter import Reason
from transforms.errors import InvalidInputError

_TAG = re.compile(r"[0-9A-Fa-f]{8}")
VRS = frozenset(
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    "UN UR US UT UV".split()
)
# pydicom keeps these values as given (str) and never refuses a string: the fast path takes
# strings (and nulls) only.
_TEXT_VRS = frozenset("AE AS CS DA DT LO LT SH ST TM UC UI UR UT".split())
# pydicom converts each value with int() (float() for _REAL_VRS) first: Python ints (not bools)
# pass unchanged; numbers given as strings go to pydicom.
_INT_VRS = frozenset("IS SL SS SV UL US UV".split())
_REAL_VRS = frozenset("DS FD FL".split())
_BIG = 1 << 53  # larger ints: float() may overflow, str() may refuse; pydicom decides
_PLAIN_KEYS = frozenset({"vr", "Value"})
_NO_VALUES: list[Any] = []
_MAX_CACHED_TAGS = 4096
MESSAGE = (
    "the metadata is not a valid DICOM JSON dataset ({}; tags must be 8 hex digits with a vr "
    "and a Value list)"
)


def check(elements: Mapping[str, Any]) -> None:
    """None when pydicom accepts ``elements`` as a DICOM JSON dataset, else
    ``InvalidInputError(not_dicom_json)`` (naming the error type, never a value)."""
    if obviously_valid(elements):
        return
    from_json(elements)


def from_json(elements: Mapping[str, Any]) -> Any:
    """pydicom's ``Dataset`` of the elements (pydicom imported on first use), or
    ``InvalidInputError(not_dicom_json)``."""
    try:
        check_shape(elements)
        from pydicom.dataset import Dataset

        with warnings.catch_warnings():
            # pydicom's warnings quote values, which may be patient data.
            warnings.simplefilter("ignore")
            return Dataset.from_json(dict(elements))  # converts every value (pydicom 3)
    except Exception as exc:  # pydicom raises many types; all mean "not DICOM JSON"
        raise InvalidInputError(Reason.NOT_DICOM_JSON, MESSAGE.format(type(exc).__name__)) from None


def check_shape(elements: Any) -> None:
    """What pydicom lets through that is not DICOM JSON: keys that are not 8 hex digits (pydicom
    takes keywords), elements that are not objects, unknown VRs. Raises ValueError."""
    if not isinstance(elements, dict):
        raise ValueError("a dataset must be an object")
    for tag, element in elements.items():
        if not (isinstance(tag, str) and _TAG.fullmatch(tag)) or not isinstance(element, dict):
            raise ValueError("tags must be 8 hex digits mapping to objects")
        if element.get("vr") not in VRS:
            raise ValueError("unknown VR")
        if element["vr"] == "SQ":
            for item in element.get("Value") or []:
                check_shape(item)


def obviously_valid(elements: Any) -> bool:
    """True only for datasets pydicom accepts: every element a public, non-group-length tag
    with a text, integer or real VR and plain values (see the module docstring). False means
    "ask pydicom", not "invalid"."""
    if type(elements) is not dict:
        return False
    for tag, element in elements.items():
        if type(element) is not dict or not _plain_tag(tag):
            return False
        if not element.keys() <= _PLAIN_KEYS:
            return False
        vr = element.get("vr")
        values = element.get("Value", _NO_VALUES)
        if type(vr) is not str or type(values) is not list:
            return False
        if vr in _TEXT_VRS:
            for v in values:
                if v is not None and type(v) is not str:
                    return False
        elif vr in _INT_VRS:
            for v in values:
                if type(v) is not int or not -_BIG < v < _BIG:
                    return False
        elif vr in _REAL_VRS:
            for v in values:
                if type(v) is int:
                    if not -_BIG < v < _BIG:
                        return False
                elif type(v) is not float or not math.isfinite(v):
                    return False
        else:
            return False
    return True


_plain_tags: dict[str, bool] = {}  # a cache: datasets repeat the same few tags


def _plain_tag(tag: object) -> bool:
    """A public tag, neither File Meta, nor an item delimiter, nor a group length."""
    if type(tag) is not str:
        return False
    known = _plain_tags.get(tag)
    if known is not None:
        return known
    plain = bool(_TAG.fullmatch(tag))
    if plain:
        group = int(tag[:4], 16)
        plain = not (group % 2 or group in (0x0002, 0xFFFE) or tag[4:] == "0000")
    if len(_plain_tags) < _MAX_CACHED_TAGS:
        _plain_tags[tag] = plain
    return plain
