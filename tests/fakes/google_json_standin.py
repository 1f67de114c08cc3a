"""The Google stand-in, plus STOW of DICOM JSON metadata + JPEG bulk data (Google's "create DICOM
instances from JSON metadata and JPEG images"), keeping every such request's bytes.

As Google documents it (guide and conformance statement, see
``/work/shared/notes/google-dicom-store.md``): ``multipart/related; type="application/dicom+json"``;
a first part ``application/dicom+json`` holding a JSON array of instances; each instance with
SpecificCharacterSet ``ISO_IR 192``, TransferSyntaxUID, SOPClassUID, the three UIDs, Rows and
Columns (the server does not read them from the image), and at most one BulkDataURI (PixelData),
unique in the request; each bulk part with a ``Content-Location`` equal to its URI and a
``Content-Type`` ``image/jpeg; transfer-syntax=<the instance's>``. The store then creates a
Part 10 instance holding the JPEG as its one fragment, retrievable and searchable like any other.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from email.message import Message
from io import BytesIO
from typing import Any

import pydicom
from google_standin import (
    FAILURE_PROCESSING,
    FAILURE_STUDY_MISMATCH,
    GoogleStandin,
    StoredBlob,
    _Attr,
    _BadRequest,
    _Handler,
    _render_json,
    _render_xml,
    _Server,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID

FAILURE_CANNOT_UNDERSTAND = 0xC000
JPEG_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
    }
)
_REQUIRED = {
    "00080016": "SOPClassUID",
    "0020000D": "StudyInstanceUID",
    "0020000E": "SeriesInstanceUID",
    "00080018": "SOPInstanceUID",
    "00020010": "TransferSyntaxUID",
    "00280010": "Rows",
    "00280011": "Columns",
}


@dataclass(frozen=True)
class JsonStowRequest:
    """A JSON + JPEG STOW request as received: its headers and its exact body bytes."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class BodyPart:
    headers: dict[str, str]  # header names lower-cased
    payload: bytes


def split_parts(body: bytes, boundary: str) -> list[BodyPart]:
    """The parts of a multipart body, with their headers (strict: CRLF everywhere)."""
    delimiter = b"--" + boundary.encode("latin-1")
    if not body.startswith(delimiter + b"\r\n"):
        raise _BadRequest(400, "multipart body does not start with its boundary")
    pieces = body.split(b"\r\n" + delimiter)
    pieces[0] = pieces[0][len(delimiter) :]
    if not pieces[-1].startswith(b"--"):
        raise _BadRequest(400, "multipart body lacks its closing delimiter")
    parts = []
    for piece in pieces[:-1]:
        if not piece.startswith(b"\r\n"):
            raise _BadRequest(400, "malformed multipart delimiter line")
        head, sep, payload = piece[2:].partition(b"\r\n\r\n")
        if not sep:
            raise _BadRequest(400, "multipart part without header terminator")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if not colon:
                raise _BadRequest(400, "malformed part header")
            headers[name.strip().lower()] = value.strip()
        parts.append(BodyPart(headers, payload))
    return parts


