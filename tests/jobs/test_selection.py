"""pipelines.selection: the options every selecting job shares, turned into query records."""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.cli import UsageError
from pipelines.selection import selection_from
from transforms.dicomweb.qido import Paging
from transforms.records import SearchQuery


def _select(*argv: str) -> object:
    return selection_from(PipelineOptions(list(argv)))


def test_options_become_one_query_with_id_1() -> None:
    selection = selection_from(
        PipelineOptions(
            [
                "--level", "instance",
                "--study", "1.2.3",
                "--series", "1.2.3.4",
                "--filter", "PatientName=DOE^J*",
                "--filter", "00080020=20200101-20201231",
                "--includefield", "StudyDescription,PatientID",
                "--fuzzymatching",
                "--page_size", "3",
                "--page_end", "empty",
                "--max_limit", "10",
                "--max_offset", "100",
                "--read_ahead", "2",
            ]
        )
    )  # fmt: skip
    assert selection.base == SearchQuery(
        1,
        "instances",
        study="1.2.3",
        series="1.2.3.4",
        filters=(("00100010", "DOE^J*"), ("00080020", "20200101-20201231")),
        includefields=("00081030", "00100020"),
        fuzzy=True,
    )
    assert selection.paging == Paging(3, "empty", 10, 100)
    assert selection.queries_file is None and selection.query_count == 1
    assert selection.read_ahead == 2


def test_defaults_studies_level_and_server_paging() -> None:
    selection = selection_from(PipelineOptions([]))
    assert selection.base == SearchQuery(1, "studies")
    assert selection.paging == Paging()
    assert selection_from(PipelineOptions([]), default_level="series").base.level == "series"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--level", "patients"], "level must be one of"),
        (["--filter", "PatientName"], "KEY=VALUE"),
        (["--filter", "PatientNam=X"], "unknown DICOM attribute"),
        (["--includefield", "Nope"], "unknown DICOM attribute"),
        (["--study", "1.2.abc"], "--study is not made of digits"),
        (["--level", "studies", "--series", "1.2"], "--series"),
        (["--queries", "/nonexistent/q.csv"], "no such file"),
    ],
)
def test_bad_selections_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        selection_from(PipelineOptions(argv))


def test_a_queries_file_is_checked_and_counted_at_launch(tmp_path: Path) -> None:
    good = tmp_path / "q.csv"
    good.write_text("AccessionNumber,PatientID\nA1,\n\n,P2\nA3,P3\n")
    selection = selection_from(PipelineOptions(["--queries", str(good)]))
    assert selection.query_count == 3 and selection.queries_file == str(good)
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("AccessionNumbr\nA1\n")
    with pytest.raises(UsageError, match="AccessionNumbr"):
        selection_from(PipelineOptions(["--queries", str(bad_header)]))
    bad_line = tmp_path / "l.jsonl"
    bad_line.write_text('{"PatientID": "1"}\n{"Nope": "2"}\n')
    with pytest.raises(UsageError, match="line 2: unknown DICOM attribute 'Nope'"):
        selection_from(PipelineOptions(["--queries", str(bad_line)]))
    empty = tmp_path / "e.csv"
    empty.write_text("PatientID\n\n")
    with pytest.raises(UsageError, match="no query"):
        selection_from(PipelineOptions(["--queries", str(empty)]))
