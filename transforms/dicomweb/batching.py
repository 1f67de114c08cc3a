"""Split one study's files into STOW batches bounded by count and bytes. No Beam here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from transforms.dead_letter import DeadLetter, Reason, Stage
from transforms.records import DicomFile, StowBatch


def plan_study(
    study_uid: str, files: Iterable[DicomFile], *, max_count: int, max_bytes: int
) -> Iterator[StowBatch | DeadLetter]:
    """Batches of at most ``max_count`` files and ``max_bytes`` bytes (a bigger file goes alone).

    Files repeating a SOP Instance UID already seen are dead-lettered (``duplicate_input``): the
    lexicographically first path is kept, so the choice is the same on every run.
    """
    if max_count < 1 or max_bytes < 1:
        raise ValueError("max_count and max_bytes must be positive")
    kept: dict[str, DicomFile] = {}
    duplicates: list[DicomFile] = []
    for f in sorted(files, key=lambda f: f.path):
        if f.uids.sop in kept:
            duplicates.append(f)
        else:
            kept[f.uids.sop] = f
    for f in duplicates:
        yield DeadLetter(
            stage=Stage.STORE,
            source=f.path,
            reason=Reason.DUPLICATE_INPUT,
            message="another input has the same SOP Instance UID and is sent instead (see its "
            f"own outcome): {kept[f.uids.sop].path}",
            uids=f.uids,
        )
    batch: list[DicomFile] = []
    size = 0
    for f in kept.values():
        if batch and (len(batch) >= max_count or size + f.size > max_bytes):
            yield StowBatch(study_uid, tuple(batch))
            batch, size = [], 0
        batch.append(f)
        size += f.size
    if batch:
        yield StowBatch(study_uid, tuple(batch))
