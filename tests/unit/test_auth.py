"""Unit tests for transforms/auth.py: which credentials a session sends, and how it is built."""

from __future__ import annotations

import base64
import json
import pickle
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from transforms.dicomweb.auth import (
    USER_AGENT,
    AuthConfig,
    BearerAuth,
    GoogleAdcAuth,
    make_session,
)

SECRET = "s3cr3t-token-value"


def apply(auth: requests.auth.AuthBase | None) -> requests.PreparedRequest:
    request = requests.Request("GET", "http://127.0.0.1:1/x").prepare()
    return auth(request) if auth is not None else request


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "oauth"}, "auth must be one of google, bearer, basic, none"),
        ({"kind": ""}, "auth must be one of"),
        ({"kind": "bearer"}, "token_env or token_file"),
        ({"kind": "basic"}, "username and password_env"),
        ({"kind": "basic", "username": "u"}, "username and password_env"),
        ({"kind": "basic", "password_env": "P"}, "username and password_env"),
    ],
)
def test_auth_config_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AuthConfig(**kwargs)


@pytest.mark.parametrize(
    "config",
    [
        AuthConfig(),
        AuthConfig("google"),
        AuthConfig("bearer", token_env="T"),
        AuthConfig("bearer", token_file="/run/secrets/t"),
        AuthConfig("basic", username="u", password_env="P"),
    ],
)
def test_valid_configs_are_picklable_and_hold_no_secret(config: AuthConfig) -> None:
    assert pickle.loads(pickle.dumps(config)) == config
    assert SECRET not in repr(config)


def test_none_builds_no_auth() -> None:
    assert AuthConfig().build() is None
    assert AuthConfig("none").build() is None


