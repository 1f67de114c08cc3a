"""Writing WADO-RS answers to files: bodies streamed to a spool, DICOM verified, complete files
recognised on a re-run. No Beam here; used by ``retriever.py``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from xml.etree import ElementTree

import requests
import urllib3

from transforms.dead_letter import Reason
from transforms.dicom.peek import peek_dicom
from transforms.dicomweb.multipart_stream import (
    MultipartError,
    MultipartStream,
    boundary_of,
    media_type,
)
from transforms.dicomweb.wado import Answer
from transforms.errors import InvalidInputError
from transforms.output_files import OutputFiles, Spool
from transforms.records import STATUS_ALREADY_COMPLETE, InstanceUids, RetrievedFile

CHUNK = 1 << 20


@dataclass(frozen=True)
class ManifestEntry:
    """What an earlier run's manifest (or a store job's record) says about a file.

    ``sha256`` is None where only the size is known (``pipelines.store``'s records).
    """

    bytes: int
    sha256: str | None


class Failed(Exception):
    """Ends the work on one resource with a reason (turned into a dead letter)."""

    def __init__(
        self,
        reason: str,
        message: str,
        status: int | None = None,
        detail: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message
        self.status, self.detail, self.attempts = status, detail, attempts


class CutBody(Exception):
    """A body that ended early (the connection was cut)."""

    reason = Reason.TRUNCATED_RESPONSE


def chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: ``read1`` hands over what the socket has (up to a chunk), so
    the parts before a cut are written even when the cut falls within the first chunk."""
    raw = response.raw
    read1 = getattr(raw, "read1", None)
    if read1 is None:
        yield from response.iter_content(CHUNK)
        return
    try:
        while data := read1(CHUNK, decode_content=True):
            yield data
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError) as exc:
        raise requests.exceptions.ChunkedEncodingError(str(exc)) from None
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(str(exc)) from None


def write_answer(answer: Answer, expect_dicom: bool, sink: Spool) -> str:
    """Writes a single-resource answer (single part, or multipart of one part); its type."""
    response = answer.response
    assert response is not None
    try:
        if media_type(answer.content_type).startswith("multipart/"):
            stream = MultipartStream(chunks(response), boundary_of(answer.content_type))
            content_type = ""
            for headers in stream.parts():
                if content_type:
                    raise MultipartError(Reason.BAD_MULTIPART, "more parts than asked for")
                content_type = headers.content_type
                for chunk in stream.body():
                    sink.write(chunk)
            if not content_type:
                raise MultipartError(Reason.BAD_MULTIPART, "a multipart answer with no part")
        else:
            content_type = answer.content_type
            for chunk in chunks(response):
                sink.write(chunk)
            announced = response.headers.get("Content-Length")
            # With a Content-Encoding (gzip), the length is of the encoded bytes.
            encoded = response.headers.get("Content-Encoding", "identity") != "identity"
            if announced and announced.isdigit() and not encoded and int(announced) != sink.size:
                raise MultipartError(
                    Reason.SIZE_MISMATCH,
                    f"the answer announced {announced} bytes and held {sink.size}",
                )
    finally:
        response.close()
    if expect_dicom and media_type(content_type) not in ("application/dicom", ""):
        raise Failed(Reason.BAD_RESPONSE, f"expected DICOM, got {media_type(content_type)}")
    return media_type(content_type) or "application/octet-stream"


def find_complete(
    files: OutputFiles,
    previous: Mapping[str, ManifestEntry],
    relative: str,
    uids: InstanceUids,
    dicom: bool,
) -> RetrievedFile | None:
    """The existing file as already complete, or None when it must be fetched."""
    size = files.size(relative)
    if size is None:
        return None
    path = files.path(relative)
    known = previous.get(path)
    content_type = "application/dicom" if dicom else "application/octet-stream"
    if known is not None and known.bytes == size:
        if files.sha256(relative) == known.sha256:
            return RetrievedFile(
                path, uids, size, content_type, known.sha256, STATUS_ALREADY_COMPLETE
            )
    if dicom and uids.sop:
        try:
            with files.open(relative) as f:
                found = peek_dicom(f, path=path, size=size)
        except (InvalidInputError, OSError):
            return None
        if found.uids.sop == uids.sop:
            sha = files.sha256(relative)
            return RetrievedFile(path, uids, size, content_type, sha, STATUS_ALREADY_COMPLETE)
    return None


def verify_spool(spool: Spool, sop: str | None) -> InstanceUids:
    """Parse a spooled DICOM file to its end; check its SOP Instance UID when one was asked."""
    spool.close()
    try:
        with open(spool.path, "rb") as f:
            found = peek_dicom(f, path=spool.path, size=spool.size)
    except InvalidInputError as exc:
        raise Failed(
            Reason.VERIFY_FAILED, f"retrieved file does not parse: {exc.message}"
        ) from None
    if sop is not None and found.uids.sop != sop:
        raise Failed(Reason.VERIFY_FAILED, "retrieved file holds another SOP Instance UID")
    return found.uids


def check_expected(spool: Spool, expected: ManifestEntry | None) -> None:
    """The spooled file has the size (and hash) the selection said it would have."""
    if expected is None:
        return
    if spool.size != expected.bytes:
        raise Failed(
            Reason.SIZE_MISMATCH,
            f"retrieved {spool.size} bytes where the selection recorded {expected.bytes}",
        )
    if expected.sha256 is not None and spool.sha256 != expected.sha256:
        raise Failed(Reason.VERIFY_FAILED, "retrieved bytes differ from the recorded sha256")


_XML_UID_TAGS = {"0020000D": 0, "0020000E": 1, "00080018": 2}


def xml_uids(spool: Spool) -> InstanceUids:
    """Study, series and SOP Instance UIDs of a spooled PS3.19 XML metadata document."""
    spool.close()
    found = ["", "", ""]
    try:
        root = ElementTree.parse(spool.path).getroot()  # metadata only: bulk data is by URI
    except ElementTree.ParseError:
        raise Failed(Reason.BAD_RESPONSE, "an XML metadata document does not parse") from None
    for element in root:  # top-level attributes only, not those inside sequence items
        index = _XML_UID_TAGS.get((element.get("tag") or "").upper())
        if index is not None and element.tag.rsplit("}", 1)[-1] == "DicomAttribute":
            value = element.find("{*}Value")
            found[index] = (value.text or "").strip() if value is not None else ""
    if not all(found):
        raise Failed(Reason.MISSING_UID, "an XML metadata document lacks its UIDs")
    return InstanceUids(*found)
