"""Unit tests for transforms/stow_client.py against a real Orthanc and the Google stand-in.

Each outcome is checked against what the server really holds afterwards; request counts come
from a counting session (Orthanc) or the stand-in's own request log.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import factory
import pydicom
import pytest
import requests
from fake_clock import FakeClock

from transforms.dead_letter import DeadLetter
from transforms.dicom.peek import peek_dicom
from transforms.dicomweb.auth import AuthConfig, make_session
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.http import RetryPolicy
from transforms.dicomweb.stow import StoreReport, StowClient, StowConfig
from transforms.records import DicomFile, StoredInstance, StowBatch

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, timeout=(5, 60))


@dataclass
class Sent:
    method: str
    url: str
    content_type: str
    length: int


class CountingSession(requests.Session):
    """A plain session that remembers each request it was asked to make."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Sent] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        data = kwargs.get("data")
        headers = kwargs.get("headers") or {}
        length = len(data) if data is not None and hasattr(data, "__len__") else 0
        self.sent.append(Sent(method, url, headers.get("Content-Type", ""), length))
        return super().request(method, url, *args, **kwargs)

    @property
    def posts(self) -> list[Sent]:
        return [s for s in self.sent if s.method == "POST"]


def peek(path: Path) -> DicomFile:
    with open(path, "rb") as f:
        return peek_dicom(f, path=str(path), size=os.path.getsize(path))


def make_batch(directory: Path, count: int, seed: str) -> StowBatch:
    files = [peek(p) for p in factory.write_ct_instances(directory, count=count, seed=seed)]
    assert len({f.uids.study for f in files}) == 1
    return StowBatch(files[0].uids.study, tuple(files))


def stored(report: StoreReport) -> list[StoredInstance]:
    return [o for o in report.outcomes if isinstance(o, StoredInstance)]


def dead(report: StoreReport) -> list[DeadLetter]:
    return [o for o in report.outcomes if isinstance(o, DeadLetter)]


def assert_accounted(batch: StowBatch, report: StoreReport) -> None:
    """Every input has exactly one outcome."""
    sources = sorted(o.source for o in report.outcomes)
    assert sources == sorted(f.path for f in batch.files)


def orthanc_sops(orthanc: Any, study: str) -> set[str]:
    resp = requests.get(
        f"{orthanc.dicomweb_url}/studies/{study}/instances",
        headers={"Accept": "application/dicom+json"},
        timeout=30,
    )
    assert resp.status_code in (200, 204)
    rows = resp.json() if resp.content.strip() else []
    return {row["00080018"]["Value"][0] for row in rows}


# --- Orthanc -------------------------------------------------------------------------------


@pytest.fixture
def orthanc_client(orthanc: Any) -> tuple[StowClient, CountingSession, DicomwebEndpoint]:
    session = CountingSession()
    endpoint = DicomwebEndpoint(orthanc.dicomweb_url)
    client = StowClient(session, StowConfig(endpoint, retry=FAST), clock=FakeClock())
    return client, session, endpoint


def test_orthanc_stores_a_batch(
    orthanc: Any,
    orthanc_client: tuple[StowClient, CountingSession, DicomwebEndpoint],
    tmp_path: Path,
) -> None:
    client, session, endpoint = orthanc_client
    batch = make_batch(tmp_path, 5, "store")
    report = client.store(batch)
    assert_accounted(batch, report)
    assert dead(report) == []
    results = stored(report)
    assert len(results) == 5
    by_sop = {f.uids.sop: f for f in batch.files}
    for r in results:
        f = by_sop[r.uids.sop]
        assert r.status == "stored"
        assert r.source == f.path
        assert r.uids == f.uids
        assert r.sop_class_uid == f.sop_class_uid
        assert r.bytes == f.size
        assert r.attempts == 1
        assert r.retrieve_url == endpoint.instance_url(f.uids.study, f.uids.series, f.uids.sop)
    assert len(session.posts) == 1
    assert session.posts[0].url == endpoint.study_url(batch.study_uid)
    assert session.posts[0].content_type.startswith('multipart/related; type="application/dicom"')
    assert report.requests == 2  # the existence search and one STOW
    assert report.retries == 0
    assert orthanc.instance_count() == 5
    assert orthanc_sops(orthanc, batch.study_uid) == set(by_sop)


