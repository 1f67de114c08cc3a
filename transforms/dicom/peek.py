"""Look at a DICOM file's header without reading its pixels, and decide if it can be stored.

No Beam here. ``peek_dicom`` walks a Part 10 header with ``header`` (fast), or reads it
with ``pydicom.dcmread(stop_before_pixels=True)`` (raw datasets, deflated and unusual files),
then checks what pydicom does not: that no element claims more bytes than the file has (pydicom
returns a partial dataset for a truncated file), that the pixel data is complete, and that the
UIDs a store needs are present and well formed. Errors name the problem, never a value read from
the file, so no patient data leaks into dead letters or logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

from transforms.dead_letter import Reason
from transforms.dicom.header import (
    DEFLATED,
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    PIXEL_TAGS,
    UNDEFINED_LENGTH,
    Unsupported,
    ends_with_sequence_delimiter,
    scan_part10,
    walk_rest,
)
from transforms.dicom.uid import check_uid
from transforms.errors import InvalidInputError
from transforms.records import DicomFile, InstanceUids

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# pydicom (and numpy behind it) is imported only when a file needs it (raw datasets, deflated
# or unusual files): the fast walker reads ordinary Part 10 files, and a job's start-up is
# shorter by the import.

# Values larger than this are skipped by seeking, so a header with big non-pixel blobs costs
# no memory; their lengths are still checked against the file size.
_DEFER_SIZE = 64 * 1024

_UID_TAGS = (0x0020000D, 0x0020000E, 0x00080018, 0x00080016)
_ROWS = 0x00280010
_WANTED_TAGS = frozenset({*_UID_TAGS, _ROWS})
_REQUIRED_UIDS = (
    ("StudyInstanceUID", "(0020,000D)"),
    ("SeriesInstanceUID", "(0020,000E)"),
    ("SOPInstanceUID", "(0008,0018)"),
    ("SOPClassUID", "(0008,0016)"),
)


def peek_dicom(stream: BinaryIO, *, path: str, size: int) -> DicomFile:
    """Validate the DICOM file in ``stream`` (seekable, at its start) of ``size`` bytes.

    Accepts Part 10 files and raw datasets (no preamble nor File Meta Information: a File Meta
    header is generated for them, to be sent before their bytes).

    Raises:
      InvalidInputError: with reason ``not_dicom``, ``truncated``, ``missing_uid`` or
        ``invalid_uid``.
    """
    head = stream.read(132)
    stream.seek(0)
    is_part10 = len(head) == 132 and head[128:132] == b"DICM"
    if is_part10:
        try:
            return _peek_fast(stream, path=path, size=size)
        except Unsupported:
            stream.seek(0)  # deflated or unusual: pydicom reads it below
    return _peek_with_pydicom(stream, path=path, size=size, is_part10=is_part10)


def _peek_fast(stream: BinaryIO, *, path: str, size: int) -> DicomFile:
    scan = scan_part10(stream, size, _WANTED_TAGS)
    if not scan.has_pixels and _ROWS in scan.values:
        raise InvalidInputError(
            Reason.TRUNCATED, "the header describes an image but the file ends before its pixels"
        )
    study, series, sop, sop_class = (
        check_uid(_uid_text(scan.values.get(tag)), f"{keyword} {label}")
        for (keyword, label), tag in zip(_REQUIRED_UIDS, _UID_TAGS, strict=True)
    )
    transfer_syntax = check_uid(scan.transfer_syntax, "TransferSyntaxUID (0002,0010)")
    return DicomFile(
        path=path,
        size=size,
        uids=InstanceUids(study, series, sop),
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
    )


def _uid_text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.rstrip(b"\x00 ").decode("ascii")
    except UnicodeDecodeError:
        return "\ufffd"  # not a UID; check_uid says so


def _peek_with_pydicom(stream: BinaryIO, *, path: str, size: int, is_part10: bool) -> DicomFile:
    import pydicom

    try:
        ds = pydicom.dcmread(
            stream, stop_before_pixels=True, defer_size=_DEFER_SIZE, force=not is_part10
        )
    except EOFError:
        raise InvalidInputError(Reason.TRUNCATED, "the file ends inside its DICOM header") from None
    except Exception as exc:  # pydicom raises many types; their text may quote values
        if not is_part10:
            raise InvalidInputError(Reason.NOT_DICOM, _NOT_DICOM) from None
        if stream.tell() >= size:  # it failed because the bytes ran out
            raise InvalidInputError(
                Reason.TRUNCATED, "the file ends inside its DICOM header"
            ) from None
        raise InvalidInputError(
            Reason.NOT_DICOM, f"the DICOM header cannot be parsed ({type(exc).__name__})"
        ) from None
    try:
        return _validate(ds, stream, path=path, size=size, is_part10=is_part10)
    except InvalidInputError:
        raise
    except Exception as exc:
        # pydicom converts values lazily: a corrupt VR or value raises (NotImplementedError,
        # ValueError, ...) only when an element is read, here. The text may quote the value.
        raise InvalidInputError(
            Reason.NOT_DICOM, f"the DICOM header cannot be parsed ({type(exc).__name__})"
        ) from None


def _validate(ds: Dataset, stream: BinaryIO, *, path: str, size: int, is_part10: bool) -> DicomFile:
    if not is_part10 and "SOPInstanceUID" not in ds:
        raise InvalidInputError(Reason.NOT_DICOM, _NOT_DICOM)

    _check_file_meta(ds, size)
    transfer_syntax = _transfer_syntax(ds, is_part10)
    if transfer_syntax != DEFLATED:
        # Offsets of a deflated dataset refer to the inflated stream, not the file.
        _check_complete(ds, stream, size)
    study, series, sop, sop_class = (check_uid(ds.get(k), f"{k} {t}") for k, t in _REQUIRED_UIDS)
    prefix = b"" if is_part10 else file_meta_prefix(sop_class, sop, transfer_syntax)
    return DicomFile(
        path=path,
        size=size + len(prefix),
        uids=InstanceUids(study, series, sop),
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
        file_meta_prefix=prefix,
    )


_NOT_DICOM = (
    "not a DICOM file: no 'DICM' marker at byte 128 (Part 10) and not a readable raw dataset"
)


def _check_file_meta(ds: Dataset, size: int) -> None:
    """A file cut inside its File Meta Information is truncated, whatever else is missing."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    if size < 132 + 12:
        raise InvalidInputError(Reason.TRUNCATED, "the file ends inside its File Meta Information")
    group_length = meta.get("FileMetaInformationGroupLength")
    # 132 bytes of preamble and 'DICM', then the 12-byte group length element itself.
    if isinstance(group_length, int) and 132 + 12 + group_length > size:
        raise InvalidInputError(Reason.TRUNCATED, "the file ends inside its File Meta Information")
    for element in meta._dict.values():
        end = _end_of(element)
        if end is not None and end > size:
            raise InvalidInputError(
                Reason.TRUNCATED, "the file ends inside its File Meta Information"
            )


