"""The Beam-free delete client: pure policies, then the client against the operations stand-in.

Polling runs on a FakeClock (sleeps are recorded, not slept); the stand-in's operations finish
after a number of polls, so the tests take milliseconds whatever the backoff.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import factory
import pydicom
import pytest
import requests
from fake_clock import FakeClock
from google_operations import GoogleOperationsStandin

from transforms.dead_letter import DeadLetter
from transforms.dicomweb import http
from transforms.dicomweb.delete import (
    ABSENT,
    CHECK,
    DONE,
    REFUSED,
    UNSUPPORTED,
    DeleteClient,
    DeleteConfig,
    after_refusal,
    classify_answer,
    list_series,
    presence_in,
    presence_query,
)
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.operations import (
    operation_name,
    operation_url,
    parse_operation,
    poll_delays,
)
from transforms.dicomweb.orthanc_rest import rest_root
from transforms.records import DeletedTarget, InstanceUids, PlannedDelete
from transforms.targets import Target

GOOGLE = DicomwebEndpoint.for_google_store("p", "l", "d", "s")
FAST = http.RetryPolicy(max_attempts=4, initial_backoff=0.01, timeout=(5.0, 10.0))


# --- pure pieces ----------------------------------------------------------------------------


def test_operation_url_is_the_store_api_root_plus_the_name() -> None:
    name = "projects/p/locations/l/datasets/d/operations/123"
    assert operation_url(GOOGLE.base_url, name) == f"https://healthcare.googleapis.com/v1/{name}"
    standin = "http://127.0.0.1:5000/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb"
    assert operation_url(standin, name) == f"http://127.0.0.1:5000/v1/{name}"
    # Any server answering an operation gets it polled, even without /v1/ in its URL.
    assert operation_url("http://h:8042/dicom-web", name) == f"http://h:8042/v1/{name}"


def test_poll_delays_start_at_one_second_and_back_off_to_ten() -> None:
    delays = list(itertools.islice(poll_delays(), 9))
    assert delays[:4] == [1.0, 1.5, 2.25, 3.375]
    assert delays[-1] == 10.0 and max(delays) == 10.0
    assert delays == sorted(delays)


@pytest.mark.parametrize(
    "body, name",
    [
        (
            b'{"name": "projects/p/locations/l/datasets/d/operations/7"}',
            "projects/p/locations/l/datasets/d/operations/7",
        ),  # noqa: E501
        (b"{}", None),
        (b"", None),
        (b"not json", None),
        (b'{"name": 7}', None),
        (b'{"name": "projects/p/x"}', None),  # a name, but not an operation's
        (b'[{"name": "a/operations/1"}]', None),
    ],
)
def test_operation_name(body: bytes, name: str | None) -> None:
    assert operation_name(body) == name


def test_parse_operation_pending_done_and_error() -> None:
    assert not parse_operation(b'{"name": "x", "metadata": {}}').done
    ok = parse_operation(b'{"name": "x", "done": true, "response": {}}')
    assert ok.done and not ok.failed
    bad = parse_operation(b'{"done": true, "error": {"code": 13, "message": "internal"}}')
    assert bad.failed and bad.error_code == 13 and bad.error_message == "internal"
    for garbage in (b"nope", b"[]", b'"done"'):
        with pytest.raises(ValueError):
            parse_operation(garbage)


def test_answer_and_refusal_policies() -> None:
    assert [classify_answer(s) for s in (200, 202, 204)] == [DONE] * 3
    assert [classify_answer(s) for s in (403, 404)] == [CHECK] * 2
    assert [classify_answer(s) for s in (405, 501)] == [UNSUPPORTED] * 2
    assert [classify_answer(s) for s in (400, 409, 500)] == [REFUSED] * 3
    assert after_refusal(404, still_present=False) == ABSENT
    assert after_refusal(403, still_present=False) == ABSENT
    assert after_refusal(404, still_present=True) == UNSUPPORTED  # QIDO shows it: no DELETE here
    assert after_refusal(403, still_present=True) == REFUSED  # permission


def test_presence_matches_the_uid_again_and_reads_counts() -> None:
    study = Target("1.2.3")
    rows = [
        {"0020000D": {"vr": "UI", "Value": ["1.2.9"]}, "00201208": {"vr": "IS", "Value": [5]}},
        {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "00201208": {"vr": "IS", "Value": [7]}},
    ]
    assert presence_in(rows, study) == (True, 7)
    assert presence_in(rows[:1], study) == (False, None)  # a server ignoring the filter
    assert presence_in([{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}], study) == (True, None)
    sop = Target("1.2.3", "1.2.4", "1.2.5")
    assert presence_in([{"00080018": {"vr": "UI", "Value": ["1.2.5"]}}], sop) == (True, 1)
    url, params = presence_query(GOOGLE, Target("1.2.3", "1.2.4"))
    assert url.endswith("/dicomWeb/studies/1.2.3/series")
    assert params == {"SeriesInstanceUID": "1.2.4", "includefield": "00201209"}


def test_orthanc_rest_root_is_one_segment_above_dicomweb() -> None:
    assert rest_root("http://127.0.0.1:8042/dicom-web") == "http://127.0.0.1:8042"
    assert rest_root("https://h/orthanc/dicom-web/") == "https://h/orthanc"


def test_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError):
        DeleteConfig(GOOGLE, delete_api="rest")
    with pytest.raises(ValueError):
        DeleteConfig(GOOGLE, operation_timeout=0)


# --- the client against the stand-in ----------------------------------------------------------


def _instance(seed: str, study: int, series: int, n: int) -> tuple[bytes, Target]:
    ds = pydicom.dcmread(factory.testdata("CT_small.dcm"))
    ds.StudyInstanceUID = factory.uid(f"{seed}-st{study}")
    ds.SeriesInstanceUID = factory.uid(f"{seed}-st{study}-se{series}")
    ds.SOPInstanceUID = factory.uid(f"{seed}-st{study}-se{series}-{n}")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    from io import BytesIO

    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), Target(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


@pytest.fixture
def standin() -> Iterator[GoogleOperationsStandin]:
    with GoogleOperationsStandin(done_after_polls=3) as server:
        yield server


@pytest.fixture
def instances(standin: GoogleOperationsStandin) -> list[Target]:
    """Two studies; study 0 has two series of two instances, study 1 one instance."""
    targets = []
    for study, series, n in [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0)]:
        data, target = _instance("dc", study, series, n)
        standin.preload(data)
        targets.append(target)
    return targets


def _client(standin: GoogleOperationsStandin, clock: FakeClock, **config: object) -> DeleteClient:
    endpoint = DicomwebEndpoint(standin.dicomweb_url)
    cfg = DeleteConfig(endpoint, retry=FAST, **config)  # type: ignore[arg-type]
    return DeleteClient(requests.Session(), cfg, clock=clock)


def _plan(client: DeleteClient, target: Target) -> PlannedDelete:
    outcome = client.plan(target).outcome
    assert isinstance(outcome, PlannedDelete)
    return outcome


def test_plan_counts_instances_and_finds_absent_targets(
    standin: GoogleOperationsStandin, instances: list[Target]
) -> None:
    client = _client(standin, FakeClock())
    study = _plan(client, instances[0].at_level("studies"))
    assert (study.level, study.status, study.instances) == ("studies", "to_delete", 4)
    series = _plan(client, instances[2].at_level("series"))
    assert (series.status, series.instances) == ("to_delete", 2)
    inst = _plan(client, instances[4])
    assert (inst.status, inst.instances) == ("to_delete", 1)
    gone = _plan(client, Target(instances[0].study, factory.uid("no-such-series")))
    assert (gone.status, gone.instances) == ("already_absent", None)
    assert _plan(client, Target(factory.uid("no-such-study"))).status == "already_absent"


def test_study_operation_polled_with_backoff_until_done(
    standin: GoogleOperationsStandin, instances: list[Target]
) -> None:
    clock = FakeClock()
    client = _client(standin, clock)
    report = client.delete(_plan(client, instances[0].at_level("studies")))
    out = report.outcome
    assert isinstance(out, DeletedTarget), out
    assert out.status == "deleted" and out.instances == 4
    assert out.operation is not None and out.operation.endswith("/operations/1")
    assert clock.sleeps == [1.0, 1.5, 2.25]  # done at the third poll
    assert out.duration_seconds == pytest.approx(4.75)
    assert report.tally.polls == 3 and report.tally.operations == 1
    remaining = {k[2] for k in standin.instances}
    assert remaining == {instances[4].sop}  # exactly the other study is left


def test_operation_ending_in_error_is_a_dead_letter_with_code_and_message(
    instances: list[Target], standin: GoogleOperationsStandin
) -> None:
    standin.error = (13, "internal error while deleting")
    client = _client(standin, FakeClock())
    out = client.delete(_plan(client, instances[2].at_level("series"))).outcome
    assert isinstance(out, DeadLetter)
    assert out.reason == "operation_failed" and out.stage == "delete"
    assert "code 13" in out.message and out.server_detail == "internal error while deleting"
    assert out.uids == InstanceUids(instances[2].study, instances[2].series or "", "")
    assert len(standin.instances) == 5  # nothing deleted


def test_operation_never_done_stops_at_the_deadline(
    instances: list[Target], standin: GoogleOperationsStandin
) -> None:
    standin.never_done = True
    clock = FakeClock()
    client = _client(standin, clock, operation_timeout=60.0)
    out = client.delete(_plan(client, instances[0].at_level("studies"))).outcome
    assert isinstance(out, DeadLetter) and out.reason == "operation_timeout"
    assert "/operations/1" in out.message
    assert sum(clock.sleeps) == pytest.approx(60.0)
    assert max(clock.sleeps) == 10.0  # backed off to the cap, never beyond


def test_instance_delete_answers_empty_object_at_once(
    instances: list[Target], standin: GoogleOperationsStandin
) -> None:
    clock = FakeClock()
    client = _client(standin, clock, verify=True)
    out = client.delete(_plan(client, instances[1])).outcome
    assert isinstance(out, DeletedTarget) and out.status == "deleted" and out.operation is None
    assert clock.sleeps == [] and not standin.operations
    assert instances[1].sop not in {k[2] for k in standin.instances}
    assert len(standin.instances) == 4


def test_429_and_503_on_delete_and_polls_are_retried(
    instances: list[Target], standin: GoogleOperationsStandin
) -> None:
    standin.inject("DELETE", "/studies/", 429, 503)
    standin.inject("GET", "/operations/", 503, 429, 503)
    client = _client(standin, FakeClock())
    report = client.delete(_plan(client, instances[0].at_level("studies")))
    assert isinstance(report.outcome, DeletedTarget) and report.outcome.status == "deleted"
    assert report.tally.retries == 5
    assert report.outcome.attempts == report.tally.requests == 1 + 2 + 3 + 3


def test_polls_failing_past_the_retry_bound_dead_letter_the_target(
    instances: list[Target], standin: GoogleOperationsStandin
) -> None:
    standin.inject("GET", "/operations/", *([503] * 10))
    client = _client(standin, FakeClock())
    out = client.delete(_plan(client, instances[0].at_level("studies"))).outcome
    assert isinstance(out, DeadLetter) and out.reason == "retries_exhausted"


def test_refusals_are_checked_with_qido(
    instances: list[Target], standin: GoogleOperationsStandin
) -> None:
    client = _client(standin, FakeClock())
    planned = _plan(client, instances[4])
    # Deleted behind our back: the DELETE answers 403 (Google's "not found"), QIDO agrees.
    standin.instances.clear()
    out = client.delete(planned).outcome
    assert isinstance(out, DeletedTarget) and out.status == "already_absent"


@pytest.mark.parametrize(
    "status, reason",
    [(404, "delete_unsupported"), (405, "delete_unsupported"), (501, "delete_unsupported"),
     (403, "http_error"), (400, "http_error")],
)  # fmt: skip
def test_refusal_of_a_present_target_is_a_dead_letter(
    instances: list[Target], standin: GoogleOperationsStandin, status: int, reason: str
) -> None:
    standin.inject("DELETE", "/instances/", status)
    client = _client(standin, FakeClock())
    out = client.delete(_plan(client, instances[3])).outcome
    assert isinstance(out, DeadLetter) and out.reason == reason and out.http_status == status
    if reason == "delete_unsupported":
        assert "does not support DICOMweb deletes" in out.message
    assert len(standin.instances) == 5


def test_verify_dead_letters_a_target_still_there(
    instances: list[Target], standin: GoogleOperationsStandin
) -> None:
    standin.inject("DELETE", "/instances/", 200)  # claims success, deletes nothing
    client = _client(standin, FakeClock(), verify=True)
    out = client.delete(_plan(client, instances[3])).outcome
    assert isinstance(out, DeadLetter)
    assert (out.stage, out.reason) == ("verify", "still_present")


def test_already_absent_in_the_plan_sends_nothing(standin: GoogleOperationsStandin) -> None:
    client = _client(standin, FakeClock())
    planned = PlannedDelete(InstanceUids("1.2.3", "", ""), "studies", None, "already_absent")
    out = client.delete(planned).outcome
    assert isinstance(out, DeletedTarget) and out.status == "already_absent"
    assert standin.requests == []


def test_list_series_when_it_takes_fewer_requests() -> None:
    assert not list_series(None, 50, 1000)  # size unknown: search each
    assert not list_series(5000, 1, 1000)
    assert list_series(100, 2, 1000)  # one page instead of two searches
    assert not list_series(5000, 5, 1000)  # five pages, five searches: equal, search
    assert list_series(5000, 6, 1000)


def test_instances_of_one_series_are_planned_with_one_listing(
    standin: GoogleOperationsStandin, instances: list[Target]
) -> None:
    client = _client(standin, FakeClock())
    gone = Target(instances[0].study, instances[0].series, factory.uid("gone-sop"))
    report = client.plan_group([instances[0], instances[1], gone])
    assert [(o.status, o.instances) for o in report.outcomes] == [  # type: ignore[union-attr]
        ("to_delete", 1),
        ("to_delete", 1),
        ("already_absent", None),
    ]
    searches = [r for r in standin.requests if r.method == "GET"]
    # The series' size, then its instances: one page, and the empty page that ends a listing
    # on a server not known to honour the limit.
    assert len(searches) == 3
    assert report.tally.requests == 3
    absent_series = Target(instances[0].study, factory.uid("no-series"), factory.uid("x"))
    absent = client.plan_group(
        [absent_series, Target(absent_series.study, absent_series.series, "1.2")]
    )
    assert {o.status for o in absent.outcomes} == {"already_absent"}  # type: ignore[union-attr]