def test_orthanc_rerun_finds_everything_already_present(
    orthanc: Any,
    orthanc_client: tuple[StowClient, CountingSession, DicomwebEndpoint],
    tmp_path: Path,
) -> None:
    client, session, endpoint = orthanc_client
    batch = make_batch(tmp_path, 5, "rerun")
    assert len(stored(client.store(batch))) == 5

    fresh_session = CountingSession()
    fresh = StowClient(fresh_session, StowConfig(endpoint, retry=FAST))
    report = fresh.store(batch)
    assert_accounted(batch, report)
    assert [o.status for o in stored(report)] == ["already_present"] * 5
    for r in stored(report):
        assert r.bytes == 0 and r.attempts == 0
        assert r.retrieve_url == endpoint.instance_url(r.uids.study, r.uids.series, r.uids.sop)
    assert fresh_session.posts == []
    # One page of matches, then the empty page that ends it: Orthanc is not known to honour
    # the limit asked, so a short page does not end a search there.
    assert [s.method for s in fresh_session.sent] == ["GET", "GET"]
    assert report.requests == 1

    # The same client remembers what it stored: not even a search this time.
    before = len(session.sent)
    again = client.store(batch)
    assert [o.status for o in stored(again)] == ["already_present"] * 5
    assert len(session.sent) == before
    assert orthanc.instance_count() == 5


def test_orthanc_without_existence_check_stores_again(orthanc: Any, tmp_path: Path) -> None:
    endpoint = DicomwebEndpoint(orthanc.dicomweb_url)
    batch = make_batch(tmp_path, 5, "nocheck")
    session = CountingSession()
    client = StowClient(session, StowConfig(endpoint, check_existing=False, retry=FAST))
    first = client.store(batch)
    second = client.store(batch)
    # Orthanc accepts a duplicate silently: without the search there is no way to tell.
    assert [o.status for o in stored(first)] == ["stored"] * 5
    assert [o.status for o in stored(second)] == ["stored"] * 5
    assert [s.method for s in session.sent] == ["POST", "POST"]
    assert orthanc.instance_count() == 5


def test_orthanc_on_exists_fail_dead_letters_present_instances(
    orthanc: Any, tmp_path: Path
) -> None:
    endpoint = DicomwebEndpoint(orthanc.dicomweb_url)
    batch = make_batch(tmp_path, 5, "fail")
    StowClient(requests.Session(), StowConfig(endpoint, retry=FAST)).store(batch)
    session = CountingSession()
    strict = StowClient(session, StowConfig(endpoint, on_exists="fail", retry=FAST))
    report = strict.store(batch)
    assert_accounted(batch, report)
    letters = dead(report)
    assert len(letters) == 5
    for d in letters:
        assert (d.reason, d.stage, d.attempts, d.http_status) == (
            "already_exists",
            "store",
            0,
            None,
        )
        assert d.uids in {f.uids for f in batch.files}
    assert session.posts == []


def test_orthanc_instance_of_another_study_is_refused_and_the_others_stored(
    orthanc: Any,
    orthanc_client: tuple[StowClient, CountingSession, DicomwebEndpoint],
    tmp_path: Path,
) -> None:
    client, session, _ = orthanc_client
    mine = make_batch(tmp_path / "a", 4, "mine")
    stranger = make_batch(tmp_path / "b", 1, "stranger").files[0]
    assert stranger.uids.study != mine.study_uid
    batch = StowBatch(mine.study_uid, (*mine.files, stranger))
    report = client.store(batch)
    assert_accounted(batch, report)
    assert sorted(r.source for r in stored(report)) == sorted(f.path for f in mine.files)
    (letter,) = dead(report)
    assert letter.source == stranger.path
    assert letter.uids == stranger.uids
    # Orthanc 1.10 with its DICOMweb plugin answers 409 and lists the stranger in the
    # FailedSOPSequence with FailureReason 0x0110 (no detail text): it is refused, not ignored.
    assert (letter.reason, letter.http_status, letter.server_reason) == ("rejected", 409, "0x0110")
    assert len(session.posts) == 1  # every instance was named: nothing to isolate
    assert orthanc.instance_count() == 4
    assert orthanc_sops(orthanc, stranger.uids.study) == set()


