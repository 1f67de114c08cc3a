"""Write a PCollection of text lines as ``PREFIX/NAME-SSSSS-of-NNNNN.jsonl`` shards.

A name with a suffix of its own (``results.csv``) gives ``PREFIX/results-SSSSS-of-NNNNN.csv``.

    lines | WriteLines("/tmp/run1", "stored")

What ``beam.io.WriteToText`` does for a job's result files, with a smaller graph (it is a fifth
of a small job's graph construction and run): each bundle writes one temporary file under
``PREFIX/.temp-NAME-<id>/``; the paths of the committed bundles are gathered on one key, and the
last step renames them into their shard names and deletes the temporary folder. A bundle that
is retried leaves an orphan temporary file that is never renamed (exactly once) and is deleted
with the folder. Nothing is written for an empty collection.

The shards of a name are this run's only: shards of the same name an earlier run left under the
prefix (``NAME-SSSSS-of-NNNNN.jsonl`` with another count, or all of them when this run has no
line of that name) are deleted once this run's are in place. Without it a re-run (a resumed
retrieve, a repeated delete) left, say, ``dead_letter-00000-of-00001.jsonl`` of the first run
beside a clean second run, and the README's globs read both runs' lines.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

_log = logging.getLogger(__name__)


class _WriteBundleFn(beam.DoFn):
    def __init__(
        self,
        temp_dir: str,
        to_line: Callable[[Any], str] | None = None,
        header: str | None = None,
    ) -> None:
        self._temp_dir = temp_dir
        self._to_line = to_line
        self._header = header  # the first line of every shard (a CSV's column names)
        self._file: object | None = None
        self._path = ""

    def start_bundle(self) -> None:
        self._file = None

    def process(self, element: Any) -> None:
        line = element if self._to_line is None else self._to_line(element)
        if self._file is None:
            self._path = FileSystems.join(self._temp_dir, uuid.uuid4().hex)
            self._file = FileSystems.create(
                self._path, mime_type="text/plain", compression_type=CompressionTypes.UNCOMPRESSED
            )
            if self._header is not None:
                self._file.write(self._header.encode("utf-8") + b"\n")
        self._file.write(line.encode("utf-8") + b"\n")  # type: ignore[attr-defined]

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._file is not None:
            self._file.close()  # type: ignore[attr-defined]
            self._file = None
            yield WindowedValue(self._path, GlobalWindow().max_timestamp(), (GlobalWindow(),))


def _finalize(
    element: tuple[str, Iterable[str | None]], prefix: str, temp_dirs: dict[str, str]
) -> list[str]:
    """Renames a name's committed bundles to its shards; deletes an earlier run's shards."""
    name, paths = element
    temp_dir = temp_dirs[name]
    # None is the marker every name gets (see _every_name): a name with no line has only it.
    temps = sorted(path for path in paths if path is not None)
    n = len(temps)
    stem, suffix = _stem_and_suffix(name)
    finals = [f"{prefix}/{stem}-{i:05d}-of-{n:05d}{suffix}" for i in range(n)]
    # A retried finalisation finds some files already renamed.
    pending = [(t, f) for t, f in zip(temps, finals, strict=True) if FileSystems.exists(t)]
    if pending:
        FileSystems.rename([t for t, _ in pending], [f for _, f in pending])
    _delete_earlier_shards(prefix, name, finals)
    # The folder, with the orphans of retried bundles ("/" makes it recursive on gs://; a local
    # folder is removed whole). Left behind, it is only clutter: never fail the job for it.
    folder = temp_dir + "/" if "://" in temp_dir else temp_dir
    try:
        if FileSystems.exists(folder):
            FileSystems.delete([folder])
    except Exception as exc:
        _log.warning("could not delete the temporary folder %s (%s)", temp_dir, type(exc).__name__)
    return finals


def _stem_and_suffix(name: str) -> tuple[str, str]:
    """``results.csv`` -> (``results``, ``.csv``); a name without a suffix is ``.jsonl``."""
    stem, dot, extension = name.partition(".")
    return (stem, dot + extension) if dot else (name, ".jsonl")


def _delete_earlier_shards(prefix: str, name: str, finals: list[str]) -> None:
    """Delete the ``NAME-SSSSS-of-NNNNN.jsonl`` shards under ``prefix`` that are not this run's."""
    stem, suffix = _stem_and_suffix(name)
    shard = re.compile(re.escape(stem) + r"-\d{5}-of-\d{5}" + re.escape(suffix))
    keep = set(finals)
    try:
        found = FileSystems.match([f"{prefix}/{stem}-*-of-*{suffix}"])[0].metadata_list
        earlier = [
            m.path
            for m in found
            if m.path not in keep and shard.fullmatch(m.path.rsplit("/", 1)[-1])
        ]
        if earlier:
            _log.info("replacing %d %s shards of an earlier run in %s", len(earlier), name, prefix)
            FileSystems.delete(earlier)
    except Exception as exc:  # Beam raises BeamIOError and friends; this run's files are written
        _log.warning(
            "could not delete the %s shards of an earlier run in %s (%s): delete them by hand",
            name,
            prefix,
            type(exc).__name__,
        )


