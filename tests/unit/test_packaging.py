"""The generic import names must resolve to this repository, and only they are packaged."""

from __future__ import annotations

import ast
from pathlib import Path

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
    assert sorted(found) == ["pipelines", "transforms"]
    everything = setuptools.find_namespace_packages(
        str(ROOT), include=["transforms*", "pipelines*"]
    )
    assert not [p for p in everything if p.startswith("tests")]


def test_transforms_never_import_pipelines() -> None:
    for path in (ROOT / "transforms").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("pipelines", "tests") for n in names), path


def test_beam_free_modules_do_not_import_beam() -> None:
    beam_free = [
        "records", "dead_letter", "errors", "endpoint", "auth", "http", "multipart",
        "stow_response", "search_client", "dicom_peek", "batching", "stow_client",
    ]  # fmt: skip
    for name in beam_free:
        tree = ast.parse((ROOT / "transforms" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            module = ""
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
            elif isinstance(node, ast.Import):
                module = node.names[0].name
            assert not module.startswith("apache_beam"), f"{name} imports {module}"


def test_public_api_is_importable() -> None:
    for name in transforms.__all__:
        assert getattr(transforms, name) is not None
