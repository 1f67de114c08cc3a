"""STOW-RS of DICOM JSON metadata + JPEG files: the store creates the instances. No Beam here.

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

``JsonJpegStowClient`` is a ``StowClient`` with this request body: everything else (existing
instances skipped, retries, per-instance outcomes, a refused batch split into single requests,
already-present handling) is the store's own logic.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from transforms.dicom.build import (
    PIXEL_DATA,
    SPECIFIC_CHARACTER_SET,
    TRANSFER_SYNTAX_TAG,
    PreparedInstance,
)
from transforms.dicomweb.multipart import FileSegment, Segment, StreamingBody, new_boundary
from transforms.dicomweb.stow import StoreReport, StowClient
from transforms.records import DicomFile, StowBatch

ACCEPT = "application/dicom+json, application/dicom+xml;q=0.9"
METADATA_TYPE = "application/dicom+json"
BULK_URI_PREFIX = "jpeg-image-"


def request_content_type(boundary: str) -> str:
    return f'multipart/related; type="{METADATA_TYPE}"; boundary={boundary}'


def instance_metadata(pair: PreparedInstance, bulk_uri: str) -> dict[str, Any]:
    """The DICOM JSON of one instance as the request carries it."""
    data: dict[str, Any] = json.loads(pair.metadata_json)
    data[SPECIFIC_CHARACTER_SET] = {"vr": "CS", "Value": ["ISO_IR 192"]}  # Google requires it
    data[TRANSFER_SYNTAX_TAG] = {"vr": "UI", "Value": [pair.transfer_syntax_uid]}
    data[PIXEL_DATA] = {"vr": "OB", "BulkDataURI": bulk_uri}
    return data


def json_jpeg_segments(pairs: Sequence[PreparedInstance], boundary: str) -> list[Segment]:
    """The request body as segments: literal bytes and the JPEG files (streamed)."""
    uris = [f"{BULK_URI_PREFIX}{n}" for n in range(1, len(pairs) + 1)]
    metadata = [instance_metadata(p, uri) for p, uri in zip(pairs, uris, strict=True)]
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


def as_dicom_file(pair: PreparedInstance) -> DicomFile:
    """The pair as the STOW client's unit of work (its path is the JPEG, which is streamed)."""
    return DicomFile(
        path=pair.jpeg_path,
        size=pair.jpeg_size,
        uids=pair.uids,
        sop_class_uid=pair.sop_class_uid,
        transfer_syntax_uid=pair.transfer_syntax_uid,
    )


class JsonJpegStowClient(StowClient):
    """Stores prepared pairs; safe to share between threads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._config.single_part:
            raise ValueError("JSON + JPEG requests are multipart: single_part does not apply")
        self._in_flight: dict[str, PreparedInstance] = {}
        self._lock = threading.Lock()

    def store_pairs(self, study: str, pairs: Sequence[PreparedInstance]) -> StoreReport:
        """Store the pairs of one study (unique SOP Instance UIDs) in as few requests as allowed."""
        with self._lock:
            for p in pairs:
                self._in_flight[p.uids.sop] = p
        try:
            return self.store(StowBatch(study, tuple(as_dicom_file(p) for p in pairs)))
        finally:
            with self._lock:
                for p in pairs:
                    self._in_flight.pop(p.uids.sop, None)

    def _request(
        self, study: str, files: list[DicomFile]
    ) -> tuple[str, dict[str, str], Callable[[], StreamingBody]]:
        with self._lock:
            pairs = [self._in_flight[f.uids.sop] for f in files]
        boundary = new_boundary()
        headers = {"Accept": ACCEPT, "Content-Type": request_content_type(boundary)}
        if self._config.storage_class:
            headers["Storage-Class"] = self._config.storage_class
        segments = json_jpeg_segments(pairs, boundary)
        opener = self._opener

        def body() -> StreamingBody:
            return StreamingBody(segments, **({"opener": opener} if opener else {}))

        return self._config.endpoint.study_url(study), headers, body
