"""QIDO-RS paging, used to learn what a store already holds. No Beam here.

Pages are fetched until an empty page. A page that fails raises: a search is never cut short
and reported as complete (Beam's dicomio returns the rows gathered so far as a success).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

from transforms.dead_letter import Reason
from transforms.dicomweb import http
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.errors import HttpError

SOP_INSTANCE_UID_TAG = "00080018"
_ACCEPT_JSON = {"Accept": "application/dicom+json"}


def iter_qido(
    session: requests.Session,
    url: str,
    *,
    policy: http.RetryPolicy,
    params: dict[str, Any] | None = None,
    page_size: int = 1000,
    clock: http.Clock | None = None,
    on_retry: http.OnRetry | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield every DICOM JSON object of a QIDO search, page by page (limit/offset)."""
    offset = 0
    while True:
        query = dict(params or {}, limit=page_size, offset=offset)
        resp = http.send(
            session,
            "GET",
            url,
            params=query,
            headers=_ACCEPT_JSON,
            policy=policy,
            clock=clock,
            on_retry=on_retry,
        )
        if resp.status == 204:
            return
        if resp.status != 200:
            raise HttpError(
                Reason.HTTP_ERROR,
                f"search answered HTTP {resp.status} at offset {offset}",
                status=resp.status,
                detail=resp.text_detail(),
                attempts=resp.attempts,
            )
        try:
            page = json.loads(resp.body) if resp.body.strip() else []
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise HttpError(
                Reason.BAD_RESPONSE, f"search page at offset {offset} is not JSON", status=200
            ) from None
        if not isinstance(page, list):
            raise HttpError(Reason.BAD_RESPONSE, "search answer is not a JSON array", status=200)
        # Only an empty page ends the search: a server may cap pages below the limit asked
        # (a short page is not the end), and a missed instance would be sent again.
        if not page:
            return
        yield from page
        offset += len(page)


def study_sop_uids(
    session: requests.Session,
    endpoint: DicomwebEndpoint,
    study_uid: str,
    *,
    policy: http.RetryPolicy,
    clock: http.Clock | None = None,
    on_retry: http.OnRetry | None = None,
) -> set[str]:
    """SOP Instance UIDs the store holds in a study (empty if the study is unknown)."""
    uids: set[str] = set()
    rows = iter_qido(
        session,
        endpoint.study_instances_url(study_uid),
        policy=policy,
        params={"includefield": SOP_INSTANCE_UID_TAG},
        clock=clock,
        on_retry=on_retry,
    )
    for row in rows:
        value = (row.get(SOP_INSTANCE_UID_TAG) or {}).get("Value") or []
        if value:
            uids.add(str(value[0]))
    return uids
