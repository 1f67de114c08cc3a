"""Find JSON metadata + JPEG pairs and validate them, before any request is made.

    result = p | ReadJsonJpegPairs(["/photos/**/*.json"], options=BuildOptions(...))
    result.pairs   # PreparedInstance: metadata checked and completed, UIDs known
    result.failed  # DeadLetter: no JPEG, a JPEG claimed twice, not a JPEG, bad metadata, ...

Pairing (JSON mode): each ``*.json`` file holds one DICOM JSON dataset. Its JPEG is the
``BulkDataURI`` of PixelData resolved relative to the JSON file (``jpeg-image``, as in Google's
template, means a sibling ``jpeg-image`` or ``jpeg-image.jpg``), else a sibling with the same
stem (``.jpg``/``.jpeg``). A JPEG claimed by several JSON files is a dead letter for each.

Template mode (``template`` given): every matched image is paired with the template, overlaid by
its row of ``metadata_csv`` (keyed by the image's base name). Images without a row and rows
without an image are dead letters.

Then each pair is validated (``transforms.dicom.build.prepare``) and SOP Instance UIDs are made
unique: a UID repeated by several pairs is kept for the first source (by path) only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import posixpath
import stat
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import metrics
from transforms.dead_letter import DeadLetter, Reason, Stage
from transforms.dicom import metadata_csv
from transforms.dicom.build import (
    BuildOptions,
    PairRow,
    PreparedInstance,
    from_row,
    json_digest,
    load_dicom_json,
    pixel_data_uri,
    prepare,
    slim,
    to_row,
)
from transforms.dicom.jpeg import read_jpeg_info
from transforms.errors import InvalidInputError
from transforms.files import open_source
from transforms.results import PairsResult

FAILED_TAG = "failed"
JPEG_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")
_NOT_IMAGES = (".json", ".csv")
_READ_BLOCK = 1 << 20
CHUNK_SIZE = 100  # JSON files a chunk (what crosses the first grouping)
_STUDY_FIELD = 4  # of a PairRow (``to_row``)


@dataclass(frozen=True)
class _Candidate:
    """A paired input before validation; ``metadata`` is DICOM JSON text (internal only)."""

    source: str
    json_path: str | None
    jpeg_path: str
    metadata: str
    json_digest: str = ""  # of the JSON file's bytes (JSON mode)
    elements: dict[str, Any] | None = field(default=None, compare=False)  # metadata, parsed
    jpeg_size: int | None = None  # known when the JPEG was found


def _dead(source: str, reason: str, message: str, stage: str = Stage.PAIR) -> DeadLetter:
    letter = DeadLetter(stage=stage, source=source, reason=reason, message=message)
    metrics.count_dead_letter(letter)
    return letter


def _letter(source: str, reason: str, message: str) -> DeadLetter:
    return DeadLetter(stage=Stage.VALIDATE, source=source, reason=reason, message=message)


def _failed(source: str, reason: str, message: str, stage: str = Stage.PAIR) -> Any:
    return beam.pvalue.TaggedOutput(FAILED_TAG, _dead(source, reason, message, stage))


def _is_remote(path: str) -> bool:
    return "://" in path


def _dirname(path: str) -> str:
    return posixpath.dirname(path) if _is_remote(path) else os.path.dirname(path)


def _basename(path: str) -> str:
    return posixpath.basename(path) if _is_remote(path) else os.path.basename(path)


def _exists(path: str) -> bool:
    if _is_remote(path):
        return bool(FileSystems.exists(path))
    return os.path.isfile(path)


def _file_size(path: str) -> int | None:
    """The size of the file at ``path``, None when there is none (one stat for a local path)."""
    if _is_remote(path):
        return _size(path) if _exists(path) else None
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _size(path: str) -> int:
    if _is_remote(path):
        return int(FileSystems.match([path])[0].metadata_list[0].size_in_bytes)
    return os.path.getsize(path)


def jpeg_candidates(json_path: str, uri: str | None) -> list[str]:
    """Where the JPEG of ``json_path`` may be, in order (see the module docstring)."""
    folder = _dirname(json_path)
    join = posixpath.join if _is_remote(json_path) else os.path.join
    out: list[str] = []
    if uri:
        if uri.startswith("file://"):
            uri = uri[len("file://") :]
        if _is_remote(uri) or os.path.isabs(uri):
            target = uri
        else:
            target = join(folder, uri)
            target = target if _is_remote(target) else os.path.normpath(target)
        out.append(target)
        if not os.path.splitext(uri)[1]:
            out.append(target + ".jpg")
    stem = os.path.splitext(json_path)[0]
    out += [stem + suffix for suffix in JPEG_SUFFIXES]
    return list(dict.fromkeys(out))


class _LocateJpegFn(beam.DoFn):
    """A chunk of JSON files -> (JPEG path, pair row or DeadLetter) for each, or a dead letter.

    Validation happens here, before the JPEGs' claims are counted, to save a step per pair; a
    claim conflict still wins over a validation failure (see ``_ClaimFn``).
    """

    def __init__(self, options: BuildOptions) -> None:
        self._validate = _ValidateFn(options)

    def setup(self) -> None:
        self._validate.setup()

    def process(self, element: tuple[int, Iterable[Sequence[str]]]) -> Iterator[Any]:
        for chunk in element[1]:
            for path in chunk:
                try:
                    yield from self._locate(path)
                except Exception as exc:  # e.g. a remote filesystem failing: this file only
                    why = f"unexpected {type(exc).__name__} pairing it"
                    yield _failed(path, Reason.UNREADABLE, why)

    def _locate(self, path: str) -> Iterator[Any]:
        try:
            with open_source(path) as stream:
                data = stream.read()
            text = data.decode("utf-8-sig")  # a BOM is tolerated
            elements = load_dicom_json(text)
            uri = pixel_data_uri(elements)
        except InvalidInputError as exc:
            yield _failed(path, exc.reason, exc.message, Stage.VALIDATE)
            return
        except UnicodeDecodeError:
            yield _failed(path, Reason.NOT_DICOM_JSON, "the JSON file is not UTF-8 text")
            return
        except OSError as exc:
            yield _failed(path, Reason.UNREADABLE, f"cannot read the file ({exc.strerror})")
            return
        if uri and _is_remote(uri) and not uri.startswith(("gs://", "file://")):
            yield _failed(path, Reason.MISSING_JPEG, "PixelData's BulkDataURI is not a file path")
            return
        tried = jpeg_candidates(path, uri)
        for candidate in tried:
            size = _file_size(candidate)
            if size is not None:
                found = _Candidate(path, path, candidate, text, json_digest(data), elements, size)
                checked = self._validate.check(found)
                yield (
                    candidate,
                    to_row(checked) if isinstance(checked, PreparedInstance) else checked,
                )
                return
        names = ", ".join(_basename(t) for t in tried)
        yield _failed(path, Reason.MISSING_JPEG, f"no JPEG found for this JSON (tried {names})")


class _ClaimFn(beam.DoFn):
    """A JPEG with exactly one JSON file is a pair; several JSON files are all dead letters.

    Pairs come in as rows (``to_row``) and go out as ``PreparedInstance``, or, ``keyed``, as
    the rows themselves keyed by study (what ``StoreJsonJpegPairs(keyed=True)`` groups: no
    decoding here, and no keying step after)."""

    def __init__(self, keyed: bool = False) -> None:
        self._keyed = keyed
        self._valid = 0

    def start_bundle(self) -> None:
        self._valid = 0

    def process(self, element: tuple[str, Iterable[PairRow | DeadLetter]]) -> Iterator[Any]:
        jpeg, claims = element
        # A JSON matched by two overlapping patterns claims its JPEG once.
        by_source = {c.source if isinstance(c, DeadLetter) else c[0]: c for c in claims}
        if len(by_source) == 1:
            (only,) = by_source.values()
            if isinstance(only, DeadLetter):
                metrics.count_dead_letter(only)
                yield beam.pvalue.TaggedOutput(FAILED_TAG, only)
            else:
                self._valid += 1
                yield (only[_STUDY_FIELD], only) if self._keyed else from_row(only)
            return
        sources = sorted(by_source)
        others = len(sources) - 1
        for source in sources:
            yield _failed(
                source,
                Reason.JPEG_CLAIMED_TWICE,
                f"{_basename(jpeg)} is also claimed by {others} other JSON file(s), e.g. "
                f"{next(o for o in sources if o != source)}; give each JSON its own JPEG",
            )

    def finish_bundle(self) -> None:
        # Counted once a bundle: a counter update per pair costs as much as a small step.
        metrics.inc(metrics.PAIRS_VALID, self._valid)
        self._valid = 0


class _MatchFn(beam.DoFn):
    """Impulse -> each file matched by the patterns, once: ``(n, chunk of JSON paths)`` (the
    grouping that follows spreads the chunks; a chunk crosses it as one element, not one per
    file), or ``(base name, path)`` for images (template mode)."""

    def __init__(self, patterns: Sequence[str], template_mode: bool) -> None:
        self._patterns = list(patterns)
        self._template_mode = template_mode

    def process(self, _: bytes) -> Iterator[Any]:
        seen: set[str] = set()  # overlapping patterns match a file twice
        json_paths: list[str] = []
        for pattern in self._patterns:
            try:
                matched = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
            except Exception as exc:  # a pattern that cannot be listed: that pattern only
                why = f"cannot list the files of this pattern ({type(exc).__name__})"
                yield _failed(pattern, Reason.UNREADABLE, why)
                continue
            for path in matched:
                if path in seen:
                    continue
                seen.add(path)
                if self._template_mode:
                    if _is_image(path):
                        yield _basename(path), path
                elif _is_json(path):
                    json_paths.append(path)
        json_paths.sort()
        for n, start in enumerate(range(0, len(json_paths), CHUNK_SIZE)):
            yield n, tuple(json_paths[start : start + CHUNK_SIZE])


class _ReadCsvFn(beam.DoFn):
    """CSV path -> (file name, (line, cells)) per data row."""

    def process(self, path: str) -> Iterator[Any]:
        try:
            with open_source(path) as stream:
                text = stream.read().decode("utf-8-sig")
            rows = list(metadata_csv.read_rows(text))
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
            yield _failed(path, Reason.UNREADABLE, f"cannot read the metadata CSV ({exc})")
            return
        except Exception as exc:  # a remote filesystem failing, ...
            why = f"cannot read the metadata CSV ({type(exc).__name__})"
            yield _failed(path, Reason.UNREADABLE, why)
            return
        for line, name, cells in rows:
            yield name, (line, cells)


class _MatchRowsFn(beam.DoFn):
    """(name, {images, rows}) -> candidates with the template (plus the row), or dead letters."""

    def __init__(self, template: Mapping[str, Any], csv_path: str | None) -> None:
        self._template = dict(template)
        self._csv = csv_path

    def process(self, element: tuple[str, Mapping[str, Iterable[Any]]]) -> Iterator[Any]:
        name, groups = element
        images = sorted(set(groups["images"]))  # overlapping patterns match a file twice
        rows = sorted(groups["rows"], key=lambda r: r[0])
        if self._csv is None:
            for image in images:
                yield _Candidate(image, None, image, json.dumps(self._template))
            return
        if not images:
            for line, _ in rows:
                yield _failed(
                    self._csv,
                    Reason.MISSING_JPEG,
                    f"line {line} of the metadata CSV names {name!r}, which no input image is",
                )
            return
        if len(images) > 1 or len(rows) > 1:
            why = (
                f"{len(images)} input images are named {name!r}"
                if len(images) > 1
                else f"lines {', '.join(str(r[0]) for r in rows)} of the metadata CSV name it"
            )
            for image in images:
                yield _failed(image, Reason.DUPLICATE_INPUT, f"ambiguous metadata: {why}")
            return
        (image,) = images
        if not rows:
            yield _failed(image, Reason.MISSING_METADATA, f"no row of the metadata CSV for {name}")
            return
        try:
            elements = metadata_csv.row_elements(rows[0][1])
        except InvalidInputError as exc:
            yield _failed(image, exc.reason, f"line {rows[0][0]}: {exc.message}", Stage.VALIDATE)
            return
        merged = metadata_csv.merge(self._template, elements)
        yield _Candidate(image, None, image, json.dumps(merged))


class _ValidateFn(beam.DoFn):
    """Candidate -> PreparedInstance (metadata checked against the JPEG), or a dead letter."""

    def __init__(self, options: BuildOptions) -> None:
        self._options = options

    def setup(self) -> None:
        # pydicom's messages quote values, which may be patient data.
        logging.getLogger("pydicom").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"pydicom\..*")

    def process(self, c: _Candidate) -> Iterator[Any]:
        result = self.check(c)
        if isinstance(result, DeadLetter):
            metrics.count_dead_letter(result)
            yield beam.pvalue.TaggedOutput(FAILED_TAG, result)
        else:
            metrics.inc(metrics.PAIRS_VALID)
            yield result

    def check(self, c: _Candidate) -> PreparedInstance | DeadLetter:
        """The prepared pair (``slim``: it crosses groupings), or its dead letter (not yet
        counted)."""
        try:
            pair = self._prepare(c)
            return pair if pair.is_slim else slim(pair)
        except InvalidInputError as exc:
            return _letter(c.source, exc.reason, exc.message)
        except OSError as exc:
            why = f"cannot read {_basename(c.jpeg_path)} ({exc.strerror})"
            return _letter(c.source, Reason.UNREADABLE, why)
        except Exception as exc:  # never fail the bundle for one odd input
            why = f"unexpected {type(exc).__name__} validating it"
            return _letter(c.source, Reason.NOT_DICOM_JSON, why)

    def _prepare(self, c: _Candidate) -> PreparedInstance:
        size = _size(c.jpeg_path) if c.jpeg_size is None else c.jpeg_size
        with open_source(c.jpeg_path) as stream:
            info = read_jpeg_info(stream, size)
        metadata = c.elements if c.elements is not None else load_dicom_json(c.metadata)
        digest = ""
        if self._options.generate_uids:
            digest = _digest(c.metadata, c.jpeg_path)
        return prepare(
            metadata,
            info,
            self._options,
            source=c.source,
            json_path=c.json_path,
            jpeg_path=c.jpeg_path,
            jpeg_size=size,
            folder=_dirname(c.source),
            content_digest=digest,
            json_digest=c.json_digest,
            slim=True,  # what crosses the groupings (no metadata serialised to be dropped)
        )


def _digest(metadata: str, jpeg_path: str) -> str:
    h = hashlib.sha256(metadata.encode("utf-8"))
    with open_source(jpeg_path) as stream:
        while block := stream.read(_READ_BLOCK):
            h.update(block)
    return h.hexdigest()


class _KeepFirstSopFn(beam.DoFn):
    def process(self, element: tuple[str, Iterable[PairRow]]) -> Iterator[Any]:
        _, group = element
        first, *rest = sorted((from_row(r) for r in group), key=lambda p: p.source)
        yield first
        for p in rest:
            letter = DeadLetter(
                stage=Stage.VALIDATE,
                source=p.source,
                reason=Reason.DUPLICATE_INPUT,
                message="another input has the same SOP Instance UID and is used instead (see "
                f"its own outcome): {first.source}",
                uids=p.uids,
            )
            metrics.count_dead_letter(letter)
            yield beam.pvalue.TaggedOutput(FAILED_TAG, letter)


def _sop_key(p: PreparedInstance) -> tuple[str, PairRow]:
    return p.uids.sop, to_row(p)


def _study_key(p: PreparedInstance) -> tuple[str, PairRow]:
    return p.uids.study, to_row(p)


def _is_json(path: str) -> bool:
    return path.lower().endswith(".json")


def _is_image(path: str) -> bool:
    return not path.lower().endswith(_NOT_IMAGES)


class ReadJsonJpegPairs(beam.PTransform):
    """Glob patterns -> ``PairsResult(pairs, failed)``.

    Args:
      patterns: local or gs:// globs: of JSON files, or of JPEGs with ``template``.
      options: UID generation and metadata checks.
      template: a DICOM JSON dataset used for every matched image (template mode).
      metadata_csv: with ``template``: per-image values (first column ``file``, the base name).
      unique_sops: dead-letter all but the first pair (by source) of a repeated SOP Instance
        UID. A consumer that does this itself (server mode's batching) saves a step without.
      keyed: emit ``(StudyInstanceUID, to_row(pair))`` instead of ``PreparedInstance``: what
        ``StoreJsonJpegPairs(keyed=True)`` groups by study, without a keying step of its own.
    """

    def __init__(
        self,
        patterns: Sequence[str],
        *,
        options: BuildOptions | None = None,
        template: Mapping[str, Any] | None = None,
        metadata_csv: str | None = None,
        unique_sops: bool = True,
        keyed: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(patterns, str):
            patterns = [patterns]
        if not patterns:
            raise ValueError("at least one input pattern is needed")
        if metadata_csv is not None and template is None:
            raise ValueError("metadata_csv needs a template")
        self._patterns = list(patterns)
        self._options = options or BuildOptions()
        self._template = dict(template) if template is not None else None
        self._csv = metadata_csv
        self._unique_sops = unique_sops
        self._keyed = keyed

    def expand(self, pbegin: beam.pvalue.PBegin) -> PairsResult:
        # Few steps on purpose: each costs a runner a fixed time per job, and each grouping
        # keeps its elements in memory (so only small records cross them).
        matched = (
            pbegin
            | "Start" >> beam.Impulse()
            | "MatchFiles"
            >> beam.ParDo(_MatchFn(self._patterns, self._template is not None)).with_outputs(
                FAILED_TAG, main="files"
            )
        )
        failures = [matched[FAILED_TAG]]
        if self._template is None:
            located = (
                matched.files
                | "SpreadFiles" >> beam.GroupByKey()
                | "LocateAndValidate"
                >> beam.ParDo(_LocateJpegFn(self._options)).with_outputs(FAILED_TAG, main="kv")
            )
            paired = (
                located.kv
                | "GroupByJpeg" >> beam.GroupByKey()
                | "OneJsonPerJpeg"
                >> beam.ParDo(_ClaimFn(self._keyed and not self._unique_sops)).with_outputs(
                    FAILED_TAG, main="ok"
                )
            )
            failures += [located[FAILED_TAG], paired[FAILED_TAG]]
            valid = paired.ok
        else:
            images = matched.files
            rows = pbegin | "CsvPath" >> beam.Create([self._csv] if self._csv else [])
            read = rows | "CsvRows" >> beam.ParDo(_ReadCsvFn()).with_outputs(
                FAILED_TAG, main="rows"
            )
            joined = (
                {"images": images, "rows": read.rows}
                | "JoinRows" >> beam.CoGroupByKey()
                | "ApplyTemplate"
                >> beam.ParDo(_MatchRowsFn(self._template, self._csv)).with_outputs(
                    FAILED_TAG, main="ok"
                )
            )
            validated = joined.ok | "Validate" >> beam.ParDo(
                _ValidateFn(self._options)
            ).with_outputs(FAILED_TAG, main="ok")
            failures += [read[FAILED_TAG], joined[FAILED_TAG], validated[FAILED_TAG]]
            valid = validated.ok
        if self._unique_sops:
            unique = (
                valid
                | "KeyBySop" >> beam.Map(_sop_key)
                | "GroupBySop" >> beam.GroupByKey()
                | "KeepFirstSop"
                >> beam.ParDo(_KeepFirstSopFn()).with_outputs(FAILED_TAG, main="ok")
            )
            failures.append(unique[FAILED_TAG])
            valid = unique.ok
        if self._keyed and (self._unique_sops or self._template is not None):
            valid = valid | "KeyByStudy" >> beam.Map(_study_key)
        failed = tuple(failures) | "FlattenFailed" >> beam.Flatten()
        return PairsResult(pairs=valid, failed=failed)
