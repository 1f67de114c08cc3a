"""WADO-RS requests: what to ask for, how to name the files, and a streamed GET with retries.

No Beam here. The pieces are pure where they can be (URLs, Accept headers, file names, what a
status means, where bulk data and frames are in a metadata document) and tested without HTTP;
``open_stream`` is the one place that talks to the server.

Retries follow ``http.py``'s rules (408/429/5xx and connection errors, Retry-After, bounded
attempts and time) with one difference: a 500 is retried at most ``max_server_error_attempts``
times per resource. Orthanc answers 500 to every transcode it cannot do, and will answer it
again; spending the whole retry budget (minutes of backoff) on each such instance would let a
series of JPEG 2000 files stall a job.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from transforms.dead_letter import Reason, shorten
from transforms.dicomweb import http
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.errors import HttpError

WHATS = ("instances", "metadata", "rendered", "frames", "bulkdata")
GRANULARITIES = ("instance", "series", "study")
RENDER_FORMATS = {"png": ("image/png", ".png"), "jpeg": ("image/jpeg", ".jpg")}
METADATA_FORMATS = ("json", "xml")
DEFAULT_LAYOUT = "{study}/{series}/{instance}.dcm"
NUMBER_OF_FRAMES_TAG = "00280008"
# Frames asked per request when all frames of a large multi-frame instance are wanted.
FRAMES_PER_REQUEST = 64
_PLACEHOLDERS = frozenset({"study", "series", "instance"})
_BULK_PATH = re.compile(r"[0-9A-Fa-f]{8}(/\d+/[0-9A-Fa-f]{8})*")
_SUCCESS = frozenset({200, 203, 206})


def parse_frame_list(text: str) -> tuple[int, ...]:
    """``1,3,5`` -> (1, 3, 5); ``all`` -> () (every frame). Frames are 1-based."""
    value = text.strip().lower()
    if value == "all":
        return ()
    try:
        frames = tuple(int(x) for x in value.split(","))
    except ValueError:
        raise ValueError(f"frames must be 'all' or numbers like 1,3,5: got {text!r}") from None
    if not frames or any(f < 1 for f in frames):
        raise ValueError(f"frame numbers start at 1: got {text!r}")
    return tuple(dict.fromkeys(frames))


def parse_viewport(text: str) -> tuple[int, int]:
    try:
        width, height = (int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"viewport must be W,H (e.g. 512,512): got {text!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"viewport sizes must be positive: got {text!r}")
    return width, height


def parse_bulkdata_path(text: str) -> str:
    """``7FE00010`` or ``YYYYYYYY/i/XXXXXXXX`` (items 0-based, as in Google's guide)."""
    value = text.strip().upper()
    if not _BULK_PATH.fullmatch(value):
        raise ValueError(f"bulk data path must be like 7FE00010 or 00540016/0/00181079: {text!r}")
    return value


@dataclass(frozen=True)
class Layout:
    """Where files go under the output prefix: a template with {study}, {series}, {instance}.

    The template names the DICOM file; other kinds replace its ``.dcm`` suffix (``.png``,
    ``_frame2.raw``, ``_7FE00010.bin``, ...). It must contain ``{instance}`` so that two
    instances never share a file, and stay below the prefix (no absolute path, no ``..``).
    """

    template: str = DEFAULT_LAYOUT

    def __post_init__(self) -> None:
        stem = self.stem
        names = self.placeholders
        if not names <= _PLACEHOLDERS:
            unknown = ", ".join(sorted(names - _PLACEHOLDERS))
            raise ValueError(
                f"layout placeholders are {{study}}, {{series}}, {{instance}}: {unknown}"
            )
        if "instance" not in names:
            raise ValueError("layout must contain {instance} (one file per instance)")
        parts = stem.split("/")
        if stem.startswith("/") or "" in parts or ".." in parts or "." in parts or "\\" in stem:
            raise ValueError("layout must be a relative path below --output (no '..', no '//')")

    @property
    def placeholders(self) -> set[str]:
        return set(re.findall(r"{([^{}]*)}", self.stem))

    @property
    def stem(self) -> str:
        t = self.template.strip()
        return t[: -len(".dcm")] if t.lower().endswith(".dcm") else t

    def relative(self, study: str, series: str, instance: str, suffix: str) -> str:
        return self.stem.format(study=study, series=series, instance=instance) + suffix

    def series_document(self, study: str, series: str, suffix: str) -> str:
        """``{study}/{series}/metadata.json`` with the default layout."""
        if "series" not in self.placeholders:  # its name would be the same for every series
            return f"{study}/{series}/metadata{suffix}"
        return self.relative(study, series, "metadata", suffix)

    @staticmethod
    def study_document(study: str, suffix: str) -> str:
        return f"{study}/metadata{suffix}"


@dataclass(frozen=True)
class WadoConfig:
    """What a retrieve asks for.

    Args:
      endpoint: the DICOMweb service.
      what: instances, metadata, rendered, frames or bulkdata.
      granularity: instance, series or study: one request per instance, or one streamed
        multipart request per series or study (instances and metadata only).
      transfer_syntax: ``*`` (the stored bytes) or a transfer syntax UID (instances, frames).
      render_format: png or jpeg.
      render_frames: None renders the instance; () every frame; (1, 2) those frames.
      viewport: (width, height) of rendered images.
      metadata_format: json or xml.
      frames: () every frame (from NumberOfFrames), or these 1-based frame numbers.
      bulkdata_paths: () every BulkDataURI of the metadata, or these paths.
      layout: file names below the output prefix.
      verify: parse each written DICOM file and check its SOP Instance UID before it lands.
      retry: retry bounds of each request.
      max_server_error_attempts: a 500 is tried this many times per resource at most.
    """

    endpoint: DicomwebEndpoint
    what: str = "instances"
    granularity: str = "instance"
    transfer_syntax: str = "*"
    render_format: str = "png"
    render_frames: tuple[int, ...] | None = None
    viewport: tuple[int, int] | None = None
    metadata_format: str = "json"
    frames: tuple[int, ...] = ()
    bulkdata_paths: tuple[str, ...] = ()
    layout: Layout = field(default_factory=Layout)
    verify: bool = False
    retry: http.RetryPolicy = field(default_factory=http.RetryPolicy)
    max_server_error_attempts: int = 2

    def __post_init__(self) -> None:
        if self.what not in WHATS:
            raise ValueError(f"what must be one of {', '.join(WHATS)}: got {self.what!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}")
        if self.granularity != "instance" and self.what not in ("instances", "metadata"):
            raise ValueError("--granularity series|study applies to instances and metadata only")
        if self.render_format not in RENDER_FORMATS:
            raise ValueError("render_format must be png or jpeg")
        if self.metadata_format not in METADATA_FORMATS:
            raise ValueError("metadata_format must be json or xml")
        if self.transfer_syntax != "*" and not re.fullmatch(
            r"[0-9]+(\.[0-9]+)*", self.transfer_syntax
        ):
            raise ValueError(f"transfer_syntax must be '*' or a UID: {self.transfer_syntax!r}")
        if self.max_server_error_attempts < 1:
            raise ValueError("max_server_error_attempts must be at least 1")

    @property
    def unit_level(self) -> str:
        """The level each request addresses: instances, series or studies."""
        if self.what in ("instances", "metadata") and self.granularity != "instance":
            return "series" if self.granularity == "series" else "studies"
        return "instances"


# --- Accept headers -------------------------------------------------------------------------


def dicom_accepts(transfer_syntax: str, *, single_part_first: bool) -> tuple[str, ...]:
    """Instance retrieval: single-part where the server gives it, else multipart of one part."""
    multipart = f'multipart/related; type="application/dicom"; transfer-syntax={transfer_syntax}'
    single = f"application/dicom; transfer-syntax={transfer_syntax}"
    return (single, multipart) if single_part_first else (multipart,)


def octet_accepts(transfer_syntax: str = "*") -> tuple[str, ...]:
    """Frames and bulk data: multipart (PS3.18), then single part (Google's documented form)."""
    return (
        f'multipart/related; type="application/octet-stream"; transfer-syntax={transfer_syntax}',
        f"application/octet-stream; transfer-syntax={transfer_syntax}",
    )


def metadata_accept(metadata_format: str) -> str:
    if metadata_format == "xml":
        return 'multipart/related; type="application/dicom+xml"'
    return "application/dicom+json"


def request_headers(accept: str) -> dict[str, str]:
    """Accept, and no content coding for binary answers: gzip of pixel data costs the server
    (Orthanc gzips instances when asked, by default requests asks) more CPU than it saves bytes
    on a LAN, and most stored pixel data is compressed already. JSON and XML stay compressible."""
    if "dicom+json" in accept or "dicom+xml" in accept:
        return {"Accept": accept}
    return {"Accept": accept, "Accept-Encoding": "identity"}


# --- URLs -----------------------------------------------------------------------------------


def frames_url(instance_url: str, frames: tuple[int, ...]) -> str:
    return f"{instance_url}/frames/{','.join(str(f) for f in frames)}"


def rendered_url(instance_url: str, frame: int | None) -> str:
    return (
        f"{instance_url}/rendered" if frame is None else f"{instance_url}/frames/{frame}/rendered"
    )


def bulkdata_url(instance_url: str, path: str) -> str:
    """The standard bulk data URL of a path (used when the metadata names no BulkDataURI)."""
    return f"{instance_url}/bulkdata/{path}"


def frame_batches(frames: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    for i in range(0, len(frames), FRAMES_PER_REQUEST):
        yield frames[i : i + FRAMES_PER_REQUEST]


# --- metadata documents ---------------------------------------------------------------------


def number_of_frames(dataset: Mapping[str, Any]) -> int:
    """NumberOfFrames of a DICOM JSON dataset; 1 when absent (a single-frame image)."""
    values = (dataset.get(NUMBER_OF_FRAMES_TAG) or {}).get("Value") or [1]
    try:
        return max(1, int(values[0]))
    except (TypeError, ValueError):
        return 1


def bulkdata_uris(dataset: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, BulkDataURI) of every bulk element, sequences included; item indices 0-based."""
    for tag in sorted(dataset):
        element = dataset[tag]
        if not isinstance(element, dict):
            continue
        path = f"{prefix}{tag.upper()}"
        uri = element.get("BulkDataURI")
        if isinstance(uri, str) and uri:
            yield path, uri
        if element.get("vr") == "SQ":
            for i, item in enumerate(element.get("Value") or []):
                if isinstance(item, dict):
                    yield from bulkdata_uris(item, f"{path}/{i}/")


def bulk_file_suffix(path: str) -> str:
    return f"_{path.replace('/', '_')}.bin"


# --- status policy --------------------------------------------------------------------------


def failure_reason(status: int) -> str:
    """The dead-letter reason of a final, unsuccessful status."""
    if status in (403, 404, 410, 204):
        return Reason.NOT_FOUND  # Google answers 403 for a missing resource
    if status in (400, 406, 415, 501):
        return Reason.UNSUPPORTED
    if status == 500:
        return Reason.SERVER_ERROR
    return Reason.HTTP_ERROR


def try_next_accept(status: int) -> bool:
    """Whether a refusal may be about the form asked (single vs multipart), not the resource."""
    return status in (400, 406, 415)


def is_success(status: int) -> bool:
    return status in _SUCCESS


def keeps_retrying(status: int | None, server_errors: int, max_server_errors: int) -> bool:
    """Whether a retryable answer is retried again (the per-resource cap on 500s)."""
    if status == 500:
        return server_errors < max_server_errors
    return True


# --- the one streamed GET -------------------------------------------------------------------


@dataclass
class Stats:
    """Request statistics of one unit of work, for metrics."""

    requests: int = 0
    retries: int = 0
    throttled_seconds: float = 0.0


@dataclass(frozen=True)
class Answer:
    """A final answer. On success ``response`` is open and streaming: the caller closes it."""

    status: int
    response: requests.Response | None
    content_type: str
    detail: str | None
    attempts: int


# One generator for the process: seeding one per request (``random.Random()``) reads the OS's
# entropy and costs about as much as the rest of a small instance's bookkeeping. Back-off jitter
# needs no more than this (its methods are safe to call from several threads).
_JITTER = random.Random()

_RETRYABLE_EXCEPTIONS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def open_stream(
    session: requests.Session,
    url: str,
    accept: str,
    *,
    policy: http.RetryPolicy,
    max_server_errors: int,
    stats: Stats,
    params: Mapping[str, str] | None = None,
    clock: http.Clock | None = None,
    rng: random.Random | None = None,
) -> Answer:
    """GET ``url`` until a final answer; a success comes back unread (``stream=True``).

    Raises:
      HttpError: ``retries_exhausted`` (transient failures persisted) or ``tls_error``.
    """
    clock = clock or http.SystemClock()
    rng = rng or _JITTER
    start = clock.monotonic()
    attempt = server_errors = 0
    while True:
        attempt += 1
        stats.requests += 1
        headers: Mapping[str, str] = {}
        detail: str | None
        try:
            resp = session.get(
                url,
                headers=request_headers(accept),
                params=params,
                timeout=policy.timeout,
                stream=True,
            )
        except requests.exceptions.SSLError:
            raise HttpError(Reason.TLS_ERROR, "TLS verification failed", attempts=attempt) from None
        except _RETRYABLE_EXCEPTIONS as exc:
            status, detail = None, f"{type(exc).__name__} talking to the server"
        else:
            status, headers = resp.status_code, resp.headers
            content_type = headers.get("Content-Type", "") or ""
            if is_success(status):
                return Answer(status, resp, content_type, None, attempt)
            try:
                body = resp.content[:4096]
            except _RETRYABLE_EXCEPTIONS:
                body = b""
            resp.close()
            detail = shorten(body.decode("utf-8", "replace")) if body else None
            server_errors += status == 500
            if not http.is_retryable(status) or not keeps_retrying(
                status, server_errors, max_server_errors
            ):
                return Answer(status, None, content_type, detail, attempt)
        wait = policy.backoff(attempt, rng)
        asked = http.retry_after_seconds(headers.get("Retry-After")) if status else None
        if asked is not None:
            wait = max(wait, asked)
        elapsed = clock.monotonic() - start
        if attempt >= policy.max_attempts or elapsed + wait > policy.max_elapsed:
            raise HttpError(
                Reason.RETRIES_EXHAUSTED,
                f"gave up after {attempt} attempts over {elapsed:.0f}s: "
                + (f"HTTP {status}" if status else "connection failed"),
                status=status,
                detail=detail,
                attempts=attempt,
            )
        stats.retries += 1
        stats.throttled_seconds += wait
        clock.sleep(wait)
