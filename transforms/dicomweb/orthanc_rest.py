"""Orthanc's own REST API for deletes (the opt-in ``--delete_api orthanc``). No Beam here.

DICOMweb has no standard DELETE and Orthanc answers 405 to one. Its documented REST API deletes
by Orthanc identifier instead: ``POST /tools/lookup`` with a UID answers the resources carrying
it (``[{"ID": ..., "Path": "/studies/<id>", "Type": "Study"}]``), then
``DELETE /studies|series|instances/<id>`` removes one.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from transforms.dead_letter import Reason
from transforms.dicomweb import http
from transforms.errors import HttpError

# Our level -> (Orthanc's resource Type in lookup answers, its REST collection).
ORTHANC_LEVELS = {
    "studies": ("Study", "studies"),
    "series": ("Series", "series"),
    "instances": ("Instance", "instances"),
}

Send = Callable[..., http.Response]


def rest_root(dicomweb_url: str) -> str:
    """Orthanc's REST root under a DICOMweb root: ``http://h:8042/dicom-web`` -> ``http://h:8042``.

    The DICOMweb plugin is mounted one path segment below the REST root (``DicomWeb.Root``,
    ``/dicom-web/`` by default); a plugin mounted elsewhere needs the root given explicitly.
    """
    parts = urllib.parse.urlsplit(dicomweb_url.rstrip("/"))
    path = parts.path.rsplit("/", 1)[0] if "/" in parts.path else ""
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass(frozen=True)
class Lookup:
    """What ``/tools/lookup`` found for one UID at one level."""

    ids: tuple[str, ...]
    attempts: int


class OrthancRest:
    """Lookup and delete through Orthanc's REST API, over a caller's retrying ``send``.

    Args:
      root: the REST root, e.g. ``http://127.0.0.1:8042``.
      send: ``send(method, url, body=...)`` returning an ``http.Response`` (retries included).
    """

    def __init__(self, root: str, send: Send) -> None:
        self._root = root.rstrip("/")
        self._send = send

    def lookup(self, uid: str, level: str) -> Lookup:
        """Orthanc ids of the resources of ``level`` whose UID is ``uid`` (usually 0 or 1)."""
        kind, _ = ORTHANC_LEVELS[level]
        resp = self._send("POST", f"{self._root}/tools/lookup", body=uid.encode("ascii"))
        if resp.status != 200:
            raise HttpError(
                Reason.HTTP_ERROR,
                f"Orthanc's /tools/lookup answered HTTP {resp.status}",
                status=resp.status,
                detail=resp.text_detail(),
                attempts=resp.attempts,
            )
        try:
            found = json.loads(resp.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            found = None
        if not isinstance(found, list):
            raise HttpError(
                Reason.BAD_RESPONSE, "Orthanc's /tools/lookup answer is not a JSON list", status=200
            )
        ids = tuple(
            str(item["ID"])
            for item in found
            if isinstance(item, dict) and item.get("Type") == kind and "ID" in item
        )
        return Lookup(ids, resp.attempts)

    def delete(self, level: str, orthanc_id: str) -> http.Response:
        _, collection = ORTHANC_LEVELS[level]
        quoted = urllib.parse.quote(orthanc_id, safe="-")
        return self._send("DELETE", f"{self._root}/{collection}/{quoted}")
