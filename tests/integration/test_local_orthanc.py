"""The throw-away Orthanc the demo, tests and benchmarks start."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from pipelines.local_orthanc import LocalOrthanc, orthanc_available

pytestmark = pytest.mark.skipif(not orthanc_available(), reason="Orthanc is not installed")


def test_a_workdir_that_does_not_exist_yet_is_made(tmp_path: Path) -> None:
    workdir = tmp_path / "new" / "orthanc"
    with LocalOrthanc(workdir) as server:
        assert requests.get(f"{server.rest_url}/system", timeout=5).status_code == 200
        assert (workdir / "orthanc.json").is_file()
