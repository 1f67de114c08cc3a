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
from collections.abc import Iterable, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata

from transforms import metrics
from transforms.dead_letter import DeadLetter, Reason, Stage
from transforms.dicom.peek import peek_dicom
from transforms.errors import InvalidInputError, describe_exception
from transforms.files import open_source
from transforms.results import ReadResult

FAILED_TAG = "failed"


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


class _PeekFn(beam.DoFn):
    def setup(self) -> None:
        # pydicom warns about odd headers quoting element values; values may be patient data.
        logging.getLogger("pydicom").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"pydicom\..*")

    def process(self, metadata: FileMetadata) -> Iterable[object]:
        path, size = metadata.path, metadata.size_in_bytes
        try:
            with open_source(path) as stream:
                dicom_file = peek_dicom(stream, path=path, size=size)
        except InvalidInputError as exc:
            yield _failed(path, exc.reason, exc.message)
            return
        except Exception as exc:  # the boundary: one file, never the bundle
            if _is_missing(exc):
                why = getattr(exc, "strerror", None) or type(exc).__name__
                yield _failed(path, Reason.UNREADABLE, f"cannot read the file ({why})")
            else:
                yield _failed(path, Reason.INTERNAL_ERROR, describe_exception(exc))
            return
        metrics.inc(metrics.FILES_VALID)
        yield dicom_file


def _first_of_path(element: tuple[str, Iterable[FileMetadata]]) -> FileMetadata:
    metrics.inc(metrics.FILES_MATCHED)
    return next(iter(element[1]))


def _failed(path: str, reason: str, message: str) -> beam.pvalue.TaggedOutput:
    letter = DeadLetter(stage=Stage.VALIDATE, source=path, reason=reason, message=message)
    metrics.count_dead_letter(letter)
    return beam.pvalue.TaggedOutput(FAILED_TAG, letter)


class ReadAllDicomFiles(beam.PTransform):
    """Patterns (PCollection of str) -> ``ReadResult(files, failed)``."""

    def expand(self, patterns: beam.PCollection) -> ReadResult:
        outputs = (
            patterns
            | "ExpandGlobstar" >> beam.FlatMap(expand_globstar)
            | "MatchPatterns"
            >> fileio.MatchAll(empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
            # One input per path, however many patterns matched it. The shuffle also spreads
            # the paths (matching yields all of a pattern's paths from one element).
            | "KeyByPath" >> beam.Map(lambda m: (m.path, m))
            | "GroupByPath" >> beam.GroupByKey()
            | "OnePerPath" >> beam.Map(_first_of_path)
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
        return pbegin | "Patterns" >> beam.Create(self._patterns) | ReadAllDicomFiles()