def _value(instance: dict[str, Any], tag: str) -> Any:
    element = instance.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _part10(instance: dict[str, Any], jpeg: bytes) -> bytes:
    """What the store creates: the metadata plus the JPEG as one encapsulated fragment."""
    elements = {k: v for k, v in instance.items() if not k.startswith("0002") and k != "7FE00010"}
    ds = Dataset.from_json(elements)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_value(instance, "00080016"))
    meta.MediaStorageSOPInstanceUID = UID(_value(instance, "00080018"))
    meta.TransferSyntaxUID = UID(_value(instance, "00020010"))
    ds.file_meta = meta
    ds.PixelData = encapsulate([jpeg], has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    out = BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


class _JsonHandler(_Handler):
    def _stow(self, standin: GoogleStandin, url_study: str | None, body: bytes) -> None:
        ctype = Message()
        ctype["Content-Type"] = self.headers.get("Content-Type", "")
        if (ctype.get_content_type(), ctype.get_param("type")) != (
            "multipart/related",
            "application/dicom+json",
        ):
            super()._stow(standin, url_study, body)
            return
        assert isinstance(standin, GoogleJsonStandin)
        standin._record_json(JsonStowRequest(self.path, dict(self.headers.items()), body))
        storage_class = self.headers.get("Storage-Class", "STANDARD")
        boundary = ctype.get_param("boundary")
        if not isinstance(boundary, str) or not boundary:
            raise _BadRequest(400, "multipart/related without boundary")
        first, *bulk = split_parts(body, boundary)
        if first.headers.get("content-type") != "application/dicom+json":
            raise _BadRequest(400, "the first part must be application/dicom+json")
        try:
            instances = json.loads(first.payload)
        except ValueError as exc:
            raise _BadRequest(400, "metadata part is not JSON") from exc
        if not isinstance(instances, list):
            raise _BadRequest(400, "metadata part must be a JSON array of instances")
        by_location: dict[str, BodyPart] = {}
        for part in bulk:
            location = part.headers.get("content-location")
            if not location or location in by_location:
                raise _BadRequest(400, "each bulk part needs its own Content-Location")
            by_location[location] = part
        uris = [(i.get("7FE00010") or {}).get("BulkDataURI") for i in instances]
        if len([u for u in uris if u]) != len({u for u in uris if u}):
            raise _BadRequest(400, "BulkDataURI values must be unique in a request")
        if {u for u in uris if u} != set(by_location):
            raise _BadRequest(400, "BulkDataURIs and Content-Locations do not pair up")

        stored: list[list[_Attr]] = []
        failed: list[list[_Attr]] = []
        first_study = url_study
        for instance, uri in zip(instances, uris, strict=True):
            sop, sop_class = _value(instance, "00080018"), _value(instance, "00080016")
            study, series = _value(instance, "0020000D"), _value(instance, "0020000E")
            ref = [_Attr("00081150", "UI", sop_class or ""), _Attr("00081155", "UI", sop or "")]
            missing = [k for t, k in _REQUIRED.items() if _value(instance, t) in (None, "")]
            syntax = _value(instance, "00020010")
            part = by_location.get(uri) if uri else None
            if not sop:
                raise _BadRequest(400, "an instance has no SOPInstanceUID")
            first_study = first_study or study
            if _value(instance, "00080005") != "ISO_IR 192":
                reason, detail = (
                    FAILURE_CANNOT_UNDERSTAND,
                    "SpecificCharacterSet must be ISO_IR 192",
                )
            elif missing:
                reason, detail = FAILURE_CANNOT_UNDERSTAND, f"missing {', '.join(missing)}"
            elif part is None:
                reason, detail = FAILURE_CANNOT_UNDERSTAND, "no bulk data for PixelData"
            elif part.headers.get("content-type") != f"image/jpeg; transfer-syntax={syntax}" or (
                syntax not in JPEG_SYNTAXES
            ):
                reason, detail = FAILURE_CANNOT_UNDERSTAND, "bulk part type does not match syntax"
            elif url_study is not None and study != url_study:
                reason, detail = FAILURE_STUDY_MISMATCH, "study instance UID mismatch"
            elif not standin._add(
                (study, series, sop), StoredBlob(_part10(instance, part.payload), storage_class)
            ):
                reason, detail = FAILURE_PROCESSING, "Instance already exists"
            else:
                url = f"{standin.dicomweb_url}/studies/{study}/series/{series}/instances/{sop}"
                stored.append([*ref, _Attr("00081190", "UR", url)])
                continue
            failed.append([*ref, _Attr("00081197", "US", reason), _Attr("00090097", "LO", detail)])

        attrs: list[_Attr] = []
        if first_study:
            attrs.append(_Attr("00081190", "UR", f"{standin.dicomweb_url}/studies/{first_study}"))
        if failed:
            attrs.append(_Attr("00081198", "SQ", failed))
        if stored:
            attrs.append(_Attr("00081199", "SQ", stored))
        code = 409 if failed else 200
        if "application/dicom+json" in self.headers.get("Accept", ""):
            self.send_json(code, _render_json(attrs), "application/dicom+json")
        else:
            self.send(code, "application/dicom+xml", _render_xml(attrs).encode("utf-8"))


class GoogleJsonStandin(GoogleStandin):
    """``GoogleStandin`` that also creates instances from JSON + JPEG requests."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.json_requests: list[JsonStowRequest] = []

    def start(self) -> GoogleJsonStandin:
        if self._server is None:
            self._server = _Server(("127.0.0.1", 0), _JsonHandler)
            self._server.standin = self
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="google-standin", daemon=True
            )
            self._thread.start()
        return self

    def _record_json(self, request: JsonStowRequest) -> None:
        with self._lock:
            self.json_requests.append(request)
