"""Where a DICOMweb store lives, and the URLs of its resources.

Any DICOMweb base URL works (``http://127.0.0.1:8042/dicom-web`` for Orthanc); a Google Cloud
Healthcare API store can also be named by its project, location, dataset and store.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

GOOGLE_API_ROOT = "https://healthcare.googleapis.com/v1"

_GOOGLE_ID = re.compile(r"[A-Za-z0-9_.\-]+")
_GOOGLE_STORE_PATH = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/datasets/(?P<dataset>[^/]+)"
    r"/dicomStores/(?P<store>[^/]+)/dicomWeb$"
)


@dataclass(frozen=True)
class DicomwebEndpoint:
    """A validated DICOMweb base URL (no trailing slash).

    Args:
      base_url: ``http(s)://host[:port]/path`` of the DICOMweb service root. User information
        (``user:pass@``) and query strings are refused so credentials never end up in logs.
    """

    base_url: str

    def __post_init__(self) -> None:
        if any(c.isspace() or not c.isprintable() for c in self.base_url):
            # urlsplit silently drops tabs and newlines; they must not reach a request line.
            raise ValueError("DICOMweb URL must not contain spaces or control characters")
        url = self.base_url.rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"DICOMweb URL must be http(s)://host/...: got {self.redacted(url)!r}")
        if parts.username or parts.password:
            raise ValueError("DICOMweb URL must not contain credentials; use --auth basic")
        if "?" in url or "#" in url:
            raise ValueError("DICOMweb URL must not contain a query or a fragment")
        object.__setattr__(self, "base_url", url)

    @classmethod
    def for_google_store(
        cls, project: str, location: str, dataset: str, dicom_store: str
    ) -> DicomwebEndpoint:
        """The DICOMweb root of a Cloud Healthcare API DICOM store."""
        for name, value in (
            ("project", project),
            ("location", location),
            ("dataset", dataset),
            ("dicom_store", dicom_store),
        ):
            if not value or not _GOOGLE_ID.fullmatch(value):
                raise ValueError(f"invalid Google {name}: {value!r}")
        return cls(
            f"{GOOGLE_API_ROOT}/projects/{project}/locations/{location}"
            f"/datasets/{dataset}/dicomStores/{dicom_store}/dicomWeb"
        )

    @property
    def is_google(self) -> bool:
        parts = urllib.parse.urlsplit(self.base_url)
        return (parts.hostname or "").endswith("healthcare.googleapis.com")

    @property
    def google_store_path(self) -> str | None:
        """``projects/.../dicomStores/S/dicomWeb`` for a Google store, else None."""
        path = urllib.parse.urlsplit(self.base_url).path
        match = re.search(r"projects/.*$", path)
        if match and _GOOGLE_STORE_PATH.match(match.group(0)):
            return match.group(0)
        return None

    def studies_url(self) -> str:
        return f"{self.base_url}/studies"

    def study_url(self, study_uid: str) -> str:
        return f"{self.base_url}/studies/{_uid(study_uid)}"

    def study_instances_url(self, study_uid: str) -> str:
        return f"{self.study_url(study_uid)}/instances"

    def instance_url(self, study_uid: str, series_uid: str, sop_uid: str) -> str:
        return f"{self.study_url(study_uid)}/series/{_uid(series_uid)}/instances/{_uid(sop_uid)}"

    # --- retrieve (WADO-RS) family ---
    def series_url(self, study_uid: str, series_uid: str) -> str:
        return f"{self.study_url(study_uid)}/series/{_uid(series_uid)}"

    def resource_url(self, study_uid: str, series_uid: str | None, sop_uid: str | None) -> str:
        """The study, series or instance URL, whichever the UIDs given name."""
        if series_uid is None:
            return self.study_url(study_uid)
        if sop_uid is None:
            return self.series_url(study_uid, series_uid)
        return self.instance_url(study_uid, series_uid, sop_uid)

    @staticmethod
    def redacted(url: str) -> str:
        """The URL without user information or query: safe to log."""
        parts = urllib.parse.urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"  # IPv6
        if parts.port:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def __str__(self) -> str:
        return self.base_url


def _uid(value: str) -> str:
    # UIDs are validated before they get here; quoting keeps a bad one from changing the path.
    return urllib.parse.quote(value, safe=".")