def test_orthanc_file_replaced_by_junk_is_isolated(
    orthanc: Any,
    orthanc_client: tuple[StowClient, CountingSession, DicomwebEndpoint],
    tmp_path: Path,
) -> None:
    client, session, endpoint = orthanc_client
    batch = make_batch(tmp_path, 5, "junk")
    bad = batch.files[2]
    junk = random.Random(7).randbytes(bad.file_size)
    Path(bad.path).write_bytes(junk)  # same size: passes the size check
    report = client.store(batch)
    assert_accounted(batch, report)
    assert sorted(r.source for r in stored(report)) == sorted(
        f.path for f in batch.files if f is not bad
    )
    (letter,) = dead(report)
    assert letter.source == bad.path
    assert (letter.reason, letter.http_status) == ("http_error", 400)
    assert letter.attempts == 2  # the batch request, then its own
    assert [p.url for p in session.posts] == [endpoint.study_url(batch.study_uid)] * 2
    assert session.posts[0].length > session.posts[1].length
    assert bad.file_size < session.posts[1].length < 2 * bad.file_size  # it went alone
    assert orthanc.instance_count() == 4


@pytest.mark.parametrize("change", ["deleted", "shrank"])
def test_orthanc_file_changed_after_peeking_is_unreadable(
    orthanc: Any,
    orthanc_client: tuple[StowClient, CountingSession, DicomwebEndpoint],
    tmp_path: Path,
    change: str,
) -> None:
    client, session, _ = orthanc_client
    batch = make_batch(tmp_path, 5, f"gone-{change}")
    gone = batch.files[1]
    if change == "deleted":
        os.remove(gone.path)
    else:
        Path(gone.path).write_bytes(Path(gone.path).read_bytes()[:1000])
    report = client.store(batch)
    assert_accounted(batch, report)
    (letter,) = dead(report)
    assert letter.source == gone.path
    assert letter.reason == "unreadable"
    assert letter.uids == gone.uids
    assert factory.PATIENT_NAME not in letter.to_json()
    assert len(stored(report)) == 4
    assert {r.status for r in stored(report)} == {"stored"}
    assert len(session.posts) == 2  # the interrupted request, then the four others
    assert orthanc.instance_count() == 4


# --- Google stand-in -----------------------------------------------------------------------


@pytest.fixture
def bearer_session(monkeypatch: pytest.MonkeyPatch) -> requests.Session:
    monkeypatch.setenv("T", "standin-token")
    return make_session(AuthConfig("bearer", token_env="T"))


def google_config(standin: Any, **kwargs: Any) -> StowConfig:
    return StowConfig(DicomwebEndpoint(standin.dicomweb_url), retry=FAST, **kwargs)


def header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def stow_requests(standin: Any) -> list[Any]:
    return [r for r in standin.requests if r.method == "POST"]


def test_google_single_part_posts_each_instance_alone(
    google_standin: Any, bearer_session: requests.Session, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, 3, "single")
    client = StowClient(bearer_session, google_config(google_standin, single_part=True))
    report = client.store(batch)
    assert_accounted(batch, report)
    assert [r.status for r in stored(report)] == ["stored"] * 3
    posts = stow_requests(google_standin)
    assert len(posts) == 3
    assert {p.path for p in posts} == {google_standin.dicomweb_path + "/studies"}
    assert {header(p.headers, "Content-Type") for p in posts} == {"application/dicom"}
    assert sorted(p.body_length for p in posts) == sorted(f.size for f in batch.files)
    assert len(google_standin.instances) == 3
    for r in stored(report):
        assert r.retrieve_url == DicomwebEndpoint(google_standin.dicomweb_url).instance_url(
            r.uids.study, r.uids.series, r.uids.sop
        )
    # Every request carried the bearer token read from the environment.
    assert {header(r.headers, "Authorization") for r in google_standin.requests} == {
        "Bearer standin-token"
    }


