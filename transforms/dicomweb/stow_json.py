"""STOW-RS of prepared JSON + JPEG pairs, in the two modes of ``pipelines.store_json_jpeg``.
No Beam here.

``Part10StowClient`` (client mode) builds each pair's Part 10 instance just before its request
and sends a ``multipart/related; type="application/dicom"`` body, as ``pipelines.store`` does.
``JsonJpegStowClient`` (server mode) sends the metadata and the JPEG and lets the store create
the instance, in the layout below.

Google's "create DICOM instances from JSON metadata and JPEG images" form (the guide's layout,
kept byte for byte apart from the boundary and the number of images)::

    Content-Type: multipart/related; type="application/dicom+json"; boundary=B

    --B\\r\\nContent-Type: application/dicom+json\\r\\n\\r\\n
    [{...instance 1..., "7FE00010": {"vr": "OB", "BulkDataURI": "jpeg-image-1"}}, {...}]
    \\r\\n--B\\r\\nContent-Location: jpeg-image-1\\r\\n
    Content-Type: image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50\\r\\n\\r\\n<JPEG 1>
    \\r\\n--B\\r\\nContent-Location: jpeg-image-2\\r\\n...<JPEG 2>
    \\r\\n--B--

Each instance carries SpecificCharacterSet ``ISO_IR 192``, its TransferSyntaxUID and one
BulkDataURI (PixelData), unique within the request. JPEGs are streamed from their files.

Both are ``StowClient``s with their own request body (``build_request``): everything else (existing
instances skipped, retries, per-instance outcomes, a refused batch split into single requests,
already-present handling) is the store's own logic.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from transforms.dead_letter import DeadLetter, Reason, Stage
from transforms.dicom.build import (
    PIXEL_DATA,
    SPECIFIC_CHARACTER_SET,
    TRANSFER_SYNTAX_TAG,
    PreparedInstance,
    build_part10,
    metadata_elements,
)
from transforms.dicom.jpeg import read_jpeg_info
from transforms.dicomweb.multipart import (
    FileSegment,
    Segment,
    StreamingBody,
    new_boundary,
)
from transforms.dicomweb.stow import StoreReport, StowClient
from transforms.errors import InvalidInputError
from transforms.records import DicomFile, StowBatch

ACCEPT = "application/dicom+json, application/dicom+xml;q=0.9"
METADATA_TYPE = "application/dicom+json"
PART10_TYPE = "application/dicom"
BULK_URI_PREFIX = "jpeg-image-"


def request_content_type(boundary: str) -> str:
    return f'multipart/related; type="{METADATA_TYPE}"; boundary={boundary}'


def instance_metadata(
    pair: PreparedInstance, bulk_uri: str, elements: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The DICOM JSON of one instance as the request carries it (``elements``: the pair's
    ``metadata_elements``, used and changed in place, when the caller has them)."""
    data = metadata_elements(pair) if elements is None else elements
    data[SPECIFIC_CHARACTER_SET] = {"vr": "CS", "Value": ["ISO_IR 192"]}  # Google requires it
    data[TRANSFER_SYNTAX_TAG] = {"vr": "UI", "Value": [pair.transfer_syntax_uid]}
    data[PIXEL_DATA] = {"vr": "OB", "BulkDataURI": bulk_uri}
    return data


def json_jpeg_segments(
    pairs: Sequence[PreparedInstance],
    boundary: str,
    elements: Sequence[dict[str, Any] | None] | None = None,
) -> list[Segment]:
    """The request body as segments: literal bytes and the JPEG files (streamed).
    ``elements``: each pair's ``metadata_elements`` (or None), when the caller has them."""
    uris = [f"{BULK_URI_PREFIX}{n}" for n in range(1, len(pairs) + 1)]
    given = [None] * len(pairs) if elements is None else elements
    metadata = [
        instance_metadata(p, uri, dict(e) if e is not None else None)
        for p, uri, e in zip(pairs, uris, given, strict=True)
    ]
    delimiter = f"\r\n--{boundary}\r\n"
    head = f"--{boundary}\r\nContent-Type: {METADATA_TYPE}\r\n\r\n".encode("ascii")
    segments: list[Segment] = [head + json.dumps(metadata, ensure_ascii=False).encode("utf-8")]
    for pair, uri in zip(pairs, uris, strict=True):
        part_head = (
            f"{delimiter}Content-Location: {uri}\r\n"
            f"Content-Type: image/jpeg; transfer-syntax={pair.transfer_syntax_uid}\r\n\r\n"
        )
        segments.append(part_head.encode("ascii"))
        segments.append(FileSegment(pair.jpeg_path, pair.jpeg_size))
    segments.append(f"\r\n--{boundary}--".encode("ascii"))
    return segments


