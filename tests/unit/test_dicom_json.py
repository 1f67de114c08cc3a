"""The DICOM JSON check: its fast path accepts only what pydicom accepts, and the check as a whole
accepts and refuses exactly what pydicom's ``Dataset.from_json`` (after the shape check) does,
on real datasets (pydicom's and pydicom-data's files through ``to_json_dict``) and on fuzzed
mutations of them."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests import factory
from transforms.dicom import dicom_json
from transforms.errors import InvalidInputError

MAX_FILE_BYTES = 600_000
MUTATIONS_PER_DATASET = 16
FUZZ_ELEMENTS = 24  # of each dataset, for speed: the mutations act on one element at a time
_WEIRD_VALUES: list[Any] = [
    "ABC", "", " 12 ", "12", "-7", "1.5", "1e3", "x" * 80, "a\\b", "é漢", "\x00", "nan",
    "١٢", 0, 5, -3, 70000, 2**40, 2**60, 2**70, 1.5, -0.0, 1e300, float("inf"),
    float("nan"), True, False, None, [1], [], {}, {"Alphabetic": "A^B"}, {"a": 1},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A"}]}},
]  # fmt: skip
_VRS = sorted(dicom_json.VRS)


def _pydicom_verdict(elements: Any) -> str:
    """What the check must say: pydicom's verdict after the shape check (the authority)."""
    try:
        dicom_json.check_shape(elements)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Dataset.from_json(elements)
    except Exception:
        return "refused"
    return "accepted"


def _check_verdict(elements: Any) -> str:
    try:
        dicom_json.check(elements)
    except InvalidInputError as exc:
        assert exc.reason == "not_dicom_json"
        return "refused"
    return "accepted"


def _corpus() -> list[dict[str, Any]]:
    folders = [factory.pydicom_test_files_dir(), factory.pydicom_data_dir()]
    paths = sorted(
        p
        for folder in folders
        if folder is not None
        for p in Path(folder).rglob("*")
        if p.is_file() and p.stat().st_size < MAX_FILE_BYTES
    )
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                data = ds.to_json_dict(bulk_data_threshold=1 << 30)
            except Exception:
                continue  # not a DICOM file, or one pydicom cannot write as JSON
            if data:
                out.append(data)
    return out


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, Any]]:
    datasets = _corpus()
    assert len(datasets) >= 50
    return datasets


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """The dataset's elements the fast path may decide on (so the corpus exercises it)."""
    return {
        tag: element for tag, element in data.items() if dicom_json.obviously_valid({tag: element})
    }


def _mutate(data: dict[str, Any], rng: random.Random) -> Any:
    out = json.loads(json.dumps(data))  # a deep copy, much faster than copy.deepcopy
    if not out:
        return out
    tag = rng.choice(sorted(out))
    element = out[tag]
    if not isinstance(element, dict):  # an earlier mutation made it a scalar
        element = out[tag] = {"vr": "LO"}
    kind = rng.randrange(12)
    if kind == 0:
        element["Value"] = [rng.choice(_WEIRD_VALUES)]
    elif kind == 1:
        element["Value"] = [rng.choice(_WEIRD_VALUES), rng.choice(_WEIRD_VALUES)]
    elif kind == 2:
        element["vr"] = rng.choice(_VRS)
    elif kind == 3:
        element["Value"] = rng.choice(_WEIRD_VALUES)  # not a list
    elif kind == 4:
        element.pop("vr", None)
    elif kind == 5:
        element[rng.choice(["BulkDataURI", "InlineBinary", "value", "Value"])] = rng.choice(
            ["x", "AAAA", "!!", ["AAAA"], 3, None]
        )
    elif kind == 6:
        out[rng.choice(["0010001G", "PatientName", "0010 0010", "00100010 "])] = element
    elif kind == 7:
        out[tag.lower()] = out.pop(tag)
    elif kind == 8:
        out[rng.choice(["00091010", "00090010", "00100000", "FFFEE000", "60000010"])] = element
    elif kind == 9:
        out[tag] = rng.choice(_WEIRD_VALUES)  # the element is not an object
    elif kind == 10:
        element["vr"] = rng.choice(["", "XX", "us", None, 5, ["LO"], {"vr": "LO"}])
    else:
        element.pop("Value", None)
    return out


def test_real_datasets_get_pydicoms_verdict(corpus: list[dict[str, Any]]) -> None:
    fast = 0
    for data in corpus:
        for candidate in (data, _plain(data)):
            assert _check_verdict(candidate) == _pydicom_verdict(candidate)
            fast += dicom_json.obviously_valid(candidate)
    assert fast >= len(corpus)  # the plain parts at least take the fast path


def test_fuzzed_datasets_get_pydicoms_verdict(corpus: list[dict[str, Any]]) -> None:
    rng = random.Random(8)
    seen = {"accepted": 0, "refused": 0, "fast": 0}
    for data in corpus:
        small = dict(sorted(data.items())[:: max(len(data) // FUZZ_ELEMENTS, 1)])
        for base in (_plain(small), small):
            candidate: Any = base
            for _ in range(MUTATIONS_PER_DATASET // 2):
                candidate = _mutate(base if rng.random() < 0.5 else candidate, rng)
                expected = _pydicom_verdict(candidate)
                assert _check_verdict(candidate) == expected, candidate
                if dicom_json.obviously_valid(candidate):
                    assert expected == "accepted", candidate
                    seen["fast"] += 1
                seen[expected] += 1
    # The fuzzing reached both verdicts and the fast path, many times each.
    assert min(seen.values()) >= 200, seen


@pytest.mark.parametrize(
    "elements",
    [
        {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B"}]}},  # PN: pydicom decides
        {"00080016": {"vr": "UI", "Value": ["1.2.3"]}, "00091010": {"vr": "LO", "Value": ["x"]}},
        {"00200013": {"vr": "IS", "Value": ["12"]}},  # a number as a string
        {"00280010": {"vr": "US", "Value": [True]}},
        {"00280030": {"vr": "DS", "Value": [float("nan")]}},
        {"00081115": {"vr": "SQ", "Value": [{}]}},
        {"00080060": {"vr": "CS", "Value": ["OT"], "BulkDataURI": "x"}},
        "not an object",
    ],
)
def test_unusual_datasets_are_left_to_pydicom(elements: Any) -> None:
    assert not dicom_json.obviously_valid(elements)
    assert _check_verdict(elements) == _pydicom_verdict(elements)


def test_the_common_flat_case_takes_the_fast_path() -> None:
    elements = {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
        "00080060": {"vr": "CS", "Value": ["XC"]},
        "00100020": {"vr": "LO", "Value": ["ID-1"]},
        "00200013": {"vr": "IS", "Value": [3]},
        "00280030": {"vr": "DS", "Value": [0.5, 0.5]},
        "00080020": {"vr": "DA"},
        "00081030": {"vr": "LO", "Value": [None]},
    }
    assert dicom_json.obviously_valid(elements)
    dicom_json.check(elements)


def test_a_refusal_names_the_error_type_not_the_value() -> None:
    with pytest.raises(InvalidInputError) as caught:
        dicom_json.check({"00200013": {"vr": "IS", "Value": ["SECRET-VALUE"]}})
    assert caught.value.reason == "not_dicom_json"
    assert "SECRET" not in caught.value.message
