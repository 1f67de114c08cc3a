"""Checks made before a job starts, so a wrong URL, missing credentials or an empty glob give
one clear error at launch instead of a million dead letters."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import requests
from apache_beam.io.filesystems import FileSystems

from transforms.dicomweb import http
from transforms.dicomweb.auth import AuthConfig, make_session
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.errors import HttpError


class PreflightError(Exception):
    pass


def check_inputs(patterns: Iterable[str]) -> None:
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as exc:  # Beam raises BeamIOError and friends
            raise PreflightError(f"cannot list {pattern!r}: {type(exc).__name__}") from None
        if not matched:
            raise PreflightError(f"no file matches {pattern!r}")


def check_store(
    endpoint: DicomwebEndpoint,
    auth: AuthConfig,
    *,
    session_factory: Callable[[], requests.Session] | None = None,
) -> None:
    """One search with limit=1: proves the URL, the credentials and the permission to read."""
    url = DicomwebEndpoint.redacted(endpoint.base_url)
    try:
        session = session_factory() if session_factory else make_session(auth, pool_size=1)
    except Exception as exc:
        raise PreflightError(f"cannot set up {auth.kind} credentials: {exc}") from None
    policy = http.RetryPolicy(max_attempts=3, initial_backoff=0.5, timeout=(10.0, 30.0))
    try:
        resp = http.send(
            session,
            "GET",
            endpoint.studies_url(),
            params={"limit": 1},
            headers={"Accept": "application/dicom+json"},
            policy=policy,
        )
    except HttpError as exc:
        detail = f" ({exc.detail})" if exc.detail else ""
        raise PreflightError(f"{url} does not answer: {exc.message}{detail}") from None
    finally:
        session.close()
    if resp.status in (401, 403):
        raise PreflightError(
            f"{url} refused the credentials (HTTP {resp.status}); check --auth and, for Google, "
            "that the account has roles/healthcare.dicomEditor on the store"
        )
    if resp.status not in (200, 204):
        raise PreflightError(f"{url}/studies answered HTTP {resp.status}; is it a DICOMweb root?")
