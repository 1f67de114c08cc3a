"""QIDO queries without HTTP: keywords, value encoding, URLs, splitting, queries-file lines."""

from __future__ import annotations

import json

import pytest

from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.qido_query import (
    ENCODING_FULL,
    FORMAT_CSV,
    FORMAT_JSONL,
    child_query,
    describe,
    encode_value,
    parent_query,
    parse_csv_header,
    parse_date_range,
    parse_filter,
    parse_includefields,
    queries_format,
    query_from_line,
    query_string,
    resolve_key,
    search_url,
    split_date_range,
)
from transforms.records import SearchMatch, SearchQuery

EP = DicomwebEndpoint("http://h:8042/dicom-web")
S, SE = "1.2.3", "1.2.3.4"


def test_keywords_and_tags_resolve_to_upper_case_tags() -> None:
    assert resolve_key("PatientName") == "00100010"
    assert resolve_key(" StudyInstanceUID ") == "0020000D"
    assert resolve_key("0020000d") == "0020000D"
    with pytest.raises(ValueError, match="unknown DICOM attribute 'PatientNam'"):
        resolve_key("PatientNam")
    with pytest.raises(ValueError, match="unknown"):
        resolve_key("0010001")  # seven digits: neither a tag nor a keyword


def test_filters_need_an_equals_sign_and_a_known_key() -> None:
    assert parse_filter("PatientName=DOE^J*") == ("00100010", "DOE^J*")
    assert parse_filter("AccessionNumber=A=B") == ("00080050", "A=B")  # first = splits
    assert parse_filter("StudyDate=") == ("00080020", "")
    for bad in ("PatientName", "=x", "Nope=1"):
        with pytest.raises(ValueError):
            parse_filter(bad)
    with pytest.raises(ValueError, match="control"):
        parse_filter("PatientID=a\nb")


def test_includefields_repeatable_comma_separated_or_all() -> None:
    assert parse_includefields(["StudyDescription", "00100020,Modality"]) == (
        "00081030",
        "00100020",
        "00080060",
    )
    assert parse_includefields(["PatientID", "ALL"]) == ("all",)
    assert parse_includefields(["PatientID,PatientID"]) == ("00100020",)


@pytest.mark.parametrize(
    "value, minimal, full",
    [
        ("DOE^J*", "DOE^J*", "DOE%5EJ%2A"),
        ("a,b-c.d?", "a,b-c.d?", "a%2Cb-c.d%3F"),
        ('a b"#<>%&=+', "a%20b%22%23%3C%3E%25%26%3D%2B", "a%20b%22%23%3C%3E%25%26%3D%2B"),
        ("Zoë", "Zo%C3%AB", "Zo%C3%AB"),
    ],
)
def test_values_are_encoded_minimally_or_fully(value: str, minimal: str, full: str) -> None:
    assert encode_value(value) == minimal
    assert encode_value(value, ENCODING_FULL) == full


def test_query_string_carries_scope_filters_includefields_and_fuzzy() -> None:
    query = SearchQuery(
        1,
        "studies",
        study=S,
        filters=(("00100010", "DOE^J*"), ("00080020", "20200101-20201231")),
        includefields=("00081030",),
        fuzzy=True,
    )
    assert query_string(query) == (
        "0020000D=1.2.3&00100010=DOE^J*&00080020=20200101-20201231"
        "&includefield=00081030&fuzzymatching=true"
    )
    assert query_string(SearchQuery(1, "instances")) == ""


@pytest.mark.parametrize(
    "level, study, series, url, scope_in_query",
    [
        ("studies", None, None, "/studies", ""),
        ("studies", S, None, "/studies", "0020000D=1.2.3"),
        ("series", None, None, "/series", ""),
        ("series", S, None, f"/studies/{S}/series", ""),
        ("series", S, SE, f"/studies/{S}/series", "0020000E=1.2.3.4"),
        ("series", None, SE, "/series", "0020000E=1.2.3.4"),
        ("instances", None, None, "/instances", ""),
        ("instances", S, None, f"/studies/{S}/instances", ""),
        ("instances", S, SE, f"/studies/{S}/series/{SE}/instances", ""),
        ("instances", None, SE, "/instances", "0020000E=1.2.3.4"),
    ],
)
def test_every_level_and_scope_has_its_resource(
    level: str, study: str | None, series: str | None, url: str, scope_in_query: str
) -> None:
    query = SearchQuery(1, level, study=study, series=series)
    assert search_url(EP, query) == EP.base_url + url
    assert query_string(query) == scope_in_query


def test_a_series_scope_at_study_level_and_a_bad_level_are_refused() -> None:
    with pytest.raises(ValueError, match="--series"):
        SearchQuery(1, "studies", series=SE)
    with pytest.raises(ValueError, match="level"):
        SearchQuery(1, "patients")


def test_description_names_keywords_and_the_values_as_typed() -> None:
    query = SearchQuery(7, "series", study=S, filters=(("00080060", "CT"),), fuzzy=True)
    assert describe(query) == "series study=1.2.3 Modality=CT fuzzy"


