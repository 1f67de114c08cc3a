"""DICOM JSON metadata + a JPEG -> a validated instance, and its Part 10 form. No Beam here.

Two steps, both pure:

* ``prepare(...)`` checks the metadata before any request is made: it must parse as DICOM JSON
  (pydicom), carry SOPClassUID and the Study/Series/SOP Instance UIDs (or have them generated
  under ``uid_root``), and agree with the JPEG's header on the Image Pixel attributes, which are
  filled in when absent (or taken from the JPEG with ``fix_metadata``). The result,
  ``PreparedInstance``, holds the final metadata as DICOM JSON without its PixelData.
* ``build_part10(prepared, jpeg)`` makes the Part 10 file: File Meta Information, the dataset,
  and the JPEG encapsulated unchanged as one fragment after a basic offset table (PS3.5 A.4).

Generated UIDs are deterministic (PS3.5 B.2 style: root + digits of a hash): the study and the
series from the input's folder (so one folder is one series of one study unless the metadata
names them), the SOP instance from the input's path and the content of its JSON and JPEG. A
re-run generates the same UIDs, so the store reports ``already_present`` instead of a copy.

Messages never quote metadata values (they may be patient data); only Image Pixel attributes,
which describe the picture, are shown.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, generate_uid

from transforms.dead_letter import Reason
from transforms.dicom import dicom_json
from transforms.dicom.encode import encode_dataset, encode_file_meta
from transforms.dicom.jpeg import JpegInfo
from transforms.dicom.uid import check_uid
from transforms.errors import InvalidInputError
from transforms.records import InstanceUids

PIXEL_DATA = "7FE00010"
TRANSFER_SYNTAX_TAG = "00020010"
SPECIFIC_CHARACTER_SET = "00080005"
DEFAULT_UID_ROOT = "1.2.826.0.1.3680043.8.498"  # pydicom's root; use your organisation's
MAX_UID_ROOT_LENGTH = 44  # leaves 20 digits of hash in a 64-character UID
IMPLEMENTATION_VERSION = "DICOMWEB_BEAM_1"
_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
# Tags and VRs of the attributes set here (DICOM JSON keys are tags).
_TAGS = {
    "StudyInstanceUID": "0020000D",
    "SeriesInstanceUID": "0020000E",
    "SOPInstanceUID": "00080018",
    "SOPClassUID": "00080016",
    "Rows": "00280010",
    "Columns": "00280011",
    "SamplesPerPixel": "00280002",
    "PhotometricInterpretation": "00280004",
    "PlanarConfiguration": "00280006",
    "NumberOfFrames": "00280008",
    "BitsAllocated": "00280100",
    "BitsStored": "00280101",
    "HighBit": "00280102",
    "PixelRepresentation": "00280103",
    "LossyImageCompression": "00282110",
    "SpecificCharacterSet": SPECIFIC_CHARACTER_SET,
}
_VR_OF = {
    **{k: "US" for k in _TAGS},
    "PhotometricInterpretation": "CS",
    "NumberOfFrames": "IS",
    "LossyImageCompression": "CS",
    "SpecificCharacterSet": "CS",
}
FIX_HINT = "--fix_metadata would take the JPEG's values"


@dataclass(frozen=True)
class BuildOptions:
    """How to complete and check the metadata.

    Args:
      generate_uids: generate missing Study/Series/SOP Instance UIDs (never SOPClassUID).
      uid_root: the root of generated UIDs (digits and dots, at most 44 characters).
      sop_class_uid: SOPClassUID for metadata that has none.
      fix_metadata: take the JPEG's Image Pixel values where the metadata disagrees.
    """

    generate_uids: bool = False
    uid_root: str = DEFAULT_UID_ROOT
    sop_class_uid: str | None = None
    fix_metadata: bool = False

    def __post_init__(self) -> None:
        try:
            check_uid(self.uid_root, "--uid_root")
            if self.sop_class_uid is not None:
                check_uid(self.sop_class_uid, "--sop_class_uid")
        except InvalidInputError as exc:
            raise ValueError(exc.message) from None
        if len(self.uid_root) > MAX_UID_ROOT_LENGTH:
            raise ValueError(f"--uid_root is longer than {MAX_UID_ROOT_LENGTH} characters")


@dataclass(frozen=True)
class PreparedInstance:
    """A validated pair, ready to be built (client mode) or sent as JSON + JPEG (server mode).

    ``metadata_json`` is the only place this project keeps metadata in an element: it travels
    from validation to the sender in memory and is never written to results or dead letters.

    Attributes:
      source: the input the user knows the pair by (the JSON file, or the JPEG in template mode).
      json_path: the JSON file, None in template mode.
      jpeg_path: the JPEG file.
      jpeg_size: its size in bytes at validation time.
      uids: Study/Series/SOP Instance UIDs (given or generated).
      sop_class_uid: SOP Class UID.
      transfer_syntax_uid: from the JPEG's coding process.
      generated_uids: (keyword, UID) for each UID this run generated.
      metadata_json: DICOM JSON of the dataset, without PixelData nor File Meta elements; ""
        in a slim pair (``slim``), whose metadata is derived again from its JSON file when
        needed (``complete``).
      jpeg_info: what the JPEG's header said at validation.
      json_digest: a digest of the JSON file's bytes at validation ("" in template mode).
    """

    source: str
    json_path: str | None
    jpeg_path: str
    jpeg_size: int
    uids: InstanceUids
    sop_class_uid: str
    transfer_syntax_uid: str
    generated_uids: tuple[tuple[str, str], ...]
    metadata_json: str
    jpeg_info: JpegInfo | None = None
    json_digest: str = ""

    @property
    def is_slim(self) -> bool:
        return not self.metadata_json


PairRow = tuple[Any, ...]


def to_row(pair: PreparedInstance) -> PairRow:
    """The pair as a tuple of plain values, for crossing a grouping: Beam encodes it directly
    (a dataclass is pickled), which halves the encoding time and the runner's memory per pair."""
    info = pair.jpeg_info
    return (
        pair.source,
        pair.json_path,
        pair.jpeg_path,
        pair.jpeg_size,
        pair.uids.study,
        pair.uids.series,
        pair.uids.sop,
        pair.sop_class_uid,
        pair.transfer_syntax_uid,
        pair.generated_uids,
        pair.metadata_json,
        None
        if info is None
        else (
            info.rows,
            info.columns,
            info.components,
            info.precision,
            info.process,
            info.sampling,
            info.rgb,
            info.predictor,
        ),
        pair.json_digest,
    )


