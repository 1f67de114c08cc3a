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