def _transfer_syntax(ds: Dataset, is_part10: bool) -> str:
    if is_part10:
        meta = getattr(ds, "file_meta", None)
        return check_uid(
            meta.get("TransferSyntaxUID") if meta is not None else None,
            "TransferSyntaxUID (0002,0010) of the File Meta Information",
        )
    implicit, little = ds.original_encoding
    if implicit:
        return IMPLICIT_LE
    return EXPLICIT_LE if little else EXPLICIT_BE


def _check_complete(ds: Dataset, stream: BinaryIO, size: int) -> None:
    """Raise ``truncated`` if an element or the pixel data runs past the end of the file."""
    elements = list(ds._dict.values())
    for element in elements:
        end = _end_of(element)
        if end is not None and end > size:
            raise InvalidInputError(
                Reason.TRUNCATED,
                f"the file ends inside element {element.tag} ({size} bytes, {end} needed)",
            )
    position = stream.tell()
    last = elements[-1] if elements else None
    last_end = _end_of(last)
    implicit, little = (bool(flag) for flag in ds.original_encoding)
    if position < size:
        # pydicom stopped before the pixel data: walk it and whatever follows it.
        try:
            walk_rest(stream, size, position, implicit=implicit, little=little)
        except Unsupported:
            raise InvalidInputError(
                Reason.NOT_DICOM, "the pixel data or the elements after it are malformed"
            ) from None
    elif "Rows" in ds and not any(tag in ds for tag in PIXEL_TAGS):
        raise InvalidInputError(
            Reason.TRUNCATED, "the header describes an image but the file ends before its pixels"
        )
    elif last_end is not None and last_end < size:
        # pydicom stops quietly on an incomplete element header at the end of the file.
        raise InvalidInputError(
            Reason.TRUNCATED, f"the file ends inside an element header ({size} bytes)"
        )
    elif (
        last is not None
        and last_end is None
        and not ends_with_sequence_delimiter(stream, size, little=little)
    ):
        # The last element is a sequence of undefined length: pydicom returns what it could
        # read of a cut sequence, so its delimiter must end the file.
        raise InvalidInputError(Reason.TRUNCATED, "the file ends inside a sequence")


def _end_of(element: object) -> int | None:
    tell = getattr(element, "value_tell", None)
    length = getattr(element, "length", None)
    if tell is None or length is None or length == UNDEFINED_LENGTH:
        return None
    return int(tell + length)


def file_meta_prefix(sop_class_uid: str, sop_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, 'DICM' and File Meta Information that make a raw dataset a Part 10 file."""
    import pydicom.filewriter
    import pydicom.uid
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(sop_uid)
    meta.TransferSyntaxUID = pydicom.uid.UID(transfer_syntax)
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    pydicom.filewriter.write_file_meta_info(buffer, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + buffer.getvalue()