def from_row(row: PairRow) -> PreparedInstance:
    """``to_row``'s inverse (a coder may turn the nested tuples into lists)."""
    (source, json_path, jpeg_path, size, study, series, sop, sop_class, syntax, generated,
     metadata, info, digest) = row  # fmt: skip
    return PreparedInstance(
        source=source,
        json_path=json_path,
        jpeg_path=jpeg_path,
        jpeg_size=size,
        uids=InstanceUids(study, series, sop),
        sop_class_uid=sop_class,
        transfer_syntax_uid=syntax,
        generated_uids=tuple((str(k), str(v)) for k, v in generated),
        metadata_json=metadata,
        jpeg_info=None
        if info is None
        else JpegInfo(
            info[0],
            info[1],
            info[2],
            info[3],
            info[4],
            tuple((int(h), int(v)) for h, v in info[5]),
            info[6],
            info[7],
        ),
        json_digest=digest,
    )


def json_digest(data: bytes) -> str:
    """A digest of a JSON file's bytes: its pair's metadata is derived again from the file only
    if the file still has this digest."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def slim(pair: PreparedInstance) -> PreparedInstance:
    """The pair without its metadata when it can be derived again from its JSON file: what
    crosses a grouping stays small (a runner keeps every grouped element in memory)."""
    if pair.json_path is None or not pair.json_digest or pair.jpeg_info is None:
        return pair
    return dataclasses.replace(pair, metadata_json="")


def complete(pair: PreparedInstance, data: bytes) -> PreparedInstance:
    """A slim pair with its metadata again, from its JSON file's bytes ``data``: the same
    validation, with the UIDs and JPEG values found the first time.

    Raises:
      InvalidInputError: ``unreadable`` when the file changed since it was validated.
    """
    if not pair.is_slim:
        return pair
    elements = metadata_elements(pair, data)
    return dataclasses.replace(pair, metadata_json=json.dumps(elements, ensure_ascii=False))


def metadata_elements(pair: PreparedInstance, data: bytes | None = None) -> dict[str, Any]:
    """The pair's final metadata as DICOM JSON elements (what ``metadata_json`` holds); a slim
    pair's derived again from its JSON file's bytes ``data`` (see ``complete``). Senders use
    the elements as they are, without a JSON text in between.

    Raises:
      InvalidInputError: ``unreadable`` when the file changed since it was validated.
    """
    if not pair.is_slim:
        return cast(dict[str, Any], json.loads(pair.metadata_json))
    if data is None or pair.jpeg_info is None or json_digest(data) != pair.json_digest:
        raise InvalidInputError(Reason.UNREADABLE, "the JSON file changed since it was validated")
    elements = load_dicom_json(data.decode("utf-8-sig"))
    for keyword, value in pair.generated_uids:
        elements[_TAGS[keyword]] = {"vr": "UI", "Value": [value]}
    uids, sop_class, _, elements = _checked(
        elements,
        pair.jpeg_info,
        _options_for(pair.sop_class_uid),
        folder="",
        source=pair.source,
        content_digest="",
        recheck=False,  # the same bytes passed it (the digest says so)
    )
    if (uids, sop_class) != (pair.uids, pair.sop_class_uid):
        raise InvalidInputError(Reason.UNREADABLE, "the JSON file changed since it was validated")
    return elements


@functools.lru_cache(maxsize=64)
def _options_for(sop_class_uid: str) -> BuildOptions:
    # The values were checked (or fixed) at validation; the SOP Class UID may have come from
    # --sop_class_uid.
    return BuildOptions(sop_class_uid=sop_class_uid, fix_metadata=True)


def load_dicom_json(text: str | bytes) -> dict[str, Any]:
    """One DICOM JSON dataset: an object, or an array holding exactly one object."""
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(
            Reason.NOT_DICOM_JSON, f"the metadata is not JSON ({type(exc).__name__})"
        ) from None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        raise InvalidInputError(
            Reason.NOT_DICOM_JSON,
            "the metadata must be one DICOM JSON dataset (an object, or an array of one)",
        )
    return data


def pixel_data_uri(dataset: Mapping[str, Any]) -> str | None:
    """The BulkDataURI of PixelData (7FE0,0010), when the metadata names one."""
    element = dataset.get(PIXEL_DATA) or dataset.get(PIXEL_DATA.lower())
    uri = element.get("BulkDataURI") if isinstance(element, dict) else None
    return uri if isinstance(uri, str) and uri else None


def generated_uid(root: str, *parts: str) -> str:
    """A UID under ``root`` derived from ``parts`` only (same parts, same UID)."""
    return str(generate_uid(prefix=root + ".", entropy_srcs=list(parts)))


def prepare(
    metadata: Mapping[str, Any],
    info: JpegInfo,
    options: BuildOptions,
    *,
    source: str,
    json_path: str | None,
    jpeg_path: str,
    jpeg_size: int,
    folder: str,
    content_digest: str = "",
    json_digest: str = "",
    recheck: bool = True,
    slim: bool = False,
) -> PreparedInstance:
    """Validate and complete the metadata of one pair (see the module docstring).

    Args:
      content_digest: a digest of the JSON and JPEG bytes; needed only to generate a SOP
        Instance UID.
      json_digest: ``json_digest`` of the JSON file, when the metadata comes from one (lets a
        ``slim`` pair be ``complete``d again).
      recheck: False skips the DICOM JSON check, for metadata that passed it already.
      slim: return the pair ``slim`` (without its metadata) when it can be, as ``slim(...)``
        would, without serialising the metadata first.

    Raises:
      InvalidInputError: ``not_dicom_json``, ``missing_uid``, ``invalid_uid`` or
        ``metadata_mismatch``.
    """
    uids, sop_class, generated, elements = _checked(
        metadata,
        info,
        options,
        folder=folder,
        source=source,
        content_digest=content_digest,
        recheck=recheck,
    )
    keep = not (slim and json_path is not None and json_digest)
    return PreparedInstance(
        source=source,
        json_path=json_path,
        jpeg_path=jpeg_path,
        jpeg_size=jpeg_size,
        uids=uids,
        sop_class_uid=sop_class,
        transfer_syntax_uid=info.transfer_syntax_uid,
        generated_uids=generated,
        metadata_json=json.dumps(elements, ensure_ascii=False) if keep else "",
        jpeg_info=info,
        json_digest=json_digest,
    )


def _checked(
    metadata: Mapping[str, Any],
    info: JpegInfo,
    options: BuildOptions,
    *,
    folder: str,
    source: str,
    content_digest: str,
    recheck: bool,
) -> tuple[InstanceUids, str, tuple[tuple[str, str], ...], dict[str, Any]]:
    """``prepare``'s checks: (UIDs, SOP Class UID, generated UIDs, final elements)."""
    elements = {k.upper(): v for k, v in metadata.items()}
    declared_syntax = _pop_file_meta(elements)
    _pop_pixel_data(elements, recheck)
    if recheck:
        dicom_json.check(elements)  # the check only: the elements themselves are kept as given
    generated: list[tuple[str, str]] = []
    for keyword in _UID_KEYWORDS:
        tag = _TAGS[keyword]
        if _first(elements, tag) in (None, ""):
            if not options.generate_uids:
                raise InvalidInputError(
                    Reason.MISSING_UID, f"{keyword} is missing (--generate_uids would make one)"
                )
            value = _generate(keyword, options.uid_root, elements, folder, source, content_digest)
            elements[tag] = {"vr": "UI", "Value": [value]}
            generated.append((keyword, value))
    if _first(elements, _TAGS["SOPClassUID"]) in (None, ""):
        if options.sop_class_uid is None:
            raise InvalidInputError(
                Reason.MISSING_UID,
                "SOPClassUID is missing (put it in the metadata or the template, or give "
                "--sop_class_uid; it is never generated)",
            )
        elements[_TAGS["SOPClassUID"]] = {"vr": "UI", "Value": [options.sop_class_uid]}
    study, series, sop, sop_class = (
        check_uid(_first(elements, _TAGS[k]), k) for k in (*_UID_KEYWORDS, "SOPClassUID")
    )
    _reconcile(elements, info, declared_syntax, options.fix_metadata)
    if _first(elements, SPECIFIC_CHARACTER_SET) is None:
        _put(elements, "SpecificCharacterSet", "ISO_IR 192")  # JSON text is Unicode
    if _first(elements, _TAGS["LossyImageCompression"]) is None and info.process != "lossless":
        _put(elements, "LossyImageCompression", "01")
    return InstanceUids(study, series, sop), sop_class, tuple(generated), elements


