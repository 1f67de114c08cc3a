"""JSON + JPEG test inputs: small JPEGs made with Pillow (or taken from pydicom's test files),
DICOM JSON metadata with a planted patient name, and one bad pair per way a pair can be unusable.

Shared by the tests and the benchmark. Everything is generated under a given directory.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from factory import PATIENT_NAME, testdata, uid
from PIL import Image
from pydicom.encaps import generate_frames

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"


def pixels(width: int, height: int, *, colour: bool = True, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus a little noise: compresses like a photograph, decodes stably."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256])
    noise = np.random.default_rng(seed).integers(0, 16, base.shape)
    rgb = np.clip(base + noise, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return rgb if colour else rgb[..., 0]


def jpeg_bytes(
    width: int = 40,
    height: int = 24,
    *,
    colour: bool = True,
    subsampling: int = 2,
    progressive: bool = False,
    seed: int = 0,
    quality: int = 92,
) -> bytes:
    """A JPEG from Pillow; ``subsampling`` 2 is 4:2:0, 0 is 4:4:4 (colour only)."""
    image = Image.fromarray(pixels(width, height, colour=colour, seed=seed))
    out = io.BytesIO()
    kwargs: dict[str, Any] = {"quality": quality, "progressive": progressive}
    if colour:
        kwargs["subsampling"] = subsampling
    image.save(out, "JPEG", **kwargs)
    return out.getvalue()


def extended_12bit_jpeg() -> bytes:
    """A real 12-bit extended (SOF1) JPEG: the frame of pydicom's JPGExtended.dcm (1024x256).

    (JPEG-lossy.dcm holds the same picture, but its scan header is malformed: libjpeg refuses it.)
    """
    ds = pydicom.dcmread(testdata("JPGExtended.dcm"))
    return next(generate_frames(ds.PixelData, number_of_frames=1))


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels(16, 16)).save(out, "PNG")
    return out.getvalue()


def metadata(
    seed: str,
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    uids: bool = True,
    sop_class: str | None = SECONDARY_CAPTURE,
    pixel_uri: str | None = None,
    **extra: dict[str, Any],
) -> dict[str, Any]:
    """DICOM JSON of one instance (UIDs derived from ``seed`` unless given), PatientName planted."""
    ds: dict[str, Any] = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00080060": {"vr": "CS", "Value": ["XC"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": PATIENT_NAME}]},
        "00100020": {"vr": "LO", "Value": [f"PID-{seed}"]},
        "00200013": {"vr": "IS", "Value": [1]},
    }
    if sop_class:
        ds["00080016"] = {"vr": "UI", "Value": [sop_class]}
    if uids:
        ds["0020000D"] = {"vr": "UI", "Value": [study or uid(f"{seed}-study")]}
        ds["0020000E"] = {"vr": "UI", "Value": [series or uid(f"{seed}-series")]}
        ds["00080018"] = {"vr": "UI", "Value": [sop or uid(f"{seed}-sop")]}
    if pixel_uri:
        ds["7FE00010"] = {"vr": "OB", "BulkDataURI": pixel_uri}
    ds.update(extra)
    return ds


def write_pair(
    directory: Path,
    stem: str,
    meta: dict[str, Any] | list[Any] | str | None,
    jpeg: bytes | None,
    *,
    jpeg_name: str | None = None,
) -> tuple[Path, Path]:
    """``stem.json`` (text as given, or JSON of ``meta``) and the JPEG (``stem.jpg`` by default)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{stem}.json"
    jpeg_path = directory / (jpeg_name or f"{stem}.jpg")
    if meta is not None:
        json_path.write_text(meta if isinstance(meta, str) else json.dumps(meta))
    if jpeg is not None:
        jpeg_path.write_bytes(jpeg)
    return json_path, jpeg_path


def write_good_pairs(directory: Path, count: int, *, seed: str = "good", **jpeg: Any) -> list[Path]:
    """``count`` valid pairs of one study and series; returns the JSON paths."""
    paths = []
    for i in range(count):
        meta = metadata(
            f"{seed}-{i}", study=uid(f"{seed}-study"), series=uid(f"{seed}-series"),
            **{"00200013": {"vr": "IS", "Value": [i + 1]}},
        )  # fmt: skip
        json_path, _ = write_pair(directory, f"{seed}-{i:04d}", meta, jpeg_bytes(seed=i, **jpeg))
        paths.append(json_path)
    return paths


@dataclass(frozen=True)
class BadPair:
    source: Path
    reason: str


def write_bad_pairs(directory: Path) -> list[BadPair]:
    """One pair per way a pair can be unusable, with the dead-letter reason it must get."""
    good = jpeg_bytes(seed=99)
    out: list[BadPair] = []

    def put(stem: str, reason: str, meta: Any, jpeg: bytes | None, **kw: Any) -> None:
        json_path, _ = write_pair(directory, stem, meta, jpeg, **kw)
        out.append(BadPair(json_path, reason))

    put("bad-no-jpeg", "missing_jpeg", metadata("bad-no-jpeg"), None)
    put("bad-corrupt", "not_jpeg", metadata("bad-corrupt"), b"\xff\xd8" + b"corrupt data " * 30)
    put("bad-truncated", "truncated", metadata("bad-truncated"), good[: len(good) // 2])
    put("bad-png", "not_jpeg", metadata("bad-png"), png_bytes())
    put("bad-progressive", "progressive_jpeg", metadata("bad-progressive"),
        jpeg_bytes(progressive=True))  # fmt: skip
    put("bad-not-json", "not_dicom_json", "{this is not json", good)
    put("bad-not-dicom-json", "not_dicom_json", {"PatientName": PATIENT_NAME}, good)
    put("bad-letters-uid", "invalid_uid", metadata("bad-letters", series="1.2.abc.4"), good)
    put("bad-long-uid", "invalid_uid", metadata("bad-long", study="1." + "2" * 70), good)
    put("bad-no-sop-class", "missing_uid", metadata("bad-no-class", sop_class=None), good)
    put(
        "bad-rows",
        "metadata_mismatch",
        metadata("bad-rows", **{"00280010": {"vr": "US", "Value": [999]}}),
        good,
    )
    put(
        "bad-grey-as-colour",
        "metadata_mismatch",
        metadata("bad-grey", **{"00280004": {"vr": "CS", "Value": ["YBR_FULL_422"]}}),
        jpeg_bytes(colour=False),
    )
    # One JPEG claimed by two JSON files: both are dead letters.
    shared = "bad-shared.jpg"
    (directory / shared).write_bytes(good)
    put("bad-claim-a", "jpeg_claimed_twice", metadata("claim-a", pixel_uri=shared), None)
    put("bad-claim-b", "jpeg_claimed_twice", metadata("claim-b", pixel_uri=shared), None)
    return out