def as_dicom_file(pair: PreparedInstance, size: int | None = None) -> DicomFile:
    """The pair as the STOW client's unit of work; its path is the JPEG (unique per pair)."""
    return DicomFile(
        path=pair.jpeg_path,
        size=pair.jpeg_size if size is None else size,
        uids=pair.uids,
        sop_class_uid=pair.sop_class_uid,
        transfer_syntax_uid=pair.transfer_syntax_uid,
    )


class _PairStowClient(StowClient):
    """A ``StowClient`` for prepared pairs: ``store_pairs`` keeps each pair at hand (keyed by
    its JPEG path) while the inherited logic sends, retries, splits and reads answers, and
    ``build_request`` (the seam) lays out the body. Safe to share between threads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.single_part:
            raise ValueError("pairs are sent as multipart: single_part does not apply")
        self._in_flight: dict[str, tuple[PreparedInstance, Any]] = {}
        self._lock = threading.Lock()

    def store_pairs(self, study: str, pairs: Sequence[PreparedInstance]) -> StoreReport:
        """Store the pairs of one study in as few requests as allowed; one outcome per pair."""
        completed, incomplete = self._complete(pairs)
        prepared, failed = self._prepare(completed)
        failed[:0] = incomplete
        with self._lock:
            for pair, payload in prepared:
                self._in_flight[pair.jpeg_path] = (pair, payload)
        try:
            files = tuple(as_dicom_file(p, self._size(p, d)) for p, d in prepared)
            report = self.store(StowBatch(study, files)) if files else StoreReport()
        finally:
            with self._lock:
                for pair, _ in prepared:
                    self._in_flight.pop(pair.jpeg_path, None)
        report.outcomes[:0] = failed
        return report

    def _complete(
        self, pairs: Sequence[PreparedInstance]
    ) -> tuple[list[tuple[PreparedInstance, dict[str, Any]]], list[DeadLetter]]:
        """Each pair with its metadata elements; a slim pair's are derived again from its JSON
        file (read now, in this request's thread: the metadata of a pair is in memory only
        while it is sent)."""
        opener = self.opener or _open_local
        return _each_pair(
            [(pair, None) for pair in pairs],
            lambda pair, _: elements_from_file(pair, opener),
            unreadable="cannot read the JSON file again",
            doing="reading its metadata again",
        )

    def _prepare(
        self, pairs: Sequence[tuple[PreparedInstance, dict[str, Any]]]
    ) -> tuple[list[tuple[PreparedInstance, Any]], list[DeadLetter]]:
        """(pair, what its request needs) for each pair: here its metadata elements."""
        return list(pairs), []

    @staticmethod
    def _size(pair: PreparedInstance, payload: Any) -> int | None:
        return None

    def _pending(self, files: list[DicomFile]) -> list[tuple[PreparedInstance, Any]]:
        with self._lock:
            return [self._in_flight[f.path] for f in files]

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": ACCEPT, "Content-Type": content_type}
        if self.config.storage_class:
            headers["Storage-Class"] = self.config.storage_class
        return headers

    def _body(self, segments: Sequence[Segment]) -> Callable[[], StreamingBody]:
        opener = self.opener

        def body() -> StreamingBody:
            return StreamingBody(segments, **({"opener": opener} if opener else {}))

        return body


def _each_pair(
    items: Sequence[tuple[PreparedInstance, Any]],
    work: Callable[[PreparedInstance, Any], Any],
    *,
    unreadable: str,
    doing: str,
) -> tuple[list[tuple[PreparedInstance, Any]], list[DeadLetter]]:
    """``(pair, work(pair, x))`` for each ``(pair, x)``; a pair whose work fails is a dead letter
    of its own (one odd pair must not sink its batch): ``unreadable`` names what could not be
    read, ``doing`` what was under way."""
    done: list[tuple[PreparedInstance, Any]] = []
    failed: list[DeadLetter] = []
    for pair, x in items:
        try:
            done.append((pair, work(pair, x)))
        except InvalidInputError as exc:
            failed.append(_build_failed(pair, exc.reason, exc.message))
        except OSError as exc:
            failed.append(_build_failed(pair, Reason.UNREADABLE, f"{unreadable} ({exc.strerror})"))
        except Exception as exc:  # the boundary of one pair
            failed.append(_build_failed(pair, Reason.BUILD_FAILED, f"{type(exc).__name__} {doing}"))
    return done, failed


class JsonJpegStowClient(_PairStowClient):
    """Server mode: the store creates the instances from DICOM JSON + JPEG requests."""

    def build_request(
        self, study: str, files: list[DicomFile]
    ) -> tuple[str, dict[str, str], Callable[[], StreamingBody]]:
        pending = self._pending(files)
        pairs = [pair for pair, _ in pending]
        boundary = new_boundary()
        headers = self._headers(request_content_type(boundary))
        # A copy of each pair's elements: a retried request lays its body out again.
        body = self._body(json_jpeg_segments(pairs, boundary, [e for _, e in pending]))
        return self.config.endpoint.study_url(study), headers, body


class Part10StowClient(_PairStowClient):
    """Client mode: each pair is built into a Part 10 instance in memory just before its
    request (so building overlaps with the server's work), and stored as ``pipelines.store``
    stores files. A pair that cannot be built is dead-lettered alone (stage ``build``)."""

    def _prepare(
        self, pairs: Sequence[tuple[PreparedInstance, dict[str, Any]]]
    ) -> tuple[list[tuple[PreparedInstance, Any]], list[DeadLetter]]:
        opener = self.opener or _open_local
        return _each_pair(
            pairs,
            lambda pair, elements: _build(pair, elements, opener),
            unreadable="cannot read the JPEG",
            doing="building it",
        )

    @staticmethod
    def _size(pair: PreparedInstance, payload: Any) -> int | None:
        return len(payload)

    def build_request(
        self, study: str, files: list[DicomFile]
    ) -> tuple[str, dict[str, str], Callable[[], StreamingBody]]:
        instances = [data or b"" for _, data in self._pending(files)]
        boundary = new_boundary()
        content_type = f'multipart/related; type="{PART10_TYPE}"; boundary={boundary}'
        return (
            self.config.endpoint.study_url(study),
            self._headers(content_type),
            self._body(part10_segments(instances, boundary)),
        )


def part10_segments(instances: Sequence[bytes], boundary: str) -> list[Segment]:
    """The ``multipart/related; type="application/dicom"`` body of in-memory instances, as
    ``multipart_related`` lays it out, byte for byte, without joining the instances into one
    literal (which copies the body once per part: quadratic in the batch's size)."""
    head = f"--{boundary}\r\nContent-Type: {PART10_TYPE}\r\n\r\n".encode("ascii")
    between = b"\r\n" + head
    segments: list[Segment] = []
    for n, data in enumerate(instances):
        segments.append(between if n else head)
        segments.append(data)
    tail = f"--{boundary}--\r\n".encode("ascii")
    segments.append(b"\r\n" + tail if instances else tail)
    return segments


def _open_local(path: str) -> BinaryIO:
    return open(path, "rb")  # noqa: SIM115 - closed by the caller


def complete_from_file(
    pair: PreparedInstance, opener: Callable[[str], BinaryIO]
) -> PreparedInstance:
    """The pair with its metadata: a slim pair's is derived again from its JSON file.

    Raises:
      InvalidInputError: the JSON file changed since validation.
      OSError: it cannot be read.
    """
    if not pair.is_slim or pair.json_path is None:
        return pair
    elements = elements_from_file(pair, opener)
    return dataclasses.replace(pair, metadata_json=json.dumps(elements, ensure_ascii=False))


def elements_from_file(pair: PreparedInstance, opener: Callable[[str], BinaryIO]) -> dict[str, Any]:
    """The pair's metadata elements (``metadata_elements``); a slim pair's from its JSON file.

    Raises:
      InvalidInputError: the JSON file changed since validation.
      OSError: it cannot be read.
    """
    if not pair.is_slim or pair.json_path is None:
        return metadata_elements(pair)
    with opener(pair.json_path) as stream:
        data = stream.read()
    return metadata_elements(pair, data)


def build_from_file(pair: PreparedInstance, opener: Callable[[str], BinaryIO]) -> bytes:
    """Read the pair's JPEG (and a slim pair's JSON) again, check the JPEG is still the one
    validated, and build the instance.

    Raises:
      InvalidInputError: the JPEG or the JSON changed since validation (or the JPEG no longer
        is a JPEG).
      OSError: one cannot be read.
    """
    return _build(pair, elements_from_file(pair, opener), opener)


def _build(
    pair: PreparedInstance, elements: dict[str, Any], opener: Callable[[str], BinaryIO]
) -> bytes:
    with opener(pair.jpeg_path) as stream:
        jpeg = stream.read()
    info = read_jpeg_info(io.BytesIO(jpeg), len(jpeg))
    if info.transfer_syntax_uid != pair.transfer_syntax_uid:
        raise InvalidInputError(Reason.UNREADABLE, "the JPEG changed since it was validated")
    return build_part10(pair, jpeg, elements)


def _build_failed(pair: PreparedInstance, reason: str, message: str) -> DeadLetter:
    return DeadLetter(
        stage=Stage.BUILD, source=pair.jpeg_path, reason=reason, message=message, uids=pair.uids
    )