def _pop_file_meta(elements: dict[str, Any]) -> str | None:
    """Drop group 0002 (it belongs to the File Meta header), keeping the declared syntax."""
    syntax = None
    for tag in [t for t in elements if t.startswith("0002")]:
        element = elements.pop(tag)
        if tag == TRANSFER_SYNTAX_TAG and isinstance(element, dict):
            values = element.get("Value")
            if isinstance(values, list) and values and isinstance(values[0], str):
                syntax = values[0]
    return syntax


def _pop_pixel_data(elements: dict[str, Any], check: bool = True) -> None:
    element = elements.pop(PIXEL_DATA, None)
    if not check:
        return
    if isinstance(element, dict) and ("InlineBinary" in element or "Value" in element):
        raise InvalidInputError(
            Reason.NOT_DICOM_JSON,
            "PixelData (7FE0,0010) must be a BulkDataURI naming the JPEG, not inline data",
        )
    if _has_bulk_data(elements):
        raise InvalidInputError(
            Reason.NOT_DICOM_JSON,
            "only PixelData may be a BulkDataURI (the JPEG); other elements need their values",
        )


def _has_bulk_data(value: Any) -> bool:
    # Plain loops (this runs for every pair): scalars are skipped without a call.
    items: Iterable[Any]
    if isinstance(value, dict):
        if "BulkDataURI" in value:
            return True
        items = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return False
    for v in items:
        if isinstance(v, dict | list) and _has_bulk_data(v):
            return True
    return False


