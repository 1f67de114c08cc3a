"""The QIDO client against a real Orthanc: both value encodings, and what Orthanc makes of them.

Orthanc does not percent-decode query values, so the client sends ``^``, ``*``, ``?`` and ``,``
as typed; the fully encoded form (what most clients send) finds nothing there. The Google
stand-in decodes both (tests/unit/test_qido_paging.py).
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest
import requests
import search_data

from pipelines.local_orthanc import LocalOrthanc
from transforms.dicomweb.auth import AuthConfig, make_session
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.http import RetryPolicy
from transforms.dicomweb.qido import Paging, SearchConfig, SpoolSink, run_search, study_sop_uids
from transforms.dicomweb.qido_query import ENCODING_FULL, ENCODING_MINIMAL, parse_filter
from transforms.records import SearchQuery


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> search_data.Corpus:
    return search_data.write_corpus(Path(tmp_path_factory.mktemp("corpus")))


def _store(orthanc: LocalOrthanc, corpus: search_data.Corpus) -> None:
    with requests.Session() as s:
        for path in corpus.paths:
            s.post(f"{orthanc.rest_url}/instances", data=path.read_bytes()).raise_for_status()


def _studies(
    orthanc: LocalOrthanc, value: str, encoding: str, session: requests.Session
) -> set[str]:
    config = SearchConfig(DicomwebEndpoint(orthanc.dicomweb_url), Paging(3), encoding=encoding)
    query = SearchQuery(1, "studies", filters=(parse_filter(f"PatientName={value}"),))
    sink = SpoolSink()
    with session:
        run_search(session, config, query, sink)
    return {json.loads(line)["0020000D"]["Value"][0] for line in sink.lines()}


@pytest.mark.parametrize("value", ["DOE^JOHN", "DOE^J*", "DOE^J?HN", "DOE*"])
def test_orthanc_matches_values_sent_as_typed_and_nothing_percent_encoded(
    orthanc: LocalOrthanc, corpus: search_data.Corpus, value: str
) -> None:
    _store(orthanc, corpus)
    expected = corpus.uids("studies", lambda ds: fnmatch.fnmatchcase(str(ds.PatientName), value))
    assert len(expected) >= 1
    ours = make_session(AuthConfig())  # sends ^ as typed
    assert _studies(orthanc, value, ENCODING_MINIMAL, ours) == expected
    # What most clients send: every reserved character encoded. Orthanc's quirk, not ours.
    assert _studies(orthanc, value, ENCODING_FULL, requests.Session()) == set()
    if "^" in value:  # a plain requests session turns ^ into %5E on its own
        assert _studies(orthanc, value, ENCODING_MINIMAL, requests.Session()) == set()


def test_existence_lookup_pages_until_an_empty_page(
    orthanc: LocalOrthanc, corpus: search_data.Corpus
) -> None:
    _store(orthanc, corpus)
    (study,) = corpus.uids("studies", lambda ds: str(ds.PatientName) == "DOE^JOHN")
    expected = corpus.uids("instances", lambda ds: ds.StudyInstanceUID == study)
    with make_session(AuthConfig()) as session:
        sent: list[str] = []
        session.hooks["response"].append(lambda r, *a, **k: sent.append(r.request.url))
        found = study_sop_uids(
            session, DicomwebEndpoint(orthanc.dicomweb_url), study, policy=RetryPolicy()
        )
    assert found == expected
    assert len(sent) == 2 and sent[-1].endswith(f"offset={len(expected)}")
