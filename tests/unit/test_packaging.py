"""The generic import names must resolve to this repository, and only they are packaged."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

import pipelines
import transforms

ROOT = Path(__file__).resolve().parents[2]


def test_import_names_resolve_inside_the_repository() -> None:
    # PyPI has distributions named "transforms" and "pipelines": ours must win.
    assert Path(transforms.__file__).resolve().parent == ROOT / "transforms"
    assert Path(pipelines.__file__).resolve().parent == ROOT / "pipelines"


def test_only_transforms_and_pipelines_are_packaged() -> None:
    found = setuptools.find_packages(str(ROOT), include=["transforms*", "pipelines*"])
    assert sorted(found) == [
        "pipelines",
        "transforms",
        "transforms.dicom",
        "transforms.dicomweb",
    ]
    everything = setuptools.find_namespace_packages(
        str(ROOT), include=["transforms*", "pipelines*"]
    )
    assert not [p for p in everything if p.startswith("tests")]


def test_transforms_never_import_pipelines() -> None:
    for path in (ROOT / "transforms").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("pipelines", "tests") for n in names), path


# Modules that must load without Apache Beam: the two client packages and the shared core.
BEAM_FREE_TOP_LEVEL = [
    "transforms",
    "transforms.records",
    "transforms.dead_letter",
    "transforms.targets",
    "transforms.errors",
    "transforms.progress",
    "transforms.inflight",
]


def beam_free_modules() -> list[str]:
    names = list(BEAM_FREE_TOP_LEVEL)
    for package in ("dicomweb", "dicom"):
        names.append(f"transforms.{package}")
        for path in sorted((ROOT / "transforms" / package).glob("*.py")):
            if path.stem != "__init__":
                names.append(f"transforms.{package}.{path.stem}")
    return names


@pytest.mark.parametrize("module", beam_free_modules())
def test_beam_free_module_imports_without_beam(module: str) -> None:
    # A fresh interpreter: in this one pytest has long since loaded Beam.
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'apache_beam'); "
        "print(len(loaded))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "0", f"{module} loads apache_beam"


def test_beam_free_packages_are_listed() -> None:
    # The parametrised test above must really cover the client packages.
    names = beam_free_modules()
    assert "transforms.dicomweb.http" in names and "transforms.dicom.peek" in names


def test_public_api_is_importable() -> None:
    for name in transforms.__all__:
        assert getattr(transforms, name) is not None
