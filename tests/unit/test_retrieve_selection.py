"""Selection lines of the retrieve job and QIDO expansion URLs (pure functions)."""

from __future__ import annotations

import json

import pytest

from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.wado import WadoConfig
from transforms.dicomweb.wado_files import ManifestEntry
from transforms.errors import InvalidInputError
from transforms.retrieve import expansion_url, parse_selection_line, unit_of
from transforms.targets import Target

ENDPOINT = DicomwebEndpoint("http://h/dicom-web")


def test_store_records_and_manifest_lines_carry_sizes() -> None:
    record = {"source": "/x.dcm", "study_uid": "1.2", "series_uid": "1.3", "sop_uid": "1.4"}
    assert parse_selection_line(json.dumps({**record, "bytes": 10}), 1) == (
        Target("1.2", "1.3", "1.4"),
        ManifestEntry(10, None),
    )
    line = json.dumps({**record, "bytes": 10, "sha256": "ab" * 32})
    assert parse_selection_line(line, 1) == (
        Target("1.2", "1.3", "1.4"),
        ManifestEntry(10, "ab" * 32),
    )
    series_doc = {"study_uid": "1.2", "series_uid": "1.3", "sop_uid": None, "bytes": 5}
    assert parse_selection_line(json.dumps(series_doc), 1) == (Target("1.2", "1.3"), None)
    assert parse_selection_line("1.2/1.3", 1) == (Target("1.2", "1.3"), None)
    assert parse_selection_line("# comment", 1) is None
    with pytest.raises(InvalidInputError, match="line 7"):
        parse_selection_line(json.dumps({**record, "sop_uid": "1.x"}), 7)


def test_expansion_urls_by_unit_level() -> None:
    instance = WadoConfig(ENDPOINT)
    series = WadoConfig(ENDPOINT, granularity="series")
    assert (
        expansion_url(instance, Target("1.2"), "instances")
        == "http://h/dicom-web/studies/1.2/instances"
    )
    assert expansion_url(series, Target("1.2"), "series") == "http://h/dicom-web/studies/1.2/series"
    assert (
        expansion_url(instance, Target("1.2", "1.3"), "instances")
        == "http://h/dicom-web/studies/1.2/series/1.3/instances"
    )
    # A target as fine as the unit, or finer, is retrieved as it is.
    assert expansion_url(series, Target("1.2", "1.3", "1.4"), "series") is None
    assert expansion_url(instance, Target("1.2", "1.3", "1.4"), "instances") is None


def test_units_of_qido_rows_fill_the_study_a_server_left_out() -> None:
    row = {"0020000E": {"vr": "UI", "Value": ["1.3"]}, "00080018": {"vr": "UI", "Value": ["1.4"]}}
    assert unit_of(row, Target("1.2"), "instances") == Target("1.2", "1.3", "1.4")
    assert unit_of(row, Target("1.2"), "series") == Target("1.2", "1.3")
    with pytest.raises(InvalidInputError):
        unit_of({}, Target("1.2"), "series")
