"""SearchDicomStore and ReadQueries on a TestPipeline: real Orthanc, and the QIDO stand-in for
failing pages (a failed query leaves one dead letter and none of its matches)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pytest
import requests
import search_data
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from qido_standin import QidoStandin

from pipelines.local_orthanc import LocalOrthanc
from pipelines.summary import counter_values
from transforms import metrics
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.http import RetryPolicy
from transforms.dicomweb.qido import Paging, SearchConfig
from transforms.dicomweb.qido_query import parse_filter
from transforms.records import SearchMatch, SearchQuery
from transforms.search import ReadQueries, SearchDicomStore

FAST_RETRY = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)


def store_corpus(orthanc: LocalOrthanc, corpus: search_data.Corpus) -> None:
    with requests.Session() as s:
        for path in corpus.paths:
            s.post(f"{orthanc.rest_url}/instances", data=path.read_bytes()).raise_for_status()


def _key(match: SearchMatch) -> tuple[int, str]:
    tag = {"studies": "0020000D", "series": "0020000E"}.get(match.level, "00080018")
    return match.query_id, match.dataset[tag]["Value"][0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> search_data.Corpus:
    return search_data.write_corpus(Path(tmp_path_factory.mktemp("corpus")))


def test_many_queries_each_match_carries_its_query_id(
    orthanc: LocalOrthanc, corpus: search_data.Corpus
) -> None:
    store_corpus(orthanc, corpus)
    queries = [
        SearchQuery(1, "studies", filters=(parse_filter("PatientName=DOE^*"),)),
        SearchQuery(2, "series", filters=(parse_filter("Modality=CT"),)),
        SearchQuery(3, "instances", filters=(parse_filter("AccessionNumber=ACC-0002"),)),
        SearchQuery(4, "studies", filters=(parse_filter("PatientID=NOBODY"),)),
    ]
    expected = [(1, u) for u in corpus.uids("studies", lambda d: str(d.PatientName)[:4] == "DOE^")]
    expected += [(2, u) for u in corpus.uids("series", lambda d: d.Modality == "CT")]
    expected += [
        (3, u) for u in corpus.uids("instances", lambda d: d.AccessionNumber == "ACC-0002")
    ]
    config = SearchConfig(DicomwebEndpoint(orthanc.dicomweb_url), Paging(page_size=3))
    p = TestPipeline()
    result = p | beam.Create(queries) | SearchDicomStore(config, max_concurrency=2)
    assert_that(result.matches | beam.Map(_key), equal_to(expected), label="Matches")
    assert_that(result.failed, equal_to([]), label="NoneFailed")
    run = p.run()
    run.wait_until_finish()
    counters = counter_values(run)
    assert counters[metrics.SEARCH_QUERIES] == 4
    assert counters[metrics.SEARCH_MATCHES_PREFIX + "studies"] == 3
    assert counters[metrics.QIDO_PAGES] >= 4 + 2  # every query ends on an empty page here


@pytest.fixture
def standin(corpus: search_data.Corpus) -> Iterator[QidoStandin]:
    with QidoStandin() as server:
        server.add(corpus.json_datasets())
        yield server


def test_a_query_whose_page_keeps_failing_is_one_dead_letter_without_matches(
    standin: QidoStandin, corpus: search_data.Corpus
) -> None:
    # Query 2's second page always fails; its first page had matches, which must not appear.
    standin.caps.fail = lambda path, q: q.get("00080060") == "CT" and q.get("offset") == "2"
    queries = [
        SearchQuery(1, "instances", filters=(parse_filter("Modality=MR"),)),
        SearchQuery(2, "instances", filters=(parse_filter("Modality=CT"),)),
    ]
    config = SearchConfig(DicomwebEndpoint(standin.dicomweb_url), Paging(2), FAST_RETRY)
    p = TestPipeline()
    result = p | beam.Create(queries) | SearchDicomStore(config)
    expected = [(1, u) for u in corpus.uids("instances", lambda d: d.Modality == "MR")]
    assert_that(result.matches | beam.Map(_key), equal_to(expected), label="OnlyQuery1")
    assert_that(
        result.failed | beam.Map(lambda d: (d.source, d.reason, d.http_status, d.attempts)),
        equal_to([("query 2", "retries_exhausted", 503, 2)]),
        label="OneDeadLetter",
    )
    p.run().wait_until_finish()


def test_read_queries_numbers_queries_by_line_and_dead_letters_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"PatientID": "A"}\n\n{"PatientID": "B"}\nnot json\n')
    base = SearchQuery(1, "series", study="1.2.3")
    with TestPipeline() as p:
        read = p | ReadQueries(str(path), base)
        assert_that(
            read.queries,
            equal_to(
                [
                    SearchQuery(1, "series", study="1.2.3", filters=(("00100020", "A"),)),
                    SearchQuery(3, "series", study="1.2.3", filters=(("00100020", "B"),)),
                ]
            ),
            label="Queries",
        )
        assert_that(
            read.failed | beam.Map(lambda d: (d.source, d.reason)),
            equal_to([(f"{path}:4", "bad_query")]),
            label="BadLine",
        )


def test_matches_in_batches_of_one_query(standin: QidoStandin, corpus: search_data.Corpus) -> None:
    queries = [
        SearchQuery(1, "instances", filters=(parse_filter("PatientName=DOE^*"),)),
        SearchQuery(2, "instances", filters=(parse_filter("Modality=SR"),)),
    ]
    config = SearchConfig(DicomwebEndpoint(standin.dicomweb_url), Paging(4), FAST_RETRY)
    with TestPipeline() as p:
        result = p | beam.Create(queries) | SearchDicomStore(config, batch_matches=5)
        sizes = result.matches | beam.Map(lambda b: (b.query_id, len(b.datasets_json)))
        doe = len(corpus.uids("instances", lambda d: str(d.PatientName).startswith("DOE^")))
        sr = len(corpus.uids("instances", lambda d: d.Modality == "SR"))
        assert doe == 12 and sr == 2
        assert_that(sizes, equal_to([(1, 5), (1, 5), (1, 2), (2, 2)]), label="Batches")
        keys = result.matches | beam.FlatMap(lambda b: [_key(m) for m in b.matches()])
        assert_that(keys | beam.combiners.Count.Globally(), equal_to([doe + sr]), label="All")