def dataset_from_json(elements: dict[str, Any]) -> Dataset:
    """pydicom's Dataset of DICOM JSON elements, or ``InvalidInputError(not_dicom_json)``."""
    return cast(Dataset, dicom_json.from_json(elements))


def _generate(
    keyword: str, root: str, elements: Mapping[str, Any], folder: str, source: str, digest: str
) -> str:
    if keyword == "StudyInstanceUID":
        return generated_uid(root, "study", folder)
    if keyword == "SeriesInstanceUID":
        # Two studies in one folder must not share a series.
        study = _first(elements, _TAGS["StudyInstanceUID"]) or ""
        return generated_uid(root, "series", folder, str(study))
    return generated_uid(root, "sop", source, digest)


def _first(elements: Mapping[str, Any], tag: str) -> Any:
    element = elements.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _put(elements: dict[str, Any], keyword: str, value: object) -> None:
    elements[_TAGS[keyword]] = {"vr": _VR_OF[keyword], "Value": [value]}


@functools.lru_cache(maxsize=256)
def _attributes_of(info: JpegInfo) -> dict[str, int | str]:
    # Read only (never changed): the JPEGs of a run share a few headers' worth of values.
    return info.dicom_attributes()


def _reconcile(
    elements: dict[str, Any], info: JpegInfo, declared_syntax: str | None, fix: bool
) -> None:
    """Image Pixel attributes from the JPEG: filled when absent, checked when present."""
    wanted = _attributes_of(info)
    disagreements = []
    for keyword, value in wanted.items():
        have = _first(elements, _TAGS[keyword])
        if have not in (None, "") and str(have).strip() != str(value):
            disagreements.append(
                f"{keyword} is {str(have)[:32]} in the metadata but {value} in the JPEG"
            )
    frames = _first(elements, _TAGS["NumberOfFrames"])
    if frames not in (None, "") and str(frames).strip() != "1":
        disagreements.append(
            f"NumberOfFrames is {str(frames)[:16]} in the metadata but a JPEG is 1 frame"
        )
    if declared_syntax is not None and declared_syntax != info.transfer_syntax_uid:
        disagreements.append(
            f"TransferSyntaxUID is {declared_syntax[:64]} in the metadata but this "
            f"{info.process} JPEG needs {info.transfer_syntax_uid}"
        )
    if disagreements and not fix:
        raise InvalidInputError(
            Reason.METADATA_MISMATCH, "; ".join(disagreements) + f" ({FIX_HINT})"
        )
    for keyword, value in wanted.items():
        _put(elements, keyword, value)
    if frames not in (None, ""):
        _put(elements, "NumberOfFrames", 1)


