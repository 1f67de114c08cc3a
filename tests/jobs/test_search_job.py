"""pipelines.search end to end against a real Orthanc (pages forced small: --page_size 3), the
fault proxy, and the QIDO stand-in with tiny caps. Expected sets come from the datasets."""

from __future__ import annotations

import csv
import fnmatch
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import requests
import search_data
from fault_proxy import FaultPlan, FaultProxy
from qido_standin import QidoStandin

from pipelines import search
from pipelines.local_orthanc import LocalOrthanc
from transforms.targets import parse_target_line

TAG = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}
Where = Callable[[pydicom.Dataset], bool]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> search_data.Corpus:
    return search_data.write_corpus(Path(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def stored(orthanc_server: LocalOrthanc, corpus: search_data.Corpus) -> Iterator[LocalOrthanc]:
    """Orthanc holding the corpus, stored once for the module (the tests only read)."""
    orthanc_server.delete_all()
    with requests.Session() as s:
        for path in corpus.paths:
            r = s.post(f"{orthanc_server.rest_url}/instances", data=path.read_bytes())
            r.raise_for_status()
    yield orthanc_server
    orthanc_server.delete_all()


def _rows(prefix: Path, name: str = "results") -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in sorted(prefix.glob(f"{name}-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def _by_query(rows: list[dict[str, object]], level: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    for row in rows:
        found[int(row["query_id"])].append(row[TAG[level]]["Value"][0])  # type: ignore[index, call-overload]
    return {k: sorted(v) for k, v in found.items()}


def _run(url: str, out: Path, *extra: str) -> int:
    return search.main(["--dicomweb_url", url, "--output", str(out), *extra])


def _write_jsonl(path: Path, lines: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _name(ds: pydicom.Dataset) -> str:
    return search_data.value(ds, "PatientName")


def _date_in(low: str, high: str) -> Where:
    return lambda ds: low <= search_data.value(ds, "StudyDate") <= high


@pytest.mark.parametrize("level", ["studies", "series", "instances"])
def test_every_filter_kind_returns_the_exact_expected_set(
    stored: LocalOrthanc, corpus: search_data.Corpus, tmp_path: Path, level: str
) -> None:
    two_studies = sorted(corpus.uids("studies"))[:2]
    queries: list[tuple[dict[str, object], Where]] = [
        ({"PatientName": "DOE^JOHN"}, lambda ds: _name(ds) == "DOE^JOHN"),
        ({"PatientName": "DOE^J*"}, lambda ds: _name(ds).startswith("DOE^J")),
        ({"PatientName": "DOE^J?HN"}, lambda ds: _name(ds) == "DOE^JOHN"),
        ({"PatientName": "Last^First^mid^pre"}, lambda ds: _name(ds) == "Last^First^mid^pre"),
        ({"StudyDate": "20200101-20211231"}, _date_in("20200101", "20211231")),
        ({"StudyInstanceUID": two_studies}, lambda ds: ds.StudyInstanceUID in two_studies),
        ({"AccessionNumber": "ACC-0004"}, lambda ds: ds.get("AccessionNumber") == "ACC-0004"),
        ({"PatientID": "NOBODY"}, lambda ds: False),
    ]
    if level != "studies":
        queries.append(({"Modality": "MR"}, lambda ds: ds.Modality == "MR"))
    path = _write_jsonl(tmp_path / "q.jsonl", [q for q, _ in queries])
    out = tmp_path / "out"
    argv = ["--level", level, "--queries", str(path), "--page_size", "3"]
    code = _run(stored.dicomweb_url, out, *argv, "--includefield", "StudyDescription")
    assert code == search.EXIT_OK
    rows = _rows(out)
    found = _by_query(rows, level)
    for line, (_, where) in enumerate(queries, 1):
        expected = sorted(corpus.uids(level, where))
        assert found.get(line, []) == expected, queries[line - 1][0]
    assert found[1] and found[2] and found[5]  # the test data really exercises the filters
    generated = [r for r in rows if "DOE^" in str(r.get("00100010"))]
    assert generated and all("00081030" in r for r in generated)  # the includefield asked
    assert _rows(out, "dead_letter") == []


def test_study_and_series_scopes(
    stored: LocalOrthanc, corpus: search_data.Corpus, tmp_path: Path
) -> None:
    (study,) = corpus.uids("studies", lambda ds: _name(ds) == "DOE^JOHN")
    mr_series = sorted(
        corpus.uids("series", lambda ds: _name(ds) == "DOE^JOHN" and ds.Modality == "MR")
    )
    in_study: Where = lambda ds: ds.StudyInstanceUID == study  # noqa: E731
    url = stored.dicomweb_url
    # Series of one study, with a filter from the options (query id 1).
    argv = ["--level", "series", "--study", study, "--filter", "Modality=CT", "--page_size", "3"]
    assert _run(url, tmp_path / "a", *argv) == 0
    expected = corpus.uids("series", lambda ds: in_study(ds) and ds.Modality == "CT")
    assert _by_query(_rows(tmp_path / "a"), "series") == {1: sorted(expected)}
    # Instances of one series, with and without its study in the path.
    for name, scope in (
        ("b", ["--study", study, "--series", mr_series[0]]),
        ("c", ["--series", mr_series[0]]),
    ):
        argv = ["--level", "instance", *scope, "--page_size", "3"]
        assert _run(url, tmp_path / name, *argv) == 0
        expected = corpus.uids("instances", lambda ds: ds.SeriesInstanceUID == mr_series[0])
        assert _by_query(_rows(tmp_path / name), "instances") == {1: sorted(expected)}
    # Result lines are --uids_file lines for the jobs that act on a selection.
    for number, line in enumerate((tmp_path / "b").glob("results-*.jsonl").__next__().open(), 1):
        target = parse_target_line(line, number)
        assert target is not None and target.level == "instances" and target.series == mr_series[0]
    # Instances of one study.
    assert (
        _run(url, tmp_path / "d", "--level", "instances", "--study", study, "--page_size", "3") == 0
    )
    assert _by_query(_rows(tmp_path / "d"), "instances") == {
        1: sorted(corpus.uids("instances", in_study))
    }


def test_hundreds_of_queries_from_a_csv_file_with_a_csv_output(
    stored: LocalOrthanc,
    corpus: search_data.Corpus,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "accessions.csv"
    lines = ["AccessionNumber,PatientName"]
    expect: dict[int, set[str]] = {}
    for i in range(300):
        if i % 50 == 7:  # some match many: every DOE, whatever the accession
            lines.append(",DOE^*")
            where: Where = lambda ds: _name(ds).startswith("DOE^")  # noqa: E731
        elif i % 3 == 0:  # some match one study
            accession = f"ACC-000{i % 5 + 1}"
            lines.append(f"{accession},")
            where = lambda ds, a=accession: ds.get("AccessionNumber") == a  # type: ignore[misc]  # noqa: E731
        else:  # most match nothing
            lines.append(f"ACC-{i:04d}-X,")
            where = lambda ds: False  # noqa: E731
        expect[i + 2] = corpus.uids("studies", where)  # line 1 is the header
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = ["--queries", str(path), "--page_size", "3", "--csv", "AccessionNumber,PatientName"]
    assert _run(stored.dicomweb_url, out, *argv) == search.EXIT_OK
    found = _by_query(_rows(out), "studies")
    assert {k: v for k, v in found.items()} == {k: sorted(v) for k, v in expect.items() if v}
    summary = capsys.readouterr().out
    assert "queries                 300  (300 answered completely)" in summary
    assert f"matches          {sum(len(v) for v in expect.values()):>10,}" in summary
    (csv_path,) = out.glob("results-*.csv")
    with open(csv_path, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["query_id", "AccessionNumber", "PatientName"]
    assert len(table) - 1 == len(_rows(out))
    assert ["9", "ACC-0005", "DOE^JOHNNY"] in table[1:]  # line 9 (i=7) matched every DOE


def test_a_page_failing_mid_search_drops_the_whole_query(
    stored: LocalOrthanc,
    corpus: search_data.Corpus,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = ["DOE^*", "*", "SMITH*", "MILLER*", "*^*", "NOBODY", "D*", "*A*"] * 3
    path = _write_jsonl(tmp_path / "q.jsonl", [{"PatientName": n} for n in names])
    argv = ["--level", "instances", "--queries", str(path), "--page_size", "3", "--no_preflight"]
    plan = FaultPlan(p_503=0.25, seed=5, methods=frozenset({"GET"}))
    with FaultProxy(stored.dicomweb_url, plan) as proxy:
        # No retry: pages fail for good, some after earlier pages of their query succeeded.
        code = _run(proxy.base_url, tmp_path / "once", *argv, "--max_attempts", "1")
    assert code == search.EXIT_DEAD_LETTERS and proxy.counts["503"] > 0
    letters = _rows(tmp_path / "once", "dead_letter")
    failed = {int(str(d["source"]).removeprefix("query ")) for d in letters}
    assert {d["reason"] for d in letters} == {"retries_exhausted"}
    assert all(d["http_status"] == 503 and d["stage"] == "search" for d in letters)
    found = _by_query(_rows(tmp_path / "once"), "instances")
    assert failed and not failed & set(found)  # no match of a failed query is written
    summary = capsys.readouterr().out
    assert f"failed queries   {len(failed):>10,}" in summary
    assert f"    retries_exhausted     {len(failed):>8,}" in summary
    for line, pattern in enumerate(names, 1):
        if line not in failed:  # every other query is complete
            expected = corpus.uids("instances", lambda ds, p=pattern: _glob(p, _name(ds)))
            assert found.get(line, []) == sorted(expected), pattern
    with FaultProxy(stored.dicomweb_url, plan) as proxy:  # with retries, all complete
        code = _run(proxy.base_url, tmp_path / "retried", *argv, "--max_attempts", "10")
    assert code == search.EXIT_OK and proxy.counts["503"] > 0
    found = _by_query(_rows(tmp_path / "retried"), "instances")
    assert len(found) == len([n for n in names if n != "NOBODY"])


def _glob(pattern: str, text: str) -> bool:
    # Orthanc matches person names case-insensitively (its CaseSensitivePN is off by default).
    return bool(text) and fnmatch.fnmatchcase(text.upper(), pattern.upper())


def test_google_caps_split_queries_and_every_match_comes_once(
    corpus: search_data.Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with QidoStandin() as standin:
        standin.add(corpus.json_datasets())
        standin.caps.max_limit, standin.caps.max_offset = 2, 10
        argv = ["--level", "instances", "--page_end", "short", "--page_size", "50"]
        argv += ["--max_limit", "2", "--max_offset", "10", "--max_attempts", "1"]
        code = _run(standin.dicomweb_url, tmp_path / "out", *argv)
        assert code == search.EXIT_OK
        assert all("limit=2&" in r for r in standin.requests if "offset=" in r)
    rows = _rows(tmp_path / "out")
    uids = [str(r[TAG["instances"]]["Value"][0]) for r in rows]  # type: ignore[index]
    assert sorted(uids) == sorted(corpus.uids("instances"))  # each exactly once
    summary = capsys.readouterr().out
    assert "searches split past a cap" in summary and "(0 searches split" not in summary


def test_too_many_matches_is_one_dead_letter(corpus: search_data.Corpus, tmp_path: Path) -> None:
    with QidoStandin() as standin:
        standin.add(corpus.json_datasets())
        argv = [
            "--level",
            "studies",
            "--max_limit",
            "2",
            "--max_offset",
            "2",
            "--page_end",
            "short",
        ]
        code = _run(standin.dicomweb_url, tmp_path / "out", *argv)
    assert code == search.EXIT_DEAD_LETTERS
    assert _rows(tmp_path / "out") == []
    (letter,) = _rows(tmp_path / "out", "dead_letter")
    assert letter["reason"] == "too_many_matches" and letter["source"] == "query 1"


def test_a_rerun_into_the_same_output_replaces_its_files(
    corpus: search_data.Corpus, tmp_path: Path
) -> None:
    """The second run's files are its own: no line of an earlier run lingers."""
    out = tmp_path / "out"
    capped = ["--max_limit", "2", "--max_offset", "2", "--page_end", "short"]
    with QidoStandin() as standin:
        standin.add(corpus.json_datasets())
        assert _run(standin.dicomweb_url, out, "--level", "studies", *capped) == (
            search.EXIT_DEAD_LETTERS
        )
        assert [d["reason"] for d in _rows(out, "dead_letter")] == ["too_many_matches"]
        # And shards of a run with other shard counts (as a Dataflow run writes them).
        for stale in ("results-00001-of-00002.jsonl", "dead_letter-00002-of-00003.jsonl"):
            (out / stale).write_text('{"stale": true}\n')
        argv = ["--level", "studies", "--page_end", "short", "--csv", "PatientName"]
        assert _run(standin.dicomweb_url, out, *argv) == search.EXIT_OK
    assert _rows(out, "dead_letter") == []
    assert len(_rows(out)) == len(corpus.uids("studies"))
    (csv_path,) = out.glob("results-*.csv")
    with open(csv_path, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["query_id", "PatientName"] and len(table) - 1 == len(_rows(out))


def test_a_value_with_a_space_matches_nothing_on_orthanc_a_wildcard_does(
    stored: LocalOrthanc, corpus: search_data.Corpus, tmp_path: Path
) -> None:
    """Orthanc 1.10 cannot match a value containing a space (README says so)."""
    url = stored.dicomweb_url
    assert _run(url, tmp_path / "a", "--filter", "PatientName=Last Name^First Name") == 0
    assert _rows(tmp_path / "a") == []
    assert _run(url, tmp_path / "b", "--filter", "PatientName=Last?Name^First?Name") == 0
    expected = corpus.uids("studies", lambda ds: _name(ds) == "Last Name^First Name")
    assert _by_query(_rows(tmp_path / "b"), "studies") == {1: sorted(expected)}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--level", "patients"], "level must be one of"),
        (["--filter", "PatientName"], "KEY=VALUE"),
        (["--filter", "PatientNme=X"], "unknown DICOM attribute 'PatientNme'"),
        (["--queries", "/nonexistent/q.csv"], "no such file"),
        (["--csv", "Nope"], "--csv: unknown"),
        (["--page_end", "sometimes"], "bad command line"),
        (["--levle", "studies"], "did you mean --level"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = _run("http://127.0.0.1:9/dicom-web", tmp_path / "o", *argv)
    assert code == search.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_output_is_required_and_an_unreachable_store_fails_preflight(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert search.main(["--dicomweb_url", "http://127.0.0.1:9/dw"]) == search.EXIT_USAGE
    assert "--output is required" in capsys.readouterr().err
    code = _run("http://127.0.0.1:9/dicom-web", tmp_path / "o", "--max_attempts", "1")
    assert code == search.EXIT_USAGE
    assert "does not answer" in capsys.readouterr().err
