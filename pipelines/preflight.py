"""Checks made before a job starts, so a wrong URL, missing credentials, an empty glob or an
output that cannot be written give one clear error at launch instead of a million dead letters.

``check_inputs`` and ``check_output`` run on every launch; ``check_store`` unless
``--no_preflight``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable

import requests
from apache_beam.io.filesystems import FileSystems

from transforms.dead_letter import Reason
from transforms.dicomweb import http
from transforms.dicomweb.auth import AuthConfig, make_session
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.errors import HttpError
from transforms.read_dicom import expand_globstar


class PreflightError(Exception):
    pass


def check_inputs(patterns: Iterable[str]) -> None:
    """Every pattern (with ``dir/**/x`` also meaning ``dir/x``) matches at least one file."""
    for pattern in patterns:
        matched = False
        for variant in expand_globstar(pattern):
            try:
                matched = bool(FileSystems.match([variant])[0].metadata_list)
            except Exception as exc:  # Beam raises BeamIOError and friends
                raise PreflightError(f"cannot list {pattern!r}: {type(exc).__name__}") from None
            if matched:
                break
        if not matched:
            raise PreflightError(f"no file matches {pattern!r}")


RESULT_NAMES = ("stored", "dead_letter")


def check_output(prefix: str, *, overwrite: bool, names: Iterable[str] = RESULT_NAMES) -> list[str]:
    """Refuse a prefix holding results of another run (``--overwrite`` deletes them: the paths
    are returned), and prove the prefix can be written, before anything is sent."""
    patterns = [f"{prefix}/{name}-*" for name in names]
    try:
        found = sorted(m.path for r in FileSystems.match(patterns) for m in r.metadata_list)
    except Exception as exc:
        raise PreflightError(f"cannot list the output {prefix!r}: {type(exc).__name__}") from None
    if found and not overwrite:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise PreflightError(
            f"the output {prefix!r} already holds results of another run ({shown}): "
            "choose another --output, or add --overwrite to delete them first"
        )
    if found:
        try:
            FileSystems.delete(found)
        except Exception as exc:
            raise PreflightError(
                f"cannot delete the earlier results in {prefix!r}: {type(exc).__name__}"
            ) from None
        logging.info("--overwrite: deleted %d result files of an earlier run", len(found))
    probe = f"{prefix}/.write-test-{uuid.uuid4().hex}"
    try:
        with FileSystems.create(probe) as f:
            f.write(b"")
        FileSystems.delete([probe])
    except Exception as exc:
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        raise PreflightError(f"the output {prefix!r} cannot be written ({detail})") from None
    return found


def check_store(
    endpoint: DicomwebEndpoint,
    auth: AuthConfig,
    *,
    session_factory: Callable[[], requests.Session] | None = None,
) -> None:
    """One search with limit=1: proves the URL, the credentials and the permission to read."""
    url = DicomwebEndpoint.redacted(endpoint.base_url)
    try:
        session = make_session(auth, pool_size=1, factory=session_factory)
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
            # The check stands for the STOW POSTs: a redirect they could not follow fails it.
            redirect_as="POST",
        )
    except HttpError as exc:
        if exc.reason == Reason.REDIRECTED:
            raise PreflightError(f"{url} redirects: {exc.message}") from None
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
