"""Read DICOM files from glob patterns and validate their headers.

    result = p | ReadDicomFiles(["/data/**/*.dcm", "gs://bucket/study/*"])
    result.files   # DicomFile: validated, with UIDs, size and transfer syntax
    result.failed  # DeadLetter: not DICOM, truncated, missing or invalid UIDs, unreadable

Patterns may also arrive as elements: ``patterns | ReadAllDicomFiles()``. Only headers are read,
so validating a 1 GB instance reads a few kilobytes. A path matched by several patterns is one
input; ``dir/**/x`` also matches ``dir/x`` (``expand_globstar``). Whatever goes wrong reading one
file (even an exception nobody expected) is a dead letter for that file, never a failed bundle.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import metrics
from transforms.dead_letter import DeadLetter, Reason, Stage
from transforms.dicom.peek import peek_dicom
from transforms.errors import InvalidInputError, describe_exception
from transforms.files import open_source
from transforms.records import DicomFile
from transforms.results import ReadResult
from transforms.spread import Spread

FAILED_TAG = "failed"
# Paths per element between matching and the header peek: Beam's cost per element (encoding,
# a shuffle, a step) is paid once per chunk instead of once per file.
CHUNK_SIZE = 100


def expand_globstar(pattern: str) -> list[str]:
    """``pattern`` plus its variants with each ``/**/`` taken as ``/``.

    Beam's ``**`` needs at least one directory level, so ``dir/**/*.dcm`` alone misses
    ``dir/a.dcm``; most users (and shells with globstar) expect it to match.
    """
    out = [pattern]
    for current in out:  # grows while iterated: every combination, each once
        start = 0
        while (i := current.find("/**/", start)) >= 0:
            variant = current[:i] + current[i + 3 :]
            if variant not in out:
                out.append(variant)
            start = i + 1
    return out


def _is_missing(exc: BaseException) -> bool:
    # gs:// raises google.api_core's NotFound (not an OSError) when the object is gone.
    return isinstance(exc, OSError) or type(exc).__name__ in ("NotFound", "BeamIOError")


class _MatchFn(beam.DoFn):
    """Every pattern at once -> chunks of the distinct paths they match, in path order.

    One input per path, however many patterns matched it, decided here before anything else.
    What is held is the list of matches, as ``FileSystems.match`` returns it for one pattern.
    """

    def __init__(self, chunk_size: int) -> None:
        self._chunk_size = chunk_size

    def process(self, patterns: Iterable[str]) -> Iterator[list[tuple[str, int]]]:
        # (path, size) tuples, not FileMetadata: Beam encodes tuples natively, but pickles
        # every FileMetadata at every stage boundary.
        found: dict[str, int] = {}
        for pattern in patterns:
            for variant in expand_globstar(pattern):
                for match in FileSystems.match([variant]):
                    for metadata in match.metadata_list:
                        found.setdefault(metadata.path, metadata.size_in_bytes)
        paths = sorted(found)
        for i in range(0, len(paths), self._chunk_size):
            yield [(p, found[p]) for p in paths[i : i + self._chunk_size]]


class _PeekFn(beam.DoFn):
    """A chunk of matched files -> one ``DicomFile`` or dead letter per file."""

    def setup(self) -> None:
        # pydicom warns about odd headers quoting element values; values may be patient data.
        logging.getLogger("pydicom").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"pydicom\..*")

    def process(self, chunk: list[tuple[str, int]]) -> Iterable[object]:
        valid = 0
        for path, size in chunk:
            out = _peek_one(path, size)
            valid += isinstance(out, DicomFile)
            yield out
        metrics.inc(metrics.FILES_MATCHED, len(chunk))
        metrics.inc(metrics.FILES_VALID, valid)


def _peek_one(path: str, size: int) -> DicomFile | beam.pvalue.TaggedOutput:
    try:
        with open_source(path) as stream:
            return peek_dicom(stream, path=path, size=size)
    except InvalidInputError as exc:
        return _failed(path, exc.reason, exc.message)
    except Exception as exc:  # the boundary: one file, never the bundle
        if _is_missing(exc):
            why = getattr(exc, "strerror", None) or type(exc).__name__
            return _failed(path, Reason.UNREADABLE, f"cannot read the file ({why})")
        return _failed(path, Reason.INTERNAL_ERROR, describe_exception(exc))


def _failed(path: str, reason: str, message: str) -> beam.pvalue.TaggedOutput:
    letter = DeadLetter(stage=Stage.VALIDATE, source=path, reason=reason, message=message)
    metrics.count_dead_letter(letter)
    return beam.pvalue.TaggedOutput(FAILED_TAG, letter)


class ReadAllDicomFiles(beam.PTransform):
    """Patterns (PCollection of str) -> ``ReadResult(files, failed)``."""

    def expand(self, patterns: beam.PCollection) -> ReadResult:
        # All patterns in one element, so that a path matched by several is one input.
        gathered = (
            patterns
            | "KeyPatterns" >> beam.Map(lambda p: (0, p))
            | "GatherPatterns" >> beam.GroupByKey()
            | "PatternList" >> beam.Map(lambda kv: sorted(kv[1]))
        )
        return gathered | _ReadPatternLists()


class _ReadPatternLists(beam.PTransform):
    """Lists of patterns (each list: one set of inputs) -> ``ReadResult(files, failed)``."""

    def expand(self, pattern_lists: beam.PCollection) -> ReadResult:
        outputs = (
            pattern_lists
            | "MatchPatterns" >> beam.ParDo(_MatchFn(CHUNK_SIZE))
            # Matching yields every chunk from one element: spread them over the workers.
            | "SpreadChunks" >> Spread()
            | "PeekHeaders" >> beam.ParDo(_PeekFn()).with_outputs(FAILED_TAG, main="files")
        )
        return ReadResult(files=outputs.files, failed=outputs[FAILED_TAG])


class ReadDicomFiles(beam.PTransform):
    """Glob patterns given at construction -> ``ReadResult(files, failed)``.

    Args:
      patterns: local or gs:// glob patterns; ``**`` matches across directories.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        super().__init__()
        if isinstance(patterns, str):
            patterns = [patterns]
        if not patterns:
            raise ValueError("at least one input pattern is needed")
        self._patterns = list(patterns)

    def expand(self, pbegin: beam.pvalue.PBegin) -> ReadResult:
        # One element holding every pattern: no grouping needed to match each path once.
        return pbegin | "Patterns" >> beam.Create([self._patterns]) | _ReadPatternLists()