@pytest.mark.parametrize("single_part", [False, True])
def test_google_storage_class_header(
    google_standin: Any, bearer_session: requests.Session, tmp_path: Path, single_part: bool
) -> None:
    batch = make_batch(tmp_path, 3, f"cold-{single_part}")
    config = google_config(google_standin, storage_class="COLDLINE", single_part=single_part)
    report = StowClient(bearer_session, config).store(batch)
    assert [r.status for r in stored(report)] == ["stored"] * 3
    posts = stow_requests(google_standin)
    assert len(posts) == (3 if single_part else 1)
    assert {header(p.headers, "Storage-Class") for p in posts} == {"COLDLINE"}
    assert {blob.storage_class for blob in google_standin.instances.values()} == {"COLDLINE"}
    assert len(google_standin.instances) == 3


def test_google_without_storage_class_sends_no_header(
    google_standin: Any, bearer_session: requests.Session, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, 2, "standard")
    StowClient(bearer_session, google_config(google_standin)).store(batch)
    (post,) = stow_requests(google_standin)
    assert header(post.headers, "Storage-Class") is None
    assert {blob.storage_class for blob in google_standin.instances.values()} == {"STANDARD"}


@pytest.mark.parametrize("single_part", [False, True])
def test_google_preloaded_instance_is_already_present_from_the_409(
    google_standin: Any, bearer_session: requests.Session, tmp_path: Path, single_part: bool
) -> None:
    batch = make_batch(tmp_path, 3, f"preload-{single_part}")
    present = batch.files[0]
    google_standin.preload(Path(present.path).read_bytes())
    config = google_config(google_standin, check_existing=False, single_part=single_part)
    report = StowClient(bearer_session, config).store(batch)
    assert_accounted(batch, report)
    assert dead(report) == []
    status = {r.source: r.status for r in stored(report)}
    assert status.pop(present.path) == "already_present"
    assert set(status.values()) == {"stored"}
    again = next(r for r in stored(report) if r.source == present.path)
    assert (again.bytes, again.attempts) == (0, 1)
    methods = [r.method for r in google_standin.requests]
    # One search (a page and the empty page ending it) confirms the "already exists" answer.
    assert sorted(methods) == ["GET"] * 2 + ["POST"] * (3 if single_part else 1)


def test_google_preloaded_instance_with_on_exists_fail(
    google_standin: Any, bearer_session: requests.Session, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, 2, "preload-fail")
    present = batch.files[1]
    google_standin.preload(Path(present.path).read_bytes())
    config = google_config(google_standin, check_existing=False, on_exists="fail")
    report = StowClient(bearer_session, config).store(batch)
    (letter,) = dead(report)
    assert letter.source == present.path
    assert (letter.reason, letter.server_reason) == ("already_exists", "0x0110")
    assert letter.server_detail == "Instance already exists"
    assert [r.source for r in stored(report)] == [batch.files[0].path]


def test_google_existence_check_skips_preloaded_instances(
    google_standin: Any, bearer_session: requests.Session, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, 3, "precheck")
    for f in batch.files[:2]:
        google_standin.preload(Path(f.path).read_bytes())
    report = StowClient(bearer_session, google_config(google_standin)).store(batch)
    status = sorted(r.status for r in stored(report))
    assert status == ["already_present", "already_present", "stored"]
    (post,) = stow_requests(google_standin)
    assert post.body_length < 2 * batch.files[2].size  # only the missing one was sent
    searches = [r for r in google_standin.requests if r.method == "GET"]
    # A page, then the empty page that ends it: at a loopback URL the stand-in is not known to
    # honour the limit, so a short page does not end the search.
    assert len(searches) == 2
    assert "includefield=00080018" in searches[0].query