def test_date_ranges_halve_without_gap_or_overlap() -> None:
    assert parse_date_range("20200101-20201231") is not None
    assert parse_date_range("20200101") is None
    assert parse_date_range("2020-01-01") is None
    assert parse_date_range("20201231-20200101") is None
    query = SearchQuery(
        1, "studies", filters=(("00100010", "X"), ("00080020", "20200101-20200104"))
    )
    halves = split_date_range(query)
    assert halves is not None
    assert [dict(h.filters)["00080020"] for h in halves] == [
        "20200101-20200102",
        "20200103-20200104",
    ]
    assert all(dict(h.filters)["00100010"] == "X" for h in halves)
    open_ended = split_date_range(SearchQuery(1, "studies", filters=(("00080020", "20200101-"),)))
    assert open_ended is not None and dict(open_ended[1].filters)["00080020"].endswith("-99991231")
    one_day = SearchQuery(1, "studies", filters=(("00080020", "20200101-20200101"),))
    assert split_date_range(one_day) is None
    assert split_date_range(SearchQuery(1, "studies")) is None


def test_capped_queries_descend_to_studies_then_series() -> None:
    filters = (("00100010", "DOE*"), ("00080060", "CT"), ("00080018", "1.9"))
    store_wide = SearchQuery(3, "instances", filters=filters, includefields=("00081030",))
    parent = parent_query(store_wide)
    assert parent is not None and parent.level == "studies" and parent.study is None
    assert parent.filters == (("00100010", "DOE*"),)  # study-level keys only
    per_study = child_query(store_wide, "studies", S)
    assert per_study.study == S and per_study.filters == filters
    series_parent = parent_query(per_study)
    assert series_parent is not None and series_parent.level == "series"
    assert series_parent.filters == (("00100010", "DOE*"), ("00080060", "CT"))
    assert child_query(per_study, "series", SE).series == SE
    assert parent_query(child_query(per_study, "series", SE)) is None
    assert parent_query(SearchQuery(1, "studies")) is None
    assert parent_query(SearchQuery(1, "series", study=S)) is None


def test_queries_files_are_csv_or_jsonl() -> None:
    assert queries_format("q.csv", "{") == FORMAT_CSV
    assert queries_format("q.jsonl", "a,b") == FORMAT_JSONL
    assert queries_format("gs://b/q", '{"PatientID": "1"}') == FORMAT_JSONL
    assert queries_format("q.txt", "PatientID") == FORMAT_CSV
    assert parse_csv_header("\ufeffAccessionNumber,00100020") == ("00080050", "00100020")
    with pytest.raises(ValueError, match="unknown DICOM attribute 'Acession'"):
        parse_csv_header("Acession")


def test_a_csv_line_adds_its_non_empty_cells_to_the_base_query() -> None:
    base = SearchQuery(1, "instances", study=S, filters=(("00080060", "CT"),), fuzzy=True)
    header = ("00080050", "00100020")
    query = query_from_line('"A,1",\n', 12, base, fmt=FORMAT_CSV, header=header)
    assert query is not None
    assert query.query_id == 12 and query.study == S and query.fuzzy
    assert query.filters == (("00080060", "CT"), ("00080050", "A,1"))
    assert query_from_line("  \n", 13, base, fmt=FORMAT_CSV, header=header) is None
    assert query_from_line(",\n", 14, base, fmt=FORMAT_CSV, header=header) is None
    with pytest.raises(ValueError, match="line 15: 3 cells"):
        query_from_line("a,b,c", 15, base, fmt=FORMAT_CSV, header=header)


def test_a_jsonl_line_is_an_object_of_filters() -> None:
    base = SearchQuery(1, "studies")
    line = json.dumps({"PatientID": "P1", "StudyInstanceUID": ["1.2", "1.3"], "00080050": 42})
    query = query_from_line(line, 3, base, fmt=FORMAT_JSONL)
    assert query is not None and query.query_id == 3
    assert query.filters == (("00100020", "P1"), ("0020000D", "1.2,1.3"), ("00080050", "42"))
    for bad, message in (("[1]", "not a JSON object"), ('{"Nope": 1}', "unknown"), ("{", "JSON")):
        with pytest.raises(ValueError, match=f"line 4: .*{message}"):
            query_from_line(bad, 4, base, fmt=FORMAT_JSONL)
    with pytest.raises(ValueError, match="not a string"):
        query_from_line('{"PatientID": {"a": 1}}', 5, base, fmt=FORMAT_JSONL)


def test_a_match_is_written_as_its_dataset_plus_the_query_id() -> None:
    dataset = {"0020000D": {"vr": "UI", "Value": ["1.2"]}}
    match = SearchMatch(4, "studies", json.dumps(dataset))
    assert json.loads(match.to_json()) == {**dataset, "query_id": 4}
    assert match.dataset == dataset
    assert json.loads(SearchMatch(1, "studies", "{}").to_json()) == {"query_id": 1}
