"""Read a STOW-RS response body into per-instance outcomes. No Beam here.

Servers answer in DICOM JSON (PS3.18 F.2; Orthanc, Google with ``Accept: application/dicom+json``)
or in DICOM XML (PS3.19 Native DICOM Model; Google's default). Both carry:
  RetrieveURL (0008,1190), ReferencedSOPSequence (0008,1199) items with ReferencedSOPInstanceUID
  (0008,1155), RetrieveURL and WarningReason (0008,1196), and FailedSOPSequence (0008,1198) items
  with FailureReason (0008,1197). Google adds a failure detail: (0009,1097) in JSON, (0009,0097) in
  XML.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Any

from transforms.dead_letter import shorten

REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
RETRIEVE_URL = "00081190"
WARNING_REASON = "00081196"
FAILURE_REASON = "00081197"
GOOGLE_DETAIL_TAGS = ("00091097", "00090097")
_STOW_TAGS = (REFERENCED_SOP_SEQUENCE, FAILED_SOP_SEQUENCE, RETRIEVE_URL)

# PS3.7 Annex C "Duplicate SOP Instance".
DUPLICATE_SOP_INSTANCE = 0x0111
# Google answers "Processing failure" (0x0110) for a duplicate and says why in its detail tag;
# the words only count with that code: 0xC000 "... duplicate ..." is a refusal, not a duplicate.
PROCESSING_FAILURE = 0x0110
_GOOGLE_ALREADY_EXISTS = "already exists"


@dataclass(frozen=True)
class InstanceResult:
    """What the server said about one SOP instance."""

    sop_uid: str
    sop_class_uid: str | None = None
    retrieve_url: str | None = None
    failure_reason: int | None = None
    warning_reason: int | None = None
    detail: str | None = None

    @property
    def failure_reason_hex(self) -> str | None:
        return None if self.failure_reason is None else f"0x{self.failure_reason:04X}"

    @property
    def already_exists(self) -> bool:
        if self.failure_reason == DUPLICATE_SOP_INSTANCE:
            return True
        return (
            self.failure_reason == PROCESSING_FAILURE
            and _GOOGLE_ALREADY_EXISTS in (self.detail or "").lower()
        )


@dataclass(frozen=True)
class StowResponse:
    referenced: dict[str, InstanceResult] = field(default_factory=dict)
    failed: dict[str, InstanceResult] = field(default_factory=dict)
    retrieve_url: str | None = None
    # False for a body that is not a STOW answer at all (e.g. Google's {"error": ...}).
    recognised: bool = True


class BadStowResponse(ValueError):
    """The body is neither DICOM JSON nor DICOM XML of a STOW response."""


def parse_stow_response(body: bytes, content_type: str = "") -> StowResponse:
    """Parse a STOW-RS response body (JSON or XML, detected from the type or the first byte)."""
    text = body.strip()
    if not text:
        return StowResponse()
    if "xml" in content_type.lower() or text[:1] == b"<":
        return _from_xml(text)
    return _from_json(text)


# --- JSON -----------------------------------------------------------------------------------


def _from_json(body: bytes) -> StowResponse:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadStowResponse(f"STOW response is not JSON ({type(exc).__name__})") from None
    if isinstance(data, list) and len(data) == 1:  # some servers wrap the dataset in an array
        data = data[0]
    if not isinstance(data, dict):
        raise BadStowResponse("STOW response JSON is not a DICOM dataset object")
    return StowResponse(
        referenced=_json_items(data, REFERENCED_SOP_SEQUENCE),
        failed=_json_items(data, FAILED_SOP_SEQUENCE),
        retrieve_url=_json_first(data, RETRIEVE_URL),
        recognised=any(t in data for t in _STOW_TAGS),
    )


def _json_first(dataset: dict[str, Any], tag: str) -> Any:
    element = dataset.get(tag)
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    return values[0] if isinstance(values, list) and values else None


def _json_items(dataset: dict[str, Any], tag: str) -> dict[str, InstanceResult]:
    element = dataset.get(tag)
    items = element.get("Value") if isinstance(element, dict) else None
    out: dict[str, InstanceResult] = {}
    for item in items or []:
        if not isinstance(item, dict):
            continue
        sop = _json_first(item, REFERENCED_SOP_INSTANCE_UID)
        if not sop:
            continue
        detail = next((_json_first(item, t) for t in GOOGLE_DETAIL_TAGS if t in item), None)
        out[str(sop)] = InstanceResult(
            sop_uid=str(sop),
            sop_class_uid=_json_first(item, REFERENCED_SOP_CLASS_UID),
            retrieve_url=_json_first(item, RETRIEVE_URL),
            failure_reason=_as_int(_json_first(item, FAILURE_REASON)),
            warning_reason=_as_int(_json_first(item, WARNING_REASON)),
            detail=shorten(str(detail)) if detail is not None else None,
        )
    return out


# --- XML ------------------------------------------------------------------------------------


def _from_xml(body: bytes) -> StowResponse:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise BadStowResponse(f"STOW response is not XML: {exc}") from None
    top = _xml_attributes(root)
    return StowResponse(
        referenced=_xml_items(top.get(REFERENCED_SOP_SEQUENCE)),
        failed=_xml_items(top.get(FAILED_SOP_SEQUENCE)),
        retrieve_url=_xml_first(top.get(RETRIEVE_URL)),
        recognised=any(t in top for t in _STOW_TAGS),
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # drop any XML namespace


def _xml_attributes(node: ElementTree.Element) -> dict[str, ElementTree.Element]:
    return {
        (child.get("tag") or "").upper(): child
        for child in node
        if _local(child.tag) == "DicomAttribute"
    }


def _xml_first(attribute: ElementTree.Element | None) -> str | None:
    if attribute is None:
        return None
    for child in attribute:
        if _local(child.tag) == "Value":
            return (child.text or "").strip()
    return None


def _xml_items(sequence: ElementTree.Element | None) -> dict[str, InstanceResult]:
    out: dict[str, InstanceResult] = {}
    if sequence is None:
        return out
    for item in sequence:
        if _local(item.tag) != "Item":
            continue
        attrs = _xml_attributes(item)
        sop = _xml_first(attrs.get(REFERENCED_SOP_INSTANCE_UID))
        if not sop:
            continue
        detail = next((_xml_first(attrs[t]) for t in GOOGLE_DETAIL_TAGS if t in attrs), None)
        out[sop] = InstanceResult(
            sop_uid=sop,
            sop_class_uid=_xml_first(attrs.get(REFERENCED_SOP_CLASS_UID)),
            retrieve_url=_xml_first(attrs.get(RETRIEVE_URL)),
            failure_reason=_as_int(_xml_first(attrs.get(FAILURE_REASON))),
            warning_reason=_as_int(_xml_first(attrs.get(WARNING_REASON))),
            detail=shorten(detail),
        )
    return out


def _as_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(str(value), 16)
        except ValueError:
            return None