def build_part10(
    prepared: PreparedInstance, jpeg: bytes, elements: Mapping[str, Any] | None = None
) -> bytes:
    """The Part 10 file of a prepared pair: the JPEG bytes are encapsulated unchanged.
    ``elements``: the pair's ``metadata_elements`` when the caller has them already.

    The File Meta group and flat metadata are encoded by ``encode`` (pydicom writes datasets it
    does not handle: sequences, binary values, other character sets...); the encapsulated
    PixelData that ends the file (one fragment after a basic offset table) is laid out here,
    which spares copying and re-reading the image. Either way the bytes equal pydicom's
    ``dcmwrite`` (tested).
    """
    head = encode_file_meta(
        sop_class_uid=prepared.sop_class_uid,
        sop_instance_uid=prepared.uids.sop,
        transfer_syntax_uid=prepared.transfer_syntax_uid,
        implementation_class_uid=PYDICOM_IMPLEMENTATION_UID,
        implementation_version_name=IMPLEMENTATION_VERSION,
    )
    if elements is None:
        elements = metadata_elements(prepared)
    dataset = encode_dataset(elements)
    if dataset is None:
        ds = Dataset.from_json(dict(elements))
        if any(tag > _PIXEL_DATA_TAG for tag in ds.keys()):  # rare: let pydicom order them
            return _build_with_pydicom(ds, _file_meta(prepared), jpeg)
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = True, False
        write_dataset(out, ds)
        dataset = out.getvalue()
    fragment = jpeg + b"\x00" * (len(jpeg) % 2)  # items have even lengths
    return b"".join(
        [
            head,
            dataset,
            _PIXEL_DATA_HEADER,
            _ITEM_TAG + (4).to_bytes(4, "little") + (0).to_bytes(4, "little"),  # offsets: [0]
            _ITEM_TAG + len(fragment).to_bytes(4, "little"),
            fragment,
            _SEQUENCE_DELIMITER,
        ]
    )


def _file_meta(prepared: PreparedInstance) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(prepared.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(prepared.uids.sop)
    meta.TransferSyntaxUID = UID(prepared.transfer_syntax_uid)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


_PIXEL_DATA_TAG = 0x7FE00010
# (7FE0,0010) OB, undefined length; items (FFFE,E000); sequence delimiter (FFFE,E0DD).
_PIXEL_DATA_HEADER = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
_ITEM_TAG = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _build_with_pydicom(ds: Dataset, meta: FileMetaDataset, jpeg: bytes) -> bytes:
    ds.file_meta = meta
    ds.PixelData = encapsulate([jpeg], fragments_per_frame=1, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()
