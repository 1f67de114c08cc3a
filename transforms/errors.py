"""Exceptions of the Beam-free layer. They carry a reason code, never patient data."""

from __future__ import annotations


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
