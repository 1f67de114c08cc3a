"""Targets of retrieve and delete: --uids_file lines, levels, DICOM JSON matches."""

from __future__ import annotations

import json

import pytest

from transforms.errors import InvalidInputError
from transforms.targets import (
    INSTANCES,
    SERIES,
    STUDIES,
    Target,
    parse_level,
    parse_target_line,
)

STUDY, SER, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


@pytest.mark.parametrize(
    ("text", "level"),
    [("studies", STUDIES), ("Study", STUDIES), ("series", SERIES), ("instance", INSTANCES)],
)
def test_levels_accept_plural_and_singular(text: str, level: str) -> None:
    assert parse_level(text) == level


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="studies, series, instances"):
        parse_level("patients")


@pytest.mark.parametrize(
    ("line", "target"),
    [
        (STUDY, Target(STUDY)),
        (f"{STUDY}/{SER}", Target(STUDY, SER)),
        (f" {STUDY}/{SER}/{SOP}\n", Target(STUDY, SER, SOP)),
    ],
)
def test_slash_lines(line: str, target: Target) -> None:
    assert parse_target_line(line, 1) == target


@pytest.mark.parametrize("line", ["", "   ", "# a comment"])
def test_blank_and_comment_lines_are_not_targets(line: str) -> None:
    assert parse_target_line(line, 1) is None


def test_search_result_line_is_a_target() -> None:
    match = {
        "query_id": 7,
        "0020000D": {"vr": "UI", "Value": [STUDY]},
        "0020000E": {"vr": "UI", "Value": [SER]},
        "00080018": {"vr": "UI", "Value": [SOP]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "SECRET^NAME"}]},
    }
    assert parse_target_line(json.dumps(match), 3) == Target(STUDY, SER, SOP)
    study_only = {"0020000D": {"vr": "UI", "Value": [STUDY]}}
    assert parse_target_line(json.dumps(study_only), 3) == Target(STUDY)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1.2.abc", "invalid_uid"),
        ("1.2/3.4/5.6/7.8", "unreadable"),
        ("1." + "2" * 70, "invalid_uid"),
        ("{not json", "unreadable"),
        ("[1, 2]", "invalid_uid"),
        ('{"0020000E": {"vr": "UI", "Value": ["1.2"]}}', "missing_uid"),
        (f"{STUDY}//{SOP}", "missing_uid"),
    ],
)
def test_bad_lines_name_the_line_not_the_value(line: str, reason: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_target_line(line, 42)
    assert err.value.reason == reason
    assert err.value.message.startswith("line 42: ")
    assert "abc" not in err.value.message


def test_at_level_cuts_down_and_refuses_to_invent() -> None:
    instance = Target(STUDY, SER, SOP)
    assert instance.at_level(SERIES) == Target(STUDY, SER)
    assert instance.at_level(STUDIES) == Target(STUDY)
    assert instance.level == INSTANCES and instance.key == f"{STUDY}/{SER}/{SOP}"
    with pytest.raises(ValueError):
        Target(STUDY).at_level(SERIES)


def test_instance_needs_series() -> None:
    with pytest.raises(ValueError):
        Target(STUDY, None, SOP)
