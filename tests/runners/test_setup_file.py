"""``--setup_file ./setup.py``: Beam builds the package's sdist with this virtualenv's setuptools
(whatever its age) and the sdist holds both packages."""

from __future__ import annotations

import tarfile
from pathlib import Path

from apache_beam.runners.portability.stager import Stager

ROOT = Path(__file__).resolve().parents[2]


def test_beam_builds_the_sdist_from_setup_py(tmp_path: Path) -> None:
    sdist = Stager._build_setup_package(str(ROOT / "setup.py"), str(tmp_path))
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert any(n.endswith("/pipelines/store.py") for n in names)
    assert any(n.endswith("/transforms/stow.py") for n in names)
    assert any(n.endswith("/pyproject.toml") for n in names)
