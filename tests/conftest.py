"""Fixtures shared by every test layer.

``orthanc`` is a real Orthanc + DICOMweb plugin (Debian packages) on a free loopback port with a
temporary store, started once per session and emptied before each test that asks for it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
# Test helpers are plain modules, imported by name: fakes/ and the tests folder itself.
for folder in (TESTS_DIR, TESTS_DIR / "fakes"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from pipelines.local_orthanc import INSTALL_HINT, LocalOrthanc, orthanc_available  # noqa: E402


@pytest.fixture(scope="session")
def orthanc_server() -> Iterator[LocalOrthanc]:
    if not orthanc_available():
        pytest.fail(f"these tests need a real Orthanc; {INSTALL_HINT} (scripts/test.sh does it)")
    with LocalOrthanc() as server:
        yield server


@pytest.fixture
def orthanc(orthanc_server: LocalOrthanc) -> LocalOrthanc:
    orthanc_server.delete_all()
    return orthanc_server


@pytest.fixture
def google_standin() -> Iterator[object]:
    import google_standin

    with google_standin.GoogleStandin(expected_token="standin-token") as server:
        yield server
