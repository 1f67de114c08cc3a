"""How requests authenticate, chosen by a picklable ``AuthConfig`` and built on the worker.

Secrets never travel in the pipeline graph or in options: a bearer token is read from an
environment variable or a file, a basic-auth password from an environment variable, and Google
credentials come from Application Default Credentials on the worker.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
import requests.adapters
import requests.auth
import urllib3.connection
import urllib3.connectionpool

from transforms.dead_letter import Reason
from transforms.errors import HttpError

AUTH_KINDS = ("google", "bearer", "basic", "none")
GOOGLE_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
USER_AGENT = "dicomweb-beam/0.1"
SEND_BLOCK_SIZE = 1 << 20


@dataclass(frozen=True)
class AuthConfig:
    """Which credentials to send.

    Args:
      kind: ``google`` (Application Default Credentials, refreshed as they expire), ``bearer``
        (a static token), ``basic`` (HTTP basic) or ``none``.
      token_env: for ``bearer``, the name of the environment variable holding the token.
      token_file: for ``bearer``, a file holding the token (used when ``token_env`` is unset).
      username: for ``basic``.
      password_env: for ``basic``, the name of the environment variable holding the password.
    """

    kind: str = "none"
    token_env: str | None = None
    token_file: str | None = None
    username: str | None = None
    password_env: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in AUTH_KINDS:
            raise ValueError(f"auth must be one of {', '.join(AUTH_KINDS)}: got {self.kind!r}")
        if self.kind == "bearer" and not (self.token_env or self.token_file):
            raise ValueError("bearer auth needs token_env or token_file")
        if self.kind == "basic" and not (self.username and self.password_env):
            raise ValueError("basic auth needs username and password_env")

    def build(self) -> requests.auth.AuthBase | None:
        """The requests auth object; call it on the worker (reads env vars, files, ADC)."""
        if self.kind == "google":
            return GoogleAdcAuth()
        if self.kind == "bearer":
            return BearerAuth(self._read_token())
        if self.kind == "basic":
            assert self.username and self.password_env
            password = os.environ.get(self.password_env)
            if password is None:
                raise ValueError(f"environment variable {self.password_env} is not set")
            return requests.auth.HTTPBasicAuth(self.username, password)
        return None

    def _read_token(self) -> str:
        if self.token_env:
            token = os.environ.get(self.token_env)
            if token is None and not self.token_file:
                raise ValueError(f"environment variable {self.token_env} is not set")
            if token is not None:
                return token.strip()
        assert self.token_file
        with open(self.token_file, encoding="utf-8") as f:
            return f.read().strip()


class BearerAuth(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the bearer token is empty")
        self._header = f"Bearer {token}"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = self._header
        return r

    def __repr__(self) -> str:  # never show the token
        return "BearerAuth(***)"


class GoogleAdcAuth(requests.auth.AuthBase):
    """Application Default Credentials, refreshed before they expire.

    Unlike google-auth's ``AuthorizedSession``, this never re-sends a request by itself after a
    401, which would replay an already consumed streaming body; our retry loop owns re-sending.
    """

    def __init__(self) -> None:
        import google.auth
        import google.auth.transport.requests

        self._credentials, _ = google.auth.default(scopes=list(GOOGLE_SCOPES))
        self._refresh_request = google.auth.transport.requests.Request()
        self._lock = threading.Lock()

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        import google.auth.exceptions

        with self._lock:
            if not self._credentials.valid:
                try:
                    self._credentials.refresh(self._refresh_request)
                except google.auth.exceptions.TransportError as exc:
                    # The token endpoint did not answer: as transient as any connection error.
                    raise CredentialsUnreachable(
                        f"fetching Google credentials failed ({type(exc).__name__})"
                    ) from None
                except google.auth.exceptions.GoogleAuthError as exc:
                    raise HttpError(
                        Reason.CREDENTIALS_ERROR,
                        f"Google credentials cannot be refreshed ({type(exc).__name__}); check "
                        "Application Default Credentials on the workers",
                    ) from None
            self._credentials.apply(r.headers)
        return r

    def __repr__(self) -> str:
        return "GoogleAdcAuth()"


def _caret_as_typed(url: str) -> str:
    """Undo urllib3's ``^`` -> ``%5E`` in a request target's query (see ``_CaretConnection``)."""
    path, sep, query = url.partition("?")
    return path + sep + query.replace("%5E", "^") if sep else url


class _CaretConnection(urllib3.connection.HTTPConnection):
    """Sends ``^`` in a query as typed (requests and urllib3 both turn it into ``%5E``):
    Orthanc does not percent-decode QIDO values, so ``PatientName=DOE%5EJOHN`` matches nothing
    there, while servers that decode see the same value either way. No ``%5E`` is meant
    literally: QIDO values escape ``%`` itself as ``%25``."""

    def putrequest(self, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        super().putrequest(method, _caret_as_typed(url), *args, **kwargs)


class _CaretHTTPSConnection(urllib3.connection.HTTPSConnection):
    __doc__ = _CaretConnection.__doc__

    def putrequest(self, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        super().putrequest(method, _caret_as_typed(url), *args, **kwargs)


class _CaretPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _CaretConnection


class _CaretHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _CaretHTTPSConnection


class CredentialsUnreachable(requests.ConnectionError):
    """The credentials' token endpoint did not answer; retried like a connection error."""

    before_sending = True


class _Adapter(requests.adapters.HTTPAdapter):
    """Sends bodies in 1 MiB blocks (urllib3 reads 16 KiB at a time by default), and ``^`` in
    query strings as typed."""

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("blocksize", SEND_BLOCK_SIZE)
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
        self.poolmanager.pool_classes_by_scheme = {"http": _CaretPool, "https": _CaretHTTPSPool}


def make_session(
    auth: AuthConfig,
    *,
    pool_size: int = 8,
    factory: Callable[[], requests.Session] | None = None,
) -> requests.Session:
    """A pooled session: keep-alive connections, no retries of its own (ours are smarter).

    ``factory``, when given, makes the session instead (the transforms' ``session_factory``:
    tests point it at a stand-in or a proxy).
    """
    if factory is not None:
        return factory()
    session = requests.Session()
    adapter = _Adapter(pool_connections=4, pool_maxsize=max(pool_size, 1), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.auth = auth.build()
    return session


def settle_environment(session: requests.Session, url: str) -> None:
    """Read once what ``requests`` reads from the environment on every request otherwise.

    With ``trust_env`` (its default) each request scans every environment variable twice for
    proxies, looks for a CA bundle variable and for ``~/.netrc``: a tenth of the CPU a small
    instance costs. The same settings are resolved here once, for the store's URL (NO_PROXY
    included), and kept on the session: proxies, the CA bundle (TLS verification stays on),
    and netrc credentials when the session has no auth of its own.
    """
    if not session.trust_env:
        return
    settings = session.merge_environment_settings(url, {}, None, None, None)
    for scheme, proxy in settings["proxies"].items():
        session.proxies.setdefault(scheme, proxy)
    if session.verify is True and isinstance(settings["verify"], str):
        session.verify = settings["verify"]
    if session.auth is None:
        session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False
