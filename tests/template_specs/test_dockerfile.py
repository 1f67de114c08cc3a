"""templates/Dockerfile: the files it copies exist, its Beam image tag is the Beam version the
package resolves to, its launcher and SDK images share one Python, the pinned requirements are
those of this virtualenv, and the Flex entry point starts the pipeline the build chose."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import apache_beam
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "templates" / "Dockerfile").read_text(encoding="utf-8")


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"templates_{name}", ROOT / "templates" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_every_copied_file_exists() -> None:
    copies = [rest for keyword, rest in _instructions() if keyword == "COPY"]
    assert copies
    sources = []
    for rest in copies:
        if rest.startswith("--from="):
            continue  # from the launcher image
        sources += rest.split()[:-1]
    assert {"templates/requirements.txt", "pipelines", "transforms", "setup.py"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source


def test_beam_image_tag_is_the_installed_beam_and_python_matches_the_launcher() -> None:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, flags=re.MULTILINE))
    assert args["BEAM_VERSION"] == apache_beam.__version__
    froms = [rest for keyword, rest in _instructions() if keyword == "FROM"]
    launcher = re.fullmatch(
        r"gcr\.io/dataflow-templates-base/python(\d)(\d+)-template-launcher-base:\S+ AS launcher",
        froms[0],
    )
    assert launcher, froms[0]
    sdk = re.fullmatch(r"apache/beam_python(\d+\.\d+)_sdk:\$\{BEAM_VERSION\}", froms[-1])
    assert sdk, froms[-1]
    assert sdk.group(1) == f"{launcher.group(1)}.{launcher.group(2)}"
    # The image's Python is the one the tests (and the pins) ran with.
    assert sdk.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_requirements_pin_this_virtualenv_and_are_fresh() -> None:
    generate = _load("generate.py")
    text = (ROOT / "templates" / "requirements.txt").read_text(encoding="utf-8")
    assert text == generate.render_requirements(), "run .venv/bin/python templates/generate.py"
    pins = dict(line.split("==") for line in text.splitlines() if line and not line.startswith("#"))
    assert pins["apache-beam"] == apache_beam.__version__
    assert {"pydicom", "requests", "google-auth", "google-cloud-storage"} <= set(pins)
    assert not {"pytest", "ruff", "mypy", "pydicom-data"} & set(pins)  # test extras stay out


def test_flex_entry_point_is_chosen_by_the_build_arg() -> None:
    env = dict(re.findall(r"^ENV (\w+)=(\S+)$", DOCKERFILE, flags=re.MULTILINE))
    assert env["DWB_PIPELINE"] == "${PIPELINE}"
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == "/template/launch.py"
    assert "COPY templates/launch.py /template/launch.py" in DOCKERFILE
    # Nothing is installed when a job starts.
    assert "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE=" not in DOCKERFILE
    assert "FLEX_TEMPLATE_PYTHON_SETUP_FILE=" not in DOCKERFILE


def test_launcher_runs_the_chosen_pipeline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    launch = _load("launch.py")
    assert launch.JOBS == _load("generate.py").JOBS
    for job in launch.JOBS:
        monkeypatch.setenv("DWB_PIPELINE", job)
        monkeypatch.setattr(sys, "argv", ["launch.py", "--help"])
        assert launch.main() == 0
        assert f"usage: python -m pipelines.{job}" in capsys.readouterr().out
    monkeypatch.setenv("DWB_PIPELINE", "nope")
    assert launch.main() == 2
    assert "DWB_PIPELINE" in capsys.readouterr().err


def test_a_launch_naming_no_runner_runs_on_dataflow() -> None:
    launch = _load("launch.py")
    assert launch.launch_args(["--output=gs://b/o"]) == [
        "--runner=DataflowRunner",
        "--output=gs://b/o",
    ]
    assert launch.launch_args(["--runner=DirectRunner", "--x=1"]) == [
        "--runner=DirectRunner",
        "--x=1",
    ]
    assert launch.launch_args(["--runner", "PortableRunner"]) == ["--runner", "PortableRunner"]
