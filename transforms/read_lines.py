"""Read the lines of small text inputs (a --uids_file, an earlier manifest) in one step.

    lines = pipeline | ReadLines("/runs/1/retrieved-*.jsonl")

What ``beam.io.ReadFromText`` gives for these inputs, with a smaller graph: every file the
pattern matches is read whole by one step, line by line (UTF-8, the line end removed, ``.gz``
and ``.bz2`` decompressed by their extension as ``ReadFromText`` does). ``ReadFromText`` splits
files over workers, which costs several steps and a shuffle at the start of every job (about
50 ms of a small job on the in-process runner); a list of UIDs needs no splitting, since each
job spreads its targets over workers right after selecting them. A pattern that matches
nothing gives no lines, as ``ReadFromText`` with ``validate=False``.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def read_lines(pattern: str) -> Iterator[str]:
    """The lines of every file ``pattern`` matches, in path order, without their line ends."""
    matched = FileSystems.match([pattern])[0].metadata_list
    for path in sorted(m.path for m in matched):
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as f:
            # readline, not iteration: Beam's decompressing reader is not iterable.
            while raw := f.readline():
                yield raw.decode("utf-8").rstrip("\r\n")


class ReadLines(beam.PTransform):
    """str lines of the files a pattern matches (local or any Beam filesystem)."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin | "Pattern" >> beam.Create([self._pattern]) | "Lines" >> beam.FlatMap(read_lines)
        )