def _every_name(
    pipeline: beam.Pipeline, names: Iterable[Any], label: str
) -> beam.PCollection[tuple[Any, None]]:
    """One ``(name, None)`` marker per name: the gathering step then has a group for each name,
    also for one that has no line this run, whose earlier shards must go too."""
    return pipeline | label >> beam.Create([(name, None) for name in names])


class WriteLines(beam.PTransform):
    """Lines (str) -> shards ``PREFIX/NAME-SSSSS-of-NNNNN.jsonl``; outputs the shard paths.

    ``to_line`` turns each element into its line in the same step (records -> JSON without a
    Map of their own: one step less per element). One name of ``WriteLineFiles``.
    """

    def __init__(self, prefix: str, name: str, to_line: Callable[[Any], str] | None = None) -> None:
        super().__init__()
        self._prefix = prefix
        self._name = name
        self._to_line = to_line

    def expand(self, lines: beam.PCollection) -> beam.PCollection:
        return {self._name: lines} | WriteLineFiles(self._prefix, to_line=self._to_line)


class _NamedWriteBundleFn(_WriteBundleFn):
    """``_WriteBundleFn`` whose temporary paths come out keyed by their file name."""

    def __init__(
        self,
        name: str,
        temp_dir: str,
        to_line: Callable[[Any], str] | None,
        header: str | None = None,
    ) -> None:
        super().__init__(temp_dir, to_line, header)
        self._name = name

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for path in super().finish_bundle():
            yield path.with_value((self._name, path.value))


class WriteLineFiles(beam.PTransform):
    """``{name: PCollection}`` -> shards ``PREFIX/NAME-SSSSS-of-NNNNN.jsonl`` for each name, as
    ``WriteLines`` writes them, with one gathering and renaming step for all the names (each
    step costs a runner a fixed time per job). Outputs the shard paths.

        {"stored": stored, "dead_letter": failed} | WriteLineFiles(prefix, to_line=to_json)

    ``headers`` gives a name the first line of each of its shards (``{"results.csv": "a,b"}``).
    """

    def __init__(
        self,
        prefix: str,
        to_line: Callable[[Any], str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self._prefix = prefix.rstrip("/")
        self._to_line = to_line
        self._headers = dict(headers or {})
        self._id = uuid.uuid4().hex

    def expand(self, named: dict[str, beam.PCollection]) -> beam.PCollection:
        temp_dirs = {name: f"{self._prefix}/.temp-{name}-{self._id}" for name in named}
        paths = tuple(
            lines
            | f"Write_{name}"
            >> beam.ParDo(
                _NamedWriteBundleFn(name, temp_dirs[name], self._to_line, self._headers.get(name))
            )
            for name, lines in named.items()
        )
        markers = _every_name(next(iter(named.values())).pipeline, named, "Markers")
        return (
            (*paths, markers)
            | "Paths" >> beam.Flatten()
            | "Gather" >> beam.GroupByKey()
            | "Rename" >> beam.FlatMap(_finalize, prefix=self._prefix, temp_dirs=temp_dirs)
        )
