"""Paging to completion: the pure page-end and cap rules, then the pager and the splitting
against the QIDO stand-in (Google's caps, shrunk), which is what no real server here has."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import search_data
from fake_clock import FakeClock
from qido_standin import QidoStandin

from transforms.dicomweb.auth import AuthConfig, make_session
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.http import RetryPolicy
from transforms.dicomweb.qido import (
    PAGE_END_EMPTY,
    PAGE_END_SHORT,
    Paging,
    SearchConfig,
    SearchStats,
    SpoolSink,
    TooManyMatches,
    iter_qido,
    offset_allowed,
    page_end_rule,
    page_is_last,
    run_search,
)
from transforms.dicomweb.qido_query import ENCODING_FULL, parse_filter
from transforms.errors import HttpError
from transforms.records import SearchQuery

GOOGLE = DicomwebEndpoint.for_google_store("p", "l", "d", "s")
OTHER = DicomwebEndpoint("http://127.0.0.1:8042/dicom-web")
POLICY = RetryPolicy(max_attempts=3)


@pytest.mark.parametrize(
    "rows, limit, rule, last",
    [
        (0, 10, PAGE_END_SHORT, True),
        (0, 10, PAGE_END_EMPTY, True),
        (3, 10, PAGE_END_SHORT, True),
        (3, 10, PAGE_END_EMPTY, False),  # a server may cap pages below the limit
        (10, 10, PAGE_END_SHORT, False),
        (12, 10, PAGE_END_SHORT, False),  # more than asked: not the end either
    ],
)
def test_page_end_rule(rows: int, limit: int, rule: str, last: bool) -> None:
    assert page_is_last(rows, limit, rule) is last


def test_short_pages_end_searches_only_where_the_limit_is_known_to_be_honoured() -> None:
    assert page_end_rule(GOOGLE) == PAGE_END_SHORT
    assert page_end_rule(OTHER) == PAGE_END_EMPTY
    assert page_end_rule(OTHER, "short") == PAGE_END_SHORT
    with pytest.raises(ValueError):
        page_end_rule(OTHER, "never")


def test_limits_and_offset_caps_default_to_googles_on_google_only() -> None:
    paging = Paging()
    assert paging.limit(GOOGLE, "studies") == 100 and paging.limit(GOOGLE, "instances") == 1000
    assert Paging(page_size=99_999).limit(GOOGLE, "studies") == 5000
    assert Paging(page_size=99_999).limit(GOOGLE, "instances") == 50_000
    assert Paging(page_size=99_999).limit(OTHER, "studies") == 99_999
    assert Paging(page_size=50, max_limit=7).limit(OTHER, "series") == 7
    assert paging.offset_cap(GOOGLE) == 1_000_000 and paging.offset_cap(OTHER) is None
    assert Paging(max_offset=5).offset_cap(OTHER) == 5
    assert offset_allowed(1_000_000, 1_000_000) and not offset_allowed(1_000_001, 1_000_000)
    assert offset_allowed(10**9, None)
    with pytest.raises(ValueError):
        Paging(page_size=0)


# --- against the stand-in ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> search_data.Corpus:
    return search_data.write_corpus(Path(tmp_path_factory.mktemp("corpus")))


@pytest.fixture
def standin(corpus: search_data.Corpus) -> Iterator[QidoStandin]:
    with QidoStandin() as server:
        server.add(corpus.json_datasets())
        yield server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = make_session(AuthConfig())
    yield s
    s.close()


def _search(
    session: requests.Session,
    standin: QidoStandin,
    query: SearchQuery,
    paging: Paging,
    **config: object,
) -> tuple[list[dict[str, object]], SearchStats]:
    cfg = SearchConfig(DicomwebEndpoint(standin.dicomweb_url), paging, POLICY, **config)  # type: ignore[arg-type]
    sink = SpoolSink(max_memory=200)  # spills to a file at once: the file path is tested too
    stats = run_search(session, cfg, query, sink, clock=FakeClock())
    return [json.loads(line) for line in sink.lines()], stats


def _uids(rows: list[dict[str, object]], tag: str) -> list[str]:
    return [row[tag]["Value"][0] for row in rows]  # type: ignore[index]


def test_a_short_page_from_a_capping_server_ends_nothing_under_the_empty_rule(
    session: requests.Session, standin: QidoStandin, corpus: search_data.Corpus
) -> None:
    standin.caps.max_limit = 4  # pages cut below the limit asked, silently
    query = SearchQuery(1, "instances")
    rows, stats = _search(session, standin, query, Paging(page_size=10, page_end=PAGE_END_EMPTY))
    assert sorted(_uids(rows, "00080018")) == sorted(corpus.uids("instances"))
    assert stats.pages == 7  # 4+4+4+4+4+1, then the empty page
    # The short rule is right only where the limit is honoured: here it would stop at 4.
    rows, _ = _search(session, standin, query, Paging(page_size=10, page_end=PAGE_END_SHORT))
    assert len(rows) == 4


def test_short_rule_saves_the_empty_page_where_the_limit_is_honoured(
    session: requests.Session, standin: QidoStandin, corpus: search_data.Corpus
) -> None:
    rows, stats = _search(session, standin, SearchQuery(1, "studies"), Paging(3, PAGE_END_SHORT))
    assert sorted(_uids(rows, "0020000D")) == sorted(corpus.uids("studies"))
    assert stats.pages == 4  # 3 + 3 + 3 + 1 (10 studies): the short page ends it
    rows, stats = _search(session, standin, SearchQuery(1, "series"), Paging(3, PAGE_END_SHORT))
    assert len(rows) == 12 and stats.pages == 5  # 3+3+3+3: a full last page needs an empty one


@pytest.mark.parametrize(
    "query, max_offset",
    [
        (SearchQuery(1, "instances"), 10),
        (SearchQuery(1, "series"), 10),
        (SearchQuery(1, "instances", filters=(parse_filter("PatientName=DOE^*"),)), 10),
        (SearchQuery(1, "instances", filters=(parse_filter("StudyDate=20190101-20211231"),)), 10),
        (SearchQuery(1, "studies", filters=(parse_filter("StudyDate=20000101-20221231"),)), 4),
    ],
    ids=["instances", "series", "name", "instance-dates", "study-dates"],
)
def test_past_the_offset_cap_every_match_comes_exactly_once(
    session: requests.Session, standin: QidoStandin, query: SearchQuery, max_offset: int
) -> None:
    uncapped, _ = _search(session, standin, query, Paging(page_size=100, page_end="short"))
    tag = {"studies": "0020000D", "series": "0020000E"}.get(query.level, "00080018")
    expected = sorted(_uids(uncapped, tag))
    # Tiny caps: 2 rows a page, so a search sees at most max_offset + 2 rows.
    assert len(expected) > max_offset + 1
    standin.caps.max_limit, standin.caps.max_offset = 2, max_offset
    paging = Paging(2, "short", max_limit=2, max_offset=max_offset)
    rows, stats = _search(session, standin, query, paging)
    assert sorted(_uids(rows, tag)) == expected  # no loss, no duplicate
    assert stats.splits >= 1


def test_a_study_with_too_many_instances_descends_to_its_series(
    session: requests.Session, standin: QidoStandin, corpus: search_data.Corpus
) -> None:
    study = sorted(corpus.uids("studies", lambda ds: ds.PatientName == "DOE^JOHN"))[0]
    query = SearchQuery(1, "instances", study=study)
    rows, stats = _search(session, standin, query, Paging(2, "short", max_limit=2, max_offset=2))
    expected = corpus.uids("instances", lambda ds: ds.StudyInstanceUID == study)
    assert sorted(_uids(rows, "00080018")) == sorted(expected) and len(expected) == 5
    assert any("/series?" in r for r in standin.requests)


def test_past_the_cap_with_nothing_to_split_on_the_search_fails(
    session: requests.Session, standin: QidoStandin
) -> None:
    with pytest.raises(TooManyMatches, match="narrow the search"):
        _search(session, standin, SearchQuery(1, "studies"), Paging(2, "short", 2, 2))
    same_day = SearchQuery(1, "instances", filters=(parse_filter("StudyDate=20200620"),))
    with pytest.raises(TooManyMatches):  # 4 instances in one series of one study on one day
        _search(session, standin, same_day, Paging(1, "short", 1, 1))


def test_a_failing_page_is_retried_then_fails_the_search(
    session: requests.Session, standin: QidoStandin
) -> None:
    failures = {"left": 2}

    def fail_twice_at_offset_3(path: str, params: dict[str, str]) -> bool:
        if params.get("offset") == "3" and failures["left"] > 0:
            failures["left"] -= 1
            return True
        return False

    standin.caps.fail = fail_twice_at_offset_3
    rows, stats = _search(session, standin, SearchQuery(1, "studies"), Paging(3, "empty"))
    assert len(rows) == 10 and stats.retries == 2
    standin.caps.fail = lambda path, params: params.get("offset") == "3"
    with pytest.raises(HttpError) as err:
        _search(session, standin, SearchQuery(1, "studies"), Paging(3, "empty"))
    assert err.value.reason == "retries_exhausted" and err.value.status == 503
    standin.caps.fail, standin.caps.fail_status = (lambda p, q: True), 400
    with pytest.raises(HttpError) as err:
        _search(session, standin, SearchQuery(1, "studies"), Paging(3, "empty"))
    assert err.value.reason == "http_error" and err.value.status == 400 and err.value.attempts == 1


@pytest.mark.parametrize("encoding", ["minimal", ENCODING_FULL])
def test_google_decodes_both_encodings(
    session: requests.Session, standin: QidoStandin, corpus: search_data.Corpus, encoding: str
) -> None:
    query = SearchQuery(1, "studies", filters=(parse_filter("PatientName=DOE^JOHN*"),))
    rows, _ = _search(session, standin, query, Paging(), encoding=encoding)
    expected = corpus.uids("studies", lambda ds: str(ds.PatientName).startswith("DOE^JOHN"))
    assert sorted(_uids(rows, "0020000D")) == sorted(expected) and len(expected) == 2
    sent = standin.requests[-1]
    assert ("DOE^JOHN*" in sent) is (encoding == "minimal")


def test_iter_qido_pages_until_an_empty_page_by_default(
    session: requests.Session, standin: QidoStandin, corpus: search_data.Corpus
) -> None:
    standin.caps.max_limit = 3  # a server capping pages below the limit asked
    url = standin.dicomweb_url + "/instances"
    rows = list(iter_qido(session, url, policy=POLICY, page_size=10))
    assert len(rows) == len(corpus.uids("instances"))


def test_the_spool_takes_rows_back_and_spills_to_disk() -> None:
    sink = SpoolSink(max_memory=64)
    sink.write([{"a": 1}])
    mark = sink.mark()
    sink.write([{"b": "x" * 100}, {"c": 3}])
    assert sink.rows == 3
    sink.rollback(mark)
    sink.write([{"d": 4}])
    assert sink.rows == 2
    assert list(sink.lines()) == ['{"a": 1}', '{"d": 4}']


@pytest.mark.parametrize("max_limit, page_end", [(5000, "short"), (4, "empty"), (3, "empty")])
def test_pages_read_ahead_on_a_pool_give_the_same_rows_in_order(
    session: requests.Session,
    standin: QidoStandin,
    corpus: search_data.Corpus,
    max_limit: int,
    page_end: str,
) -> None:
    standin.caps.max_limit = max_limit  # below the limit asked: pages shorter than asked
    query = SearchQuery(1, "instances")
    serial, _ = _search(session, standin, query, Paging(5, page_end))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        cfg = SearchConfig(
            DicomwebEndpoint(standin.dicomweb_url), Paging(5, page_end), POLICY, read_ahead=3
        )
        sink = SpoolSink()
        stats = run_search(session, cfg, query, sink, fetcher=pool)
        ahead = [json.loads(line) for line in sink.lines()]
    assert ahead == serial  # same rows, same order: guesses at wrong offsets are dropped
    assert sorted(_uids(ahead, "00080018")) == sorted(corpus.uids("instances"))
    assert stats.requests >= stats.pages


def test_a_small_search_asks_nothing_ahead(session: requests.Session, standin: QidoStandin) -> None:
    query = SearchQuery(1, "studies", filters=(parse_filter("PatientName=DOE^JOHN"),))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        cfg = SearchConfig(DicomwebEndpoint(standin.dicomweb_url), Paging(5), POLICY, read_ahead=3)
        sink = SpoolSink()
        stats = run_search(session, cfg, query, sink, fetcher=pool)
    assert sink.rows == 1 and stats.requests == 2  # the page and the empty page, nothing more
    sink.close()
