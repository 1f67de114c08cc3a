"""The STOW client under odd answers: redirects, undecodable bodies, lost answers, credentials
that cannot be refreshed, "already exists" decided by codes and confirmed by a search.

Real servers where they can show it (Orthanc behind the fault proxy, the Google stand-in), the
scripted stub of test_stow_client for answers no server here gives.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from fault_proxy import FaultPlan, FaultProxy

sys.path.insert(0, str(Path(__file__).parent))  # the helpers of test_stow_client
from test_stow_client import (  # noqa: F401 - stub is a fixture
    FAST,
    Script,
    assert_accounted,
    bearer_session,
    dead,
    make_batch,
    orthanc_sops,
    stored,
    stub,
)

from pipelines.local_orthanc import free_port
from transforms.dicomweb.auth import AuthConfig, make_session
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.stow import StowClient, StowConfig
from transforms.records import StowBatch


def _failed_answer(sop: str, reason: int, detail: str | None = None) -> bytes:
    item: dict[str, Any] = {
        "00081155": {"vr": "UI", "Value": [sop]},
        "00081197": {"vr": "US", "Value": [reason]},
    }
    if detail is not None:
        item["00091097"] = {"vr": "LO", "Value": [detail]}
    return json.dumps({"00081198": {"vr": "SQ", "Value": [item]}}).encode()


def test_duplicate_words_with_another_failure_reason_are_a_refusal(
    stub: tuple[str, Script],  # noqa: F811
    tmp_path: Path,
) -> None:
    url, script = stub
    batch = make_batch(tmp_path, 1, "c000")
    sop = batch.files[0].uids.sop
    script.answers.append((409, "application/dicom+json", _failed_answer(sop, 0xC000, "duplicate")))
    report = StowClient(requests.Session(), StowConfig(DicomwebEndpoint(url), retry=FAST)).store(
        batch, check_existing=False
    )
    (letter,) = dead(report)
    assert (letter.reason, letter.server_reason) == ("rejected", "0xC000")


def test_already_exists_that_a_search_does_not_confirm_is_not_a_success(
    stub: tuple[str, Script],  # noqa: F811
    tmp_path: Path,
) -> None:
    url, script = stub  # the stub's searches find nothing
    batch = make_batch(tmp_path, 1, "unconfirmed")
    sop = batch.files[0].uids.sop
    script.answers.append((409, "application/dicom+json", _failed_answer(sop, 0x0111)))
    report = StowClient(requests.Session(), StowConfig(DicomwebEndpoint(url), retry=FAST)).store(
        batch, check_existing=False
    )
    (letter,) = dead(report)
    assert (letter.reason, letter.server_reason) == ("unconfirmed", "0x0111")
    assert stored(report) == []


@pytest.mark.parametrize("on_exists", ["skip", "fail"])
def test_lost_answer_then_already_exists_is_reported_stored_with_the_bytes(
    google_standin: Any,
    bearer_session: requests.Session,  # noqa: F811
    tmp_path: Path,
    on_exists: str,
) -> None:
    batch = make_batch(tmp_path, 2, f"lost-{on_exists}")
    plan = FaultPlan(script=("drop_after_forward",))
    with FaultProxy(google_standin.root_url, plan) as proxy:
        url = proxy.base_url + google_standin.dicomweb_path
        config = StowConfig(DicomwebEndpoint(url), retry=FAST, on_exists=on_exists)
        report = StowClient(bearer_session, config).store(batch, check_existing=False)
        assert proxy.counts["drop_after_forward"] == 1
    assert_accounted(batch, report)
    assert dead(report) == []
    for r in stored(report):
        assert (r.status, r.attempts) == ("stored", 2)
        assert r.bytes == next(f.size for f in batch.files if f.path == r.source) > 0
    assert len(google_standin.instances) == 2


def _proxied_client(proxy: FaultProxy, prefix: str = "") -> StowClient:
    url = f"{proxy.base_url}{prefix}/dicom-web"
    return StowClient(requests.Session(), StowConfig(DicomwebEndpoint(url), retry=FAST))


@pytest.mark.parametrize("status", [307, 308])
def test_same_origin_307_308_are_followed_with_the_whole_body(
    orthanc: Any, tmp_path: Path, status: int
) -> None:
    batch = make_batch(tmp_path, 3, f"redirect-{status}")
    with FaultProxy(orthanc.rest_url, FaultPlan(redirect_status=status)) as proxy:
        report = _proxied_client(proxy, "/moved").store(batch)
        assert proxy.counts["redirect"] >= 2  # the search and the POST
    assert [o.status for o in stored(report)] == ["stored"] * 3
    assert orthanc_sops(orthanc, batch.study_uid) == {f.uids.sop for f in batch.files}


@pytest.mark.parametrize("status", [301, 302, 303])
def test_redirect_that_would_turn_the_post_into_a_get_is_a_dead_letter(
    orthanc: Any, tmp_path: Path, status: int
) -> None:
    batch = make_batch(tmp_path, 2, f"redirect-{status}")
    with FaultProxy(orthanc.rest_url, FaultPlan(redirect_status=status)) as proxy:
        report = _proxied_client(proxy, "/moved").store(batch)
        location = f"{proxy.base_url}/dicom-web/studies/{batch.study_uid}"
    assert_accounted(batch, report)
    for letter in dead(report):
        assert (letter.reason, letter.http_status) == ("redirected", status)
        assert location in letter.message
    assert orthanc_sops(orthanc, batch.study_uid) == set()


def test_cross_origin_307_is_a_dead_letter_naming_the_location(
    orthanc: Any, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, 1, "redirect-away")
    plan = FaultPlan(redirect_status=307, redirect_to=orthanc.rest_url)
    with FaultProxy(orthanc.rest_url, plan) as proxy:
        report = _proxied_client(proxy, "/moved").store(batch, check_existing=False)
    (letter,) = dead(report)
    assert letter.reason == "redirected"
    assert "another server" in letter.message and orthanc.rest_url in letter.message


def test_undecodable_answer_is_a_dead_letter_not_a_crash(orthanc: Any, tmp_path: Path) -> None:
    batch = make_batch(tmp_path, 2, "bad-encoding")
    with FaultProxy(orthanc.rest_url, FaultPlan(p_bad_encoding=1.0)) as proxy:
        report = _proxied_client(proxy).store(batch)
    assert_accounted(batch, report)
    assert {(d.reason, d.http_status) for d in dead(report)} == {("bad_response", 200)}


def test_credentials_that_cannot_be_fetched_are_dead_letters(
    google_standin: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_token_url = f"http://127.0.0.1:{free_port()}/token"
    path = tmp_path / "adc.json"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "x",
                "client_secret": "y",
                "refresh_token": "z",
                "token_uri": dead_token_url,
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    import google.oauth2.credentials

    monkeypatch.setattr(google.oauth2.credentials, "_GOOGLE_OAUTH2_TOKEN_ENDPOINT", dead_token_url)
    batch = make_batch(tmp_path / "in", 2, "no-token")
    session = make_session(AuthConfig("google"))
    config = StowConfig(DicomwebEndpoint(google_standin.dicomweb_url), retry=FAST)
    report = StowClient(session, config).store(batch)
    assert_accounted(batch, report)
    for letter in dead(report):
        assert letter.reason == "retries_exhausted"
        assert "fetching Google credentials failed (TransportError)" in str(letter.server_detail)
    assert google_standin.instances == {}


def test_an_internal_error_costs_its_files_only(orthanc: Any, tmp_path: Path) -> None:
    batch = make_batch(tmp_path, 2, "boom")

    def opener(path: str) -> Any:
        raise RuntimeError(f"cannot open {path}: 'DOE^JOHN'")

    config = StowConfig(DicomwebEndpoint(orthanc.dicomweb_url), retry=FAST)
    client = StowClient(requests.Session(), config, opener=opener)
    report = client.store(batch)
    assert_accounted(batch, report)
    for letter in dead(report):
        assert letter.reason == "internal_error"
        assert letter.message.startswith("RuntimeError")
        assert "DOE" not in letter.message and str(tmp_path) not in letter.message
    # The client still works for the next batch.
    good = StowClient(requests.Session(), config).store(make_batch(tmp_path / "b", 1, "fine"))
    assert [o.status for o in stored(good)] == ["stored"]


def test_identical_copies_get_their_twins_outcome(orthanc: Any, tmp_path: Path) -> None:
    batch = make_batch(tmp_path, 1, "twin")
    (f,) = batch.files
    copy_path = tmp_path / "copy.dcm"
    copy_path.write_bytes(Path(f.path).read_bytes())
    copy = type(f)(str(copy_path), f.size, f.uids, f.sop_class_uid, f.transfer_syntax_uid)
    config = StowConfig(DicomwebEndpoint(orthanc.dicomweb_url), retry=FAST)
    report = StowClient(requests.Session(), config).store(
        StowBatch(batch.study_uid, batch.files, ((f.path, copy),))
    )
    twin, dup = sorted(stored(report), key=lambda r: r.duplicate_of or "")
    assert (twin.source, twin.status, twin.duplicate_of) == (f.path, "stored", None)
    assert (dup.source, dup.status, dup.bytes, dup.duplicate_of) == (
        str(copy_path),
        "stored",
        0,
        f.path,
    )


def test_the_request_deadline_includes_the_attempt_in_progress() -> None:
    """A server that accepts and never answers: the deadline, not --timeout, ends the wait."""
    import socket
    import time

    from transforms.dicomweb import http
    from transforms.errors import HttpError

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections complete in the kernel; nothing ever reads or answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web/studies"
        policy = http.RetryPolicy(max_attempts=6, max_elapsed=1.0, timeout=(10.0, 600.0))
        start = time.monotonic()
        with pytest.raises(HttpError) as info:
            http.send(requests.Session(), "POST", url, policy=policy, body=b"x")
        elapsed = time.monotonic() - start
    assert info.value.reason == "retries_exhausted"
    assert elapsed < 5.0  # one attempt alone could have waited 600 s


def test_a_failed_lookup_is_remembered_for_the_studys_other_batches(
    orthanc: Any, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, 4, "lookup-fails")
    halves = [
        StowBatch(batch.study_uid, batch.files[:2]),
        StowBatch(batch.study_uid, batch.files[2:]),
    ]
    plan = FaultPlan(p_503=1.0, methods=frozenset({"GET"}), retry_after="0")
    policy = type(FAST)(max_attempts=1, timeout=FAST.timeout)
    with FaultProxy(orthanc.rest_url, plan) as proxy:
        config = StowConfig(DicomwebEndpoint(f"{proxy.base_url}/dicom-web"), retry=policy)
        client = StowClient(requests.Session(), config)
        reports = [client.store(half) for half in halves]
        assert proxy.counts["503"] == 1  # not once per batch
    assert [o.status for r in reports for o in stored(r)] == ["stored"] * 4


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (NotImplementedError("Unknown VR '0x55 0xfd' in tag (0020,000D)"),
         "NotImplementedError: Unknown VR … in tag …"),
        (ValueError("bad name DOE^JOHN born 19800101"), "ValueError: bad name … born …"),
        (RuntimeError("cannot reach https://u:p@host/path?token=1 now"),
         "RuntimeError: cannot reach … now"),
        (KeyError(), "KeyError"),
        (OSError("Ünïcode name"), "OSError: … name"),
    ],
)  # fmt: skip
def test_describe_exception_keeps_the_type_and_drops_what_may_be_data(
    exc: BaseException, expected: str
) -> None:
    from transforms.errors import describe_exception

    assert describe_exception(exc) == expected


def test_an_internal_error_in_a_batch_isolates_the_file_that_caused_it(
    orthanc: Any, tmp_path: Path
) -> None:
    import google.api_core.exceptions

    batch = make_batch(tmp_path, 3, "vanish-at-send")
    gone = batch.files[1].path

    def opener(path: str) -> Any:
        if path == gone:  # a gs:// object deleted between reading its header and sending it
            raise google.api_core.exceptions.NotFound("No such object: bucket/x.dcm")
        return open(path, "rb")  # noqa: SIM115 - the body closes it

    config = StowConfig(DicomwebEndpoint(orthanc.dicomweb_url), retry=FAST)
    report = StowClient(requests.Session(), config, opener=opener).store(batch)
    assert_accounted(batch, report)
    (letter,) = dead(report)
    assert (letter.source, letter.reason) == (gone, "internal_error")
    assert letter.message.startswith("NotFound")
    assert sorted(o.source for o in stored(report)) == sorted(
        f.path for f in batch.files if f.path != gone
    )