def test_bearer_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T", f"  {SECRET}\n")
    auth = AuthConfig("bearer", token_env="T").build()
    assert isinstance(auth, BearerAuth)
    assert apply(auth).headers["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in repr(auth)
    assert SECRET not in str(auth)


def test_bearer_from_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n", encoding="utf-8")
    auth = AuthConfig("bearer", token_file=str(token_file)).build()
    assert apply(auth).headers["Authorization"] == f"Bearer {SECRET}"
    assert repr(auth) == "BearerAuth(***)"


def test_bearer_env_wins_over_file_and_file_is_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    config = AuthConfig("bearer", token_env="T", token_file=str(token_file))
    monkeypatch.setenv("T", "from-env")
    assert apply(config.build()).headers["Authorization"] == "Bearer from-env"
    monkeypatch.delenv("T")
    assert apply(config.build()).headers["Authorization"] == "Bearer from-file"


def test_missing_token_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_TOKEN_VAR", raising=False)
    monkeypatch.setenv("OTHER", SECRET)
    with pytest.raises(ValueError, match="MY_TOKEN_VAR") as info:
        AuthConfig("bearer", token_env="MY_TOKEN_VAR").build()
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("value", ["", "   \n"])
def test_empty_bearer_token_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("T", value)
    with pytest.raises(ValueError, match="empty"):
        AuthConfig("bearer", token_env="T").build()


def test_missing_token_file_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        AuthConfig("bearer", token_file=str(tmp_path / "absent")).build()


def test_basic_from_username_and_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", SECRET)
    auth = AuthConfig("basic", username="orthanc", password_env="PW").build()
    expected = base64.b64encode(f"orthanc:{SECRET}".encode()).decode()
    assert apply(auth).headers["Authorization"] == f"Basic {expected}"


def test_missing_password_env_names_the_variable_not_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DICOMWEB_PASSWORD", raising=False)
    monkeypatch.setenv("PW", SECRET)
    with pytest.raises(ValueError, match="DICOMWEB_PASSWORD") as info:
        AuthConfig("basic", username="orthanc", password_env="DICOMWEB_PASSWORD").build()
    assert SECRET not in str(info.value)


def test_make_session_has_no_retries_of_its_own_and_verifies_tls() -> None:
    session = make_session(AuthConfig(), pool_size=3)
    for prefix in ("http://", "https://"):
        adapter = session.get_adapter(prefix + "example.org/")
        assert isinstance(adapter, requests.adapters.HTTPAdapter)
        assert adapter.max_retries.total == 0
        assert adapter.max_retries.read is False
        assert adapter._pool_maxsize == 3
    assert session.verify is True
    assert session.headers["User-Agent"] == USER_AGENT
    assert session.headers["User-Agent"].startswith("dicomweb-beam/")
    assert session.auth is None


def test_make_session_pool_is_at_least_one() -> None:
    session = make_session(AuthConfig(), pool_size=0)
    assert session.get_adapter("http://x/")._pool_maxsize == 1


def test_make_session_with_bearer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T", SECRET)
    session = make_session(AuthConfig("bearer", token_env="T"))
    assert isinstance(session.auth, BearerAuth)
    assert SECRET not in repr(session.auth)


@pytest.fixture
def hanging_up_server() -> Iterator[tuple[int, list[int]]]:
    """Accepts connections, reads the request, closes without answering; counts connections."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    connections: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            connections.append(1)
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], connections
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


def test_session_does_not_resend_after_a_dropped_connection(
    hanging_up_server: tuple[int, list[int]],
) -> None:
    port, connections = hanging_up_server
    session = make_session(AuthConfig())
    with pytest.raises(requests.ConnectionError):
        session.get(f"http://127.0.0.1:{port}/studies", timeout=5)
    assert len(connections) == 1  # urllib3's own retries would have reconnected


# --- Google Application Default Credentials against the loopback stand-in ------------------


@pytest.fixture
def adc_file(tmp_path: Path, google_standin: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "adc.json"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "x",
                "client_secret": "y",
                "refresh_token": "z",
                "token_uri": google_standin.token_url,
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    for name in (
        "GOOGLE_CLOUD_PROJECT",
        "GCLOUD_PROJECT",
        "CLOUDSDK_CORE_PROJECT",
        "GOOGLE_CLOUD_QUOTA_PROJECT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    # google-auth >= 2.4x ignores an authorized_user file's token_uri ("always overrides" with
    # Google's endpoint, see google/oauth2/credentials.py from_authorized_user_info); point that
    # default at the stand-in so the refresh stays on loopback.
    import google.oauth2.credentials

    monkeypatch.setattr(
        google.oauth2.credentials, "_GOOGLE_OAUTH2_TOKEN_ENDPOINT", google_standin.token_url
    )
    return path


def _authorization(headers: dict[str, str]) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == "authorization"), None)


def test_google_adc_refreshes_from_the_token_endpoint(adc_file: Path, google_standin: Any) -> None:
    session = make_session(AuthConfig("google"))
    assert isinstance(session.auth, GoogleAdcAuth)
    assert repr(session.auth) == "GoogleAdcAuth()"
    url = google_standin.dicomweb_url + "/studies/1.2.3/instances"
    for _ in range(2):
        resp = session.get(url, timeout=10)
        assert resp.status_code == 200
        assert resp.json() == []
    methods = [(r.method, r.path) for r in google_standin.requests]
    assert methods.count(("POST", "/token")) == 1  # the token is cached while valid
    searches = [r for r in google_standin.requests if r.path.endswith("/instances")]
    assert len(searches) == 2
    assert all(_authorization(r.headers) == "Bearer standin-token" for r in searches)
    assert all(r.headers.get("User-Agent") == USER_AGENT for r in searches)
    token_request = next(r for r in google_standin.requests if r.path == "/token")
    assert _authorization(token_request.headers) is None


def test_google_adc_with_a_valid_cached_token_needs_no_refresh(
    adc_file: Path, google_standin: Any
) -> None:
    info = json.loads(adc_file.read_text())
    info.update(token="standin-token", expiry="2999-01-01T00:00:00Z")
    adc_file.write_text(json.dumps(info))
    session = make_session(AuthConfig("google"))
    resp = session.get(google_standin.dicomweb_url + "/studies/1.2.3/instances", timeout=10)
    assert resp.status_code == 200
    assert [r.path for r in google_standin.requests if r.path == "/token"] == []
    assert _authorization(google_standin.requests[-1].headers) == "Bearer standin-token"


def test_wrong_bearer_is_refused_by_the_standin(
    google_standin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T", "not-the-token")
    session = make_session(AuthConfig("bearer", token_env="T"))
    resp = session.get(google_standin.dicomweb_url + "/studies/1.2.3/instances", timeout=10)
    assert resp.status_code == 401
