"""DICOM UIDs (PS3.5 9.1): digits and dots, at most 64 characters. No Beam, no pydicom."""

from __future__ import annotations

import re

from transforms.dead_letter import Reason
from transforms.errors import InvalidInputError

MAX_UID_LENGTH = 64
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def check_uid(value: object, name: str) -> str:
    """The UID as a string, or ``InvalidInputError`` saying what is wrong with it.

    The message names the attribute, never the value: a bad "UID" may hold anything, patient
    data included.
    """
    if value is None or value == "":
        raise InvalidInputError(Reason.MISSING_UID, f"{name} is missing")
    text = str(value)
    if not isinstance(value, str) or not _UID.fullmatch(text):
        raise InvalidInputError(
            Reason.INVALID_UID, f"{name} is not made of digits and dots (PS3.5 9.1)"
        )
    if len(text) > MAX_UID_LENGTH:
        raise InvalidInputError(
            Reason.INVALID_UID, f"{name} is {len(text)} characters long; at most 64 are allowed"
        )
    return text
