"""Unit tests for transforms/batching.py: how one study's files are split into STOW batches."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable

import pytest

from transforms.dead_letter import DeadLetter
from transforms.dicomweb.batching import dedupe_study, plan_study
from transforms.records import DicomFile, InstanceUids, StowBatch

STUDY = "1.2.3"
_serial = itertools.count(1000)


def dicom_file(path: str, size: int = 100, sop: str | None = None) -> DicomFile:
    return DicomFile(
        path=path,
        size=size,
        uids=InstanceUids(STUDY, "1.2.3.4", sop or f"1.2.3.4.{next(_serial)}"),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )


def plan(
    files: Iterable[DicomFile], max_count: int = 100, max_bytes: int = 10**9
) -> tuple[list[StowBatch], list[DeadLetter]]:
    batches: list[StowBatch] = []
    dead: list[DeadLetter] = []
    for item in plan_study(STUDY, files, max_count=max_count, max_bytes=max_bytes):
        if isinstance(item, StowBatch):
            batches.append(item)
        else:
            assert isinstance(item, DeadLetter)
            dead.append(item)
    return batches, dead


def files_of(n: int, size: int = 100) -> list[DicomFile]:
    return [dicom_file(f"gs://b/{i:04d}.dcm", size, sop=f"1.2.3.4.{i + 1}") for i in range(n)]


def test_respects_max_count() -> None:
    batches, dead = plan(files_of(10), max_count=3)
    assert dead == []
    assert [len(b.files) for b in batches] == [3, 3, 3, 1]
    assert all(b.study_uid == STUDY for b in batches)


def test_respects_max_bytes() -> None:
    files = [dicom_file(f"f{i}", size) for i, size in enumerate([40, 50, 20, 90, 10, 10, 100])]
    batches, _ = plan(files, max_bytes=100)
    assert [[f.size for f in b.files] for b in batches] == [[40, 50], [20], [90, 10], [10], [100]]
    assert all(b.nbytes <= 100 for b in batches)


def test_both_bounds_together() -> None:
    batches, _ = plan(files_of(9, size=30), max_count=4, max_bytes=100)
    assert [len(b.files) for b in batches] == [3, 3, 3]  # bytes bind before the count


def test_a_file_larger_than_max_bytes_goes_alone() -> None:
    files = [dicom_file("a", 10), dicom_file("b", 10), dicom_file("c", 500), dicom_file("d", 10)]
    batches, dead = plan(files, max_bytes=100)
    assert dead == []
    assert [[f.path for f in b.files] for b in batches] == [["a", "b"], ["c"], ["d"]]


def test_only_big_files() -> None:
    batches, _ = plan([dicom_file(p, 1000) for p in "abc"], max_bytes=1)
    assert [[f.path for f in b.files] for b in batches] == [["a"], ["b"], ["c"]]


def test_order_is_deterministic_whatever_the_input_order() -> None:
    files = files_of(25, size=37)
    expected = plan(files, max_count=4, max_bytes=200)
    for seed in range(5):
        shuffled = list(files)
        random.Random(seed).shuffle(shuffled)
        assert plan(shuffled, max_count=4, max_bytes=200) == expected
    paths = [f.path for b in expected[0] for f in b.files]
    assert paths == sorted(paths)


def test_duplicates_keep_the_lexicographically_first_path() -> None:
    files = [
        dicom_file("gs://b/z.dcm", sop="1.9"),
        dicom_file("gs://b/a.dcm", sop="1.9"),
        dicom_file("gs://b/m.dcm", sop="1.9"),
        dicom_file("gs://b/other.dcm", sop="1.8"),
    ]
    for order in (files, files[::-1]):
        batches, dead = plan(order)
        kept = [f.path for b in batches for f in b.files]
        assert kept == ["gs://b/a.dcm", "gs://b/other.dcm"]
        assert sorted(d.source for d in dead) == ["gs://b/m.dcm", "gs://b/z.dcm"]
        for d in dead:
            assert d.reason == "duplicate_input"
            assert d.stage == "store"
            assert d.uids == InstanceUids(STUDY, "1.2.3.4", "1.9")
            assert "gs://b/a.dcm" in d.message
            assert d.http_status is None and d.attempts == 0


def test_every_input_appears_exactly_once() -> None:
    rng = random.Random(42)
    files = [
        dicom_file(f"f{i:03d}", rng.randint(1, 500), sop=f"1.2.{rng.randint(1, 120)}")
        for i in range(200)
    ]
    batches, dead = plan(files, max_count=7, max_bytes=1000)
    seen = [f.path for b in batches for f in b.files] + [d.source for d in dead]
    assert sorted(seen) == sorted(f.path for f in files)
    sops = [f.uids.sop for b in batches for f in b.files]
    assert len(sops) == len(set(sops)) == len({f.uids.sop for f in files})
    for b in batches:
        assert 1 <= len(b.files) <= 7
        assert b.nbytes <= 1000 or len(b.files) == 1


def test_no_files_no_batches() -> None:
    assert plan([]) == ([], [])


@pytest.mark.parametrize(("max_count", "max_bytes"), [(0, 10), (10, 0), (-1, 10), (10, -5)])
def test_invalid_bounds_raise(max_count: int, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        list(plan_study(STUDY, files_of(3), max_count=max_count, max_bytes=max_bytes))


def test_batches_are_hashable_records() -> None:
    batches, _ = plan(files_of(3), max_count=2)
    assert len(set(batches)) == 2
    assert batches[0].nbytes == 200


# --- duplicates by content (store hardening) -------------------------------------------------


def test_byte_identical_copies_ride_with_their_twin_and_different_bytes_conflict() -> None:
    files = [
        dicom_file("b/copy.dcm", sop="1.9"),
        dicom_file("a/orig.dcm", sop="1.9"),
        dicom_file("c/edited.dcm", sop="1.9"),
        dicom_file("d/other.dcm", sop="1.8"),
    ]
    content = {"a/orig.dcm": "h1", "b/copy.dcm": "h1", "c/edited.dcm": "h2"}
    hashed: list[str] = []

    def content_hash(f: DicomFile) -> str:
        hashed.append(f.path)
        return content[f.path]

    items = list(plan_study(STUDY, files, max_count=10, max_bytes=10**9, content_hash=content_hash))
    (letter,) = [i for i in items if isinstance(i, DeadLetter)]
    assert (letter.source, letter.reason) == ("c/edited.dcm", "conflicting_duplicate")
    assert "a/orig.dcm" in letter.message
    (batch,) = [i for i in items if isinstance(i, StowBatch)]
    assert [f.path for f in batch.files] == ["a/orig.dcm", "d/other.dcm"]
    assert [(twin, d.path) for twin, d in batch.duplicates] == [("a/orig.dcm", "b/copy.dcm")]
    assert sorted(hashed) == ["a/orig.dcm", "b/copy.dcm", "c/edited.dcm"]  # only repeats


def test_the_same_path_twice_is_one_input() -> None:
    f = dicom_file("a.dcm", sop="1.9")
    deduped = dedupe_study([f, f], content_hash=lambda _: 1 / 0)  # type: ignore[arg-type,return-value]
    assert deduped.kept == [f] and not deduped.letters and not deduped.twins
