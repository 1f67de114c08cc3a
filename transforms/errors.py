"""Exceptions of the Beam-free layer. They carry a reason code, never patient data."""

from __future__ import annotations

import re


class DicomwebError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidInputError(DicomwebError):
    """An input that can never be stored as it is (not DICOM, truncated, bad UID, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class HttpError(DicomwebError):
    """A request that did not succeed, after retries when the failure was transient."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        status: int | None = None,
        detail: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.detail = detail
        self.attempts = attempts


class SourceChangedError(DicomwebError):
    """A file no longer has the size it had when it was validated (or cannot be read)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


# --- store hardening: describing unexpected exceptions without leaking data ---------------

_QUOTED = re.compile(r"""b?(['"]).*?\1""")
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://[^\s'\"]+")
_DATA_LIKE = re.compile(r"\S*[0-9^=@\\\x80-\U0010ffff]\S*")


def describe_exception(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` with anything that may be data taken out of the message.

    Exception texts from parsers quote the values they choke on (patient names, dates, ids):
    quoted strings, URLs (their host is kept), and every token holding a digit, ``^``, ``=``,
    ``@``, a backslash or a non-ASCII character become ``…``.
    """
    text = " ".join(str(exc).split())
    text = _QUOTED.sub("'…'", text)
    text = _URL.sub(lambda m: f"{m.group(1)}://…", text)
    text = _DATA_LIKE.sub("…", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class SetupError(DicomwebError):
    """A worker could not build what its requests need (credentials, session): every element of
    the step becomes a dead letter with this reason instead of a failed bundle."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def reason_and_message(exc: BaseException, unexpected: str) -> tuple[str, str]:
    """The dead-letter reason and message for an exception caught at a DoFn's boundary: those
    of an error raised on purpose, else ``unexpected`` (the project's ``internal_error``) and the
    exception's type and redacted text."""
    reason = getattr(exc, "reason", None)
    message = getattr(exc, "message", None)
    if isinstance(exc, DicomwebError) and isinstance(reason, str) and isinstance(message, str):
        return reason, message
    return unexpected, describe_exception(exc)
