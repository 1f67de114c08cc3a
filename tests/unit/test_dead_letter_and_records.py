"""Unit tests for transforms/dead_letter.py and transforms/records.py."""

from __future__ import annotations

import dataclasses
import datetime
import json
import pickle

import pytest

from transforms.dead_letter import MAX_DETAIL_CHARS, DeadLetter, Reason, Stage, shorten, utc_now
from transforms.records import (
    STATUS_ALREADY_PRESENT,
    STATUS_STORED,
    DicomFile,
    InstanceUids,
    StoredInstance,
    StowBatch,
)

UIDS = InstanceUids("1.2.3", "1.2.3.4", "1.2.3.4.5")


def full_dead_letter() -> DeadLetter:
    return DeadLetter(
        stage=Stage.STORE,
        source="gs://bucket/a b/é.dcm",
        reason=Reason.REJECTED,
        message="the server refused this instance (FailureReason 0xA700)",
        uids=UIDS,
        http_status=409,
        server_reason="0xA700",
        server_detail="out of resources",
        attempts=3,
    )


def test_round_trip_with_every_field() -> None:
    dead = full_dead_letter()
    line = dead.to_json()
    assert "\n" not in line
    back = DeadLetter.from_json(line)
    assert back == dead
    assert back.time == dead.time


def test_time_is_not_part_of_equality_or_hash() -> None:
    a = full_dead_letter()
    b = dataclasses.replace(a, time="2001-01-01T00:00:00+00:00")
    assert a == b
    assert hash(a) == hash(b)
    assert DeadLetter.from_json(b.to_json()) == a
    assert DeadLetter.from_json(b.to_json()).time == "2001-01-01T00:00:00+00:00"


def test_round_trip_of_a_minimal_dead_letter() -> None:
    dead = DeadLetter(stage=Stage.READ, source="/x", reason=Reason.NOT_DICOM, message="m")
    assert DeadLetter.from_json(dead.to_json()) == dead


def test_json_is_flat_with_sorted_keys() -> None:
    data = json.loads(full_dead_letter().to_json())
    assert list(data) == sorted(data)
    assert set(data) == {
        "stage",
        "source",
        "reason",
        "message",
        "study_uid",
        "series_uid",
        "sop_uid",
        "http_status",
        "server_reason",
        "server_detail",
        "attempts",
        "time",
    }
    assert (data["study_uid"], data["series_uid"], data["sop_uid"]) == (
        "1.2.3",
        "1.2.3.4",
        "1.2.3.4.5",
    )
    assert data["source"] == "gs://bucket/a b/é.dcm"  # ensure_ascii=False: readable paths


def test_unknown_uids_serialise_as_null() -> None:
    no_uids = DeadLetter(stage=Stage.READ, source="/x", reason=Reason.NOT_DICOM, message="m")
    data = json.loads(no_uids.to_json())
    assert (data["study_uid"], data["series_uid"], data["sop_uid"]) == (None, None, None)
    assert data["http_status"] is None and data["server_reason"] is None

    partial = dataclasses.replace(no_uids, uids=InstanceUids("1.2", "", ""))
    data = json.loads(partial.to_json())
    assert (data["study_uid"], data["series_uid"], data["sop_uid"]) == ("1.2", None, None)
    assert DeadLetter.from_json(partial.to_json()).uids == InstanceUids("1.2", "", "")


def test_all_empty_uids_come_back_as_none() -> None:
    dead = DeadLetter(
        stage=Stage.READ, source="/x", reason="r", message="m", uids=InstanceUids("", "", "")
    )
    assert DeadLetter.from_json(dead.to_json()).uids is None


def test_time_defaults_to_utc_iso_seconds() -> None:
    stamp = DeadLetter(stage="s", source="x", reason="r", message="m").time
    parsed = datetime.datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == datetime.timedelta(0)
    assert parsed.microsecond == 0
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - parsed).total_seconds()) < 60
    assert datetime.datetime.fromisoformat(utc_now()).tzinfo is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", ""),
        ("short", "short"),
        ("  a\n\tb  \r\n c  ", "a b c"),
        ("x" * MAX_DETAIL_CHARS, "x" * MAX_DETAIL_CHARS),
    ],
)
def test_shorten(text: str | None, expected: str | None) -> None:
    assert shorten(text) == expected


def test_shorten_trims_long_text_to_the_limit() -> None:
    long = "word " * 1000
    out = shorten(long)
    assert out is not None
    assert len(out) == MAX_DETAIL_CHARS
    assert out.endswith("…")
    assert "  " not in out
    assert shorten("abcdefghij", limit=5) == "abcd…"
    assert shorten("abcde", limit=5) == "abcde"


def stored() -> StoredInstance:
    return StoredInstance(
        source="/data/a.dcm",
        uids=UIDS,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        retrieve_url="http://h/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5",
        bytes=39206,
        status=STATUS_STORED,
        attempts=1,
    )


def test_stored_instance_to_json_flattens_uids() -> None:
    data = json.loads(stored().to_json())
    assert data == {
        "source": "/data/a.dcm",
        "study_uid": "1.2.3",
        "series_uid": "1.2.3.4",
        "sop_uid": "1.2.3.4.5",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "retrieve_url": "http://h/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5",
        "bytes": 39206,
        "status": "stored",
        "attempts": 1,
        "duplicate_of": None,  # the input with the same bytes that was sent instead
    }
    assert list(json.loads(stored().to_json())) == sorted(data)


def test_status_constants() -> None:
    assert (STATUS_STORED, STATUS_ALREADY_PRESENT) == ("stored", "already_present")


def test_dicom_file_sizes_and_batch_bytes() -> None:
    prefix = b"\x00" * 128 + b"DICM" + b"meta"
    raw = DicomFile("/r", 1000 + len(prefix), UIDS, "1.2", "1.2.840.10008.1.2.1", prefix)
    part10 = DicomFile("/p", 500, UIDS, "1.2", "1.2.840.10008.1.2.1")
    assert raw.file_size == 1000
    assert part10.file_size == 500
    assert StowBatch("1.2.3", (raw, part10)).nbytes == 1500 + len(prefix)
    assert StowBatch("1.2.3", ()).nbytes == 0


@pytest.mark.parametrize(
    "record",
    [
        UIDS,
        DicomFile("/p", 500, UIDS, "1.2", "1.2.840.10008.1.2.1", b"\x00DICM"),
        StowBatch("1.2.3", (DicomFile("/p", 500, UIDS, "1.2", "1.2.840.10008.1.2.1"),)),
        stored(),
        full_dead_letter(),
        DeadLetter(stage="read", source="/x", reason="not_dicom", message="m"),
    ],
    ids=["uids", "dicom_file", "batch", "stored", "dead_letter", "dead_letter_no_uids"],
)
def test_records_are_hashable_picklable_and_frozen(record: object) -> None:
    clone = pickle.loads(pickle.dumps(record))
    assert clone == record
    assert hash(clone) == hash(record)
    assert len({record, clone}) == 1
    field = dataclasses.fields(record)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, field, None)


def test_records_with_different_values_differ() -> None:
    assert stored() != dataclasses.replace(stored(), status=STATUS_ALREADY_PRESENT)
    assert full_dead_letter() != dataclasses.replace(full_dead_letter(), attempts=4)