def test_google_error_body_reaches_the_dead_letter(
    google_standin: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T", "expired-token")
    session = make_session(AuthConfig("bearer", token_env="T"))
    batch = make_batch(tmp_path, 1, "unauthorized")
    report = StowClient(session, google_config(google_standin)).store(batch)
    (letter,) = dead(report)
    assert (letter.reason, letter.http_status) == ("http_error", 401)
    assert letter.server_detail is not None
    assert "invalid authentication credentials" in letter.server_detail


# --- a scripted server, for answers no real server here gives --------------------------------


@dataclass
class Script:
    """What the stub answers to each STOW POST, in order; searches always find nothing.

    Only for answers no real server here gives: Orthanc names every instance it is sent (even
    one of another study: 409, FailedSOPSequence), never garbles a 2xx body, and a 503 that
    never clears is what the fault proxy in tests/integration shows end to end.
    """

    answers: list[tuple[int, str, bytes]] = field(default_factory=list)
    posts: int = 0


class _Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200, "application/dicom+json", b"[]")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        script: Script = self.server.script  # type: ignore[attr-defined]
        script.posts += 1
        self._answer(*script.answers.pop(0))


@pytest.fixture
def stub() -> Iterator[tuple[str, Script]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    script = Script()
    server.script = script  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _referenced(sops: list[str]) -> bytes:
    items = [{"00081155": {"vr": "UI", "Value": [sop]}} for sop in sops]
    return json.dumps({"00081199": {"vr": "SQ", "Value": items}}).encode()


def test_instance_missing_from_a_2xx_answer_is_not_in_response(
    stub: tuple[str, Script], tmp_path: Path
) -> None:
    url, script = stub
    batch = make_batch(tmp_path, 3, "silent")
    listed = [f.uids.sop for f in batch.files[:2]]
    script.answers.append((200, "application/dicom+json", _referenced(listed)))
    report = StowClient(requests.Session(), StowConfig(DicomwebEndpoint(url), retry=FAST)).store(
        batch
    )
    assert_accounted(batch, report)
    assert sorted(r.uids.sop for r in stored(report)) == sorted(listed)
    (letter,) = dead(report)
    assert letter.source == batch.files[2].path
    assert (letter.reason, letter.http_status, letter.attempts) == ("not_in_response", 200, 1)
    assert script.posts == 1  # a 2xx is not a reason to resend


def test_unparseable_2xx_answer_dead_letters_the_batch(
    stub: tuple[str, Script], tmp_path: Path
) -> None:
    url, script = stub
    batch = make_batch(tmp_path, 2, "garbled")
    script.answers.append((200, "application/dicom+json", b"<<<not a dataset"))
    report = StowClient(requests.Session(), StowConfig(DicomwebEndpoint(url), retry=FAST)).store(
        batch
    )
    assert {(d.reason, d.http_status) for d in dead(report)} == {("bad_response", 200)}
    assert len(dead(report)) == 2
    assert all(d.server_detail == "<<<not a dataset" for d in dead(report))


def test_persistent_503_is_retries_exhausted(stub: tuple[str, Script], tmp_path: Path) -> None:
    url, script = stub
    batch = make_batch(tmp_path, 2, "busy")
    script.answers.extend([(503, "text/plain", b"overloaded")] * FAST.max_attempts)
    clock = FakeClock()
    client = StowClient(
        requests.Session(), StowConfig(DicomwebEndpoint(url), retry=FAST), clock=clock
    )
    report = client.store(batch)
    assert_accounted(batch, report)
    for d in dead(report):
        assert (d.reason, d.http_status, d.attempts) == ("retries_exhausted", 503, 3)
        assert d.server_detail == "overloaded"
    assert report.retries == 2
    assert report.throttled_seconds == pytest.approx(sum(clock.sleeps))
    assert script.posts == 3


def test_stow_config_validation() -> None:
    endpoint = DicomwebEndpoint("http://127.0.0.1:1/dicom-web")
    with pytest.raises(ValueError, match="storage_class"):
        StowConfig(endpoint, storage_class="GLACIER")
    with pytest.raises(ValueError, match="on_exists"):
        StowConfig(endpoint, on_exists="overwrite")
    assert StowConfig(endpoint, storage_class="ARCHIVE").on_exists == "skip"


def test_peeked_uids_match_the_files(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, 2, "sanity")
    for f in batch.files:
        ds = pydicom.dcmread(f.path, stop_before_pixels=True)
        assert f.uids.sop == ds.SOPInstanceUID
