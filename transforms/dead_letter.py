"""The one dead-letter record of the project.

Every input that does not end in a result ends here, exactly once, with what an on-call engineer
needs to understand and replay it: the stage, the source, the UIDs when known, a reason code, a
readable message, the HTTP status and the server's own failure reason. It never carries pixel
bytes or patient attributes; server text is kept short.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field

from transforms.records import InstanceUids, _flatten

MAX_DETAIL_CHARS = 300


class Reason:
    """Reason codes (stable strings: dashboards and replays key on them)."""

    NOT_DICOM = "not_dicom"
    TRUNCATED = "truncated"
    MISSING_UID = "missing_uid"
    INVALID_UID = "invalid_uid"
    UNREADABLE = "unreadable"
    DUPLICATE_INPUT = "duplicate_input"
    ALREADY_EXISTS = "already_exists"
    REJECTED = "rejected"
    NOT_IN_RESPONSE = "not_in_response"
    HTTP_ERROR = "http_error"
    RETRIES_EXHAUSTED = "retries_exhausted"
    TLS_ERROR = "tls_error"
    BAD_RESPONSE = "bad_response"
    # retrieve (WADO-RS) family
    NOT_FOUND = "not_found"  # 403/404: the resource is not in the store (or not visible)
    UNSUPPORTED = "unsupported"  # 400/406/415: transfer syntax, format or frame not served
    SERVER_ERROR = "server_error"  # a 500 that persists for one resource (a failed transcode)
    BAD_MULTIPART = "bad_multipart"
    TRUNCATED_RESPONSE = "truncated_response"
    SIZE_MISMATCH = "size_mismatch"
    VERIFY_FAILED = "verify_failed"
    WRITE_FAILED = "write_failed"
    # search (QIDO-RS)
    TOO_MANY_MATCHES = "too_many_matches"  # past the server's offset cap, nothing to split on
    BAD_QUERY = "bad_query"  # a line of --queries that is not a query
    # delete family (transforms/delete.py, transforms/dicomweb/delete.py)
    DELETE_UNSUPPORTED = "delete_unsupported"
    OPERATION_FAILED = "operation_failed"
    OPERATION_TIMEOUT = "operation_timeout"
    STILL_PRESENT = "still_present"
    AMBIGUOUS_TARGET = "ambiguous_target"
    OVER_MAX_TARGETS = "over_max_targets"  # the plan holds more than max_targets: none deleted
    # JSON + JPEG pairs (pipelines.store_json_jpeg)
    NOT_JPEG = "not_jpeg"
    PROGRESSIVE_JPEG = "progressive_jpeg"
    UNSUPPORTED_JPEG = "unsupported_jpeg"
    MISSING_JPEG = "missing_jpeg"
    MISSING_METADATA = "missing_metadata"
    JPEG_CLAIMED_TWICE = "jpeg_claimed_twice"
    NOT_DICOM_JSON = "not_dicom_json"
    METADATA_MISMATCH = "metadata_mismatch"
    BUILD_FAILED = "build_failed"
    # --- store hardening (pipelines.store) ---
    INTERNAL_ERROR = "internal_error"  # an unexpected exception, caught at a DoFn boundary
    REDIRECTED = "redirected"  # a redirect that cannot be followed safely
    CREDENTIALS_ERROR = "credentials_error"  # credentials could not be obtained or refreshed
    CONFLICTING_DUPLICATE = "conflicting_duplicate"  # same SOP Instance UID, different bytes
    UNCONFIRMED = "unconfirmed"  # "already exists" that a search of the store does not confirm


class Stage:
    READ = "read"
    VALIDATE = "validate"
    STORE = "store"
    # retrieve (WADO-RS) family
    SELECT = "select"
    RETRIEVE = "retrieve"
    SEARCH = "search"  # search (QIDO-RS)
    # delete family
    PLAN = "plan"
    DELETE = "delete"
    VERIFY = "verify"
    # JSON + JPEG pairs (pipelines.store_json_jpeg)
    PAIR = "pair"
    BUILD = "build"


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def shorten(text: str | None, limit: int = MAX_DETAIL_CHARS) -> str | None:
    """Server text, trimmed: enough to diagnose, too short to carry a whole dataset."""
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class DeadLetter:
    """An input that was not processed, and why.

    Attributes:
      stage: where it failed (``read``, ``validate``, ``store``, ...).
      source: the input's path or URL.
      reason: a ``Reason`` code.
      message: a human-readable explanation the user can act on.
      uids: Study/Series/SOP Instance UIDs when known.
      http_status: the last HTTP status, when a request was made.
      server_reason: the server's FailureReason, as hex (``0xA700``), when it gave one.
      server_detail: a short server message (Google's failure detail, an error body).
      attempts: how many requests were made for it.
      time: when it was dead-lettered (UTC, ISO 8601).
    """

    stage: str
    source: str
    reason: str
    message: str
    uids: InstanceUids | None = None
    http_status: int | None = None
    server_reason: str | None = None
    server_detail: str | None = None
    attempts: int = 0
    time: str = field(default_factory=utc_now, compare=False)

    def to_json(self) -> str:
        return json.dumps(_flatten(self), sort_keys=True, ensure_ascii=False)

    @staticmethod
    def from_json(line: str) -> DeadLetter:
        data = json.loads(line)
        study, series, sop = data.pop("study_uid"), data.pop("series_uid"), data.pop("sop_uid")
        known = study or series or sop
        uids = InstanceUids(study or "", series or "", sop or "") if known else None
        return DeadLetter(uids=uids, **data)
