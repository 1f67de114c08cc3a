"""Split one study's files into STOW batches bounded by count and bytes. No Beam here.

Inputs sharing a SOP Instance UID are resolved first (``dedupe_study``): the first by path is
the one sent; a copy with the same bytes rides along with it in its batch and gets its outcome
(``duplicate_of``); a file with other bytes is a ``conflicting_duplicate`` dead letter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from transforms.dead_letter import DeadLetter, Reason, Stage
from transforms.records import DicomFile, StowBatch

ContentHash = Callable[[DicomFile], str]


@dataclass
class Deduped:
    """One study's inputs after resolving repeated SOP Instance UIDs."""

    kept: list[DicomFile] = field(default_factory=list)  # sorted by path, one per SOP UID
    twins: dict[str, list[DicomFile]] = field(default_factory=dict)  # kept path -> same bytes
    letters: list[DeadLetter] = field(default_factory=list)


def dedupe_study(files: Iterable[DicomFile], content_hash: ContentHash | None = None) -> Deduped:
    """Resolve inputs repeating a SOP Instance UID; the first by path wins on every run.

    ``content_hash`` (e.g. a SHA-256 of the bytes sent) is only called for files whose SOP
    Instance UID repeats. Without it, repeats are dead letters ``duplicate_input``.
    """
    out = Deduped()
    by_sop: dict[str, DicomFile] = {}
    hashes: dict[str, str] = {}
    for f in sorted(files, key=lambda f: f.path):
        first = by_sop.get(f.uids.sop)
        if first is None:
            by_sop[f.uids.sop] = f
            out.kept.append(f)
            continue
        if first.path == f.path:
            continue  # the same file matched twice: one input
        if content_hash is None:
            out.letters.append(
                _letter(
                    f,
                    Reason.DUPLICATE_INPUT,
                    "another input has the same SOP Instance UID",
                    first.path,
                )
            )
            continue
        if first.path not in hashes:
            hashes[first.path] = content_hash(first)
        if content_hash(f) == hashes[first.path]:
            out.twins.setdefault(first.path, []).append(f)
        else:
            out.letters.append(
                _letter(
                    f,
                    Reason.CONFLICTING_DUPLICATE,
                    "another input has the same SOP Instance UID but different bytes",
                    first.path,
                )
            )
    return out


def _letter(f: DicomFile, reason: str, why: str, sent: str) -> DeadLetter:
    return DeadLetter(
        stage=Stage.STORE,
        source=f.path,
        reason=reason,
        message=f"{why}; it is sent instead (see its own outcome): {sent}",
        uids=f.uids,
    )


def batch_files(
    study_uid: str,
    files: Sequence[DicomFile],
    *,
    max_count: int,
    max_bytes: int,
    twins: dict[str, list[DicomFile]] | None = None,
) -> Iterator[StowBatch]:
    """Batches of at most ``max_count`` files and ``max_bytes`` bytes (a bigger file goes alone)."""
    if max_count < 1 or max_bytes < 1:
        raise ValueError("max_count and max_bytes must be positive")
    twins = twins or {}
    batch: list[DicomFile] = []
    size = 0

    def make() -> StowBatch:
        dups = tuple((f.path, d) for f in batch for d in twins.get(f.path, ()))
        return StowBatch(study_uid, tuple(batch), dups)

    for f in files:
        if batch and (len(batch) >= max_count or size + f.size > max_bytes):
            yield make()
            batch, size = [], 0
        batch.append(f)
        size += f.size
    if batch:
        yield make()


def plan_study(
    study_uid: str,
    files: Iterable[DicomFile],
    *,
    max_count: int,
    max_bytes: int,
    content_hash: ContentHash | None = None,
) -> Iterator[StowBatch | DeadLetter]:
    """``dedupe_study`` then ``batch_files``: dead letters first, then the batches."""
    if max_count < 1 or max_bytes < 1:
        raise ValueError("max_count and max_bytes must be positive")
    deduped = dedupe_study(files, content_hash)
    yield from deduped.letters
    yield from batch_files(
        study_uid, deduped.kept, max_count=max_count, max_bytes=max_bytes, twins=deduped.twins
    )
