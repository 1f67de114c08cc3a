"""Flex Template metadata (templates/<job>.json): format, parameters equal to each job's own
``--help`` options (both ways), regexes on valid and invalid samples, and every job run with
exactly the ``--name=value`` argv a Flex launch passes, against the real Orthanc."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import factory
import jpeg_factory as jf
import pytest

from pipelines.local_orthanc import LocalOrthanc

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
JOBS = ("store", "search", "retrieve", "delete", "store_json_jpeg")
PARAM_TYPES = {"TEXT", "BOOLEAN", "ENUM", "NUMBER", "GCS_READ_FILE", "GCS_WRITE_FOLDER"}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("templates_generate", TEMPLATES / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metadata(job: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TEMPLATES / f"{job}.json").read_text(encoding="utf-8"))
    return data


def _params(job: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in _metadata(job)["parameters"]}


def _help_options(job: str, capsys: pytest.CaptureFixture[str]) -> set[str]:
    module = importlib.import_module(f"pipelines.{job}")
    assert module.main(["--help"]) == 0
    text = capsys.readouterr().out
    return set(re.findall(r"^  (--[a-z_]+)", text, flags=re.MULTILINE)) - {"--help"}


@pytest.mark.parametrize("job", JOBS)
def test_metadata_follows_the_flex_template_format(job: str) -> None:
    data = _metadata(job)
    assert isinstance(data["name"], str) and data["name"]
    assert isinstance(data["description"], str) and data["description"]
    assert data["parameters"]
    for p in data["parameters"]:
        assert set(p) <= {"name", "label", "helpText", "isOptional", "regexes", "paramType",
                          "enumOptions"}  # fmt: skip
        assert re.fullmatch(r"[a-z][a-z0-9_]*", p["name"])
        assert p["label"] and p["helpText"] and isinstance(p["isOptional"], bool)
        assert p["paramType"] in PARAM_TYPES
        assert p["regexes"] and all(r.startswith("^") and r.endswith("$") for r in p["regexes"])
        for regex in p["regexes"]:
            re.compile(regex)
        if p["paramType"] == "ENUM":
            assert [o["value"] for o in p["enumOptions"]] == p["regexes"][0][2:-2].split("|")
    assert len({p["name"] for p in data["parameters"]}) == len(data["parameters"])
    assert not _params(job)["output"]["isOptional"]


def test_committed_metadata_is_what_the_generator_makes() -> None:
    gen = _generator()
    assert gen.JOBS == JOBS
    for job in JOBS:
        assert (TEMPLATES / f"{job}.json").read_text(encoding="utf-8") == gen.render(job), (
            f"templates/{job}.json is stale: run .venv/bin/python templates/generate.py"
        )


@pytest.mark.parametrize("job", JOBS)
def test_parameters_are_exactly_the_options_help_lists(
    job: str, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = _help_options(job, capsys)
    assert {"--output", "--dicomweb_url", "--no_preflight"} <= listed
    # --help lists the job's own options, not every options class Beam has registered.
    assert not {"--runner", "--project", "--temp_location"} & listed
    assert {f"--{name}" for name in _params(job)} == listed


# Valid and invalid samples, per parameter name; on/off, choices and numbers by type below.
SAMPLES: dict[str, tuple[list[str], list[str]]] = {
    "input": (["gs://my-bucket/in/**/*.dcm", "/data/in", "in/*.dcm"], ["", "s3://b/x", "a b"]),
    "output": (["gs://my-bucket/out/run1", "/tmp/out"], ["", "gs://B/x", "http://x/y"]),
    "uids_file": (["gs://my-bucket/targets.txt", "targets.txt"], ["", "ftp://x/y"]),
    "queries": (["gs://my-bucket/q.csv"], ["", "a b"]),
    "template": (["gs://my-bucket/t.json"], ["", "x y"]),
    "metadata_csv": (["gs://my-bucket/m.csv"], [""]),
    "token_file": (["/secrets/token"], ["", "s3://x"]),
    "dicomweb_url": (
        ["http://127.0.0.1:8042/dicom-web", "https://pacs.example.org/wado"],
        ["", "127.0.0.1:8042", "ftp://x", "http://"],
    ),
    "orthanc_url": (["http://127.0.0.1:8042"], ["orthanc"]),
    "location": (["us-central1", "europe-west4", "us"], ["", "US_CENTRAL", "-us"]),
    "dataset": (["my_dataset-1.a"], ["", "my dataset", "a/b"]),
    "dicom_store": (["store1"], ["", "x/y"]),
    "token_env": (["DICOMWEB_TOKEN"], ["", "1TOKEN", "MY-TOKEN"]),
    "password_env": (["PACS_PASSWORD"], ["$PW", ""]),
    "username": (["alice"], ["", "a:b", "a b"]),
    "study": (["1.2.840.113619.2.55.3"], ["", "1.2.abc", "1..2", "01.2", "1"]),
    "series": (["1.2.3.4"], ["1.2.", "x"]),
    "uid_root": (["1.2.826.0.1.3680043.8.498.", "1.2.3"], ["", "1.a", "abc"]),
    "sop_class_uid": (["1.2.840.10008.5.1.4.1.1.7"], ["CT", ""]),
    "level": (["studies", "series", "instances", "study", "instance"], ["", "patients"]),
    "filter": (["PatientName=DOE^J*", "StudyDate=20200101-20201231", "00100020=X"], ["", "=x"]),
    "includefield": (["all", "StudyDescription,00081030"], ["", "a b", "x,"]),
    "csv": (["PatientID,StudyDate"], ["", ",x"]),
    "transfer_syntax": (["*", "1.2.840.10008.1.2.1"], ["", "explicit", "**"]),
    "render_frames": (["1,2", "all"], ["", "0", "1,"]),
    "frames": (["all", "1,3,5"], ["", "a", "0"]),
    "viewport": (["512,512"], ["", "512", "0,5", "512x512"]),
    "bulkdata_path": (["7FE00010", "00540016/0/00181074"], ["", "7FE0", "7FE00010/x"]),
    "layout": (["{study}/{series}/{instance}.dcm"], ["", "a b", "gs://x"]),
}
BY_TYPE: dict[str, tuple[list[str], list[str]]] = {
    "BOOLEAN": (["true", "false", "True", "FALSE"], ["", "yes", "1", "truee"]),
    "NUMBER": (["1", "50"], ["", "-1", "ten", "1e3x"]),
}


def _matches(param: dict[str, Any], value: str) -> bool:
    return all(re.fullmatch(regex, value) for regex in param["regexes"])


@pytest.mark.parametrize("job", JOBS)
def test_regexes_accept_valid_and_refuse_invalid_samples(job: str) -> None:
    for name, param in _params(job).items():
        kind = param["paramType"]
        if kind == "ENUM":
            good = [o["value"] for o in param["enumOptions"]]
            bad = ["", good[0] + "x", good[0].upper() + "_" if good[0].islower() else "nope"]
        elif kind in BY_TYPE:
            good, bad = BY_TYPE[kind]
            if name in ("timeout", "request_deadline", "operation_timeout"):
                good, bad = [*good, "0.5", "600.0"], [*bad, "1.2.3"]
            if name == "max_offset":
                good, bad = [*good, "0"], bad[:-1]
        else:
            assert name in SAMPLES, f"{job}: add samples for the new parameter {name!r}"
            good, bad = SAMPLES[name]
        assert bad, name
        for value in good:
            assert _matches(param, value), f"{job} {name}: {value!r} refused"
        for value in bad:
            assert not _matches(param, value), f"{job} {name}: {value!r} accepted"


def _flex_argv(job: str, parameters: dict[str, str]) -> list[str]:
    """What a Flex launch passes: ``--name=value`` for each parameter, after the console (or
    gcloud) checked each value against the template's regexes."""
    params = _params(job)
    argv = []
    for name, value in parameters.items():
        assert name in params, f"{job}: {name} is not a template parameter"
        assert _matches(params[name], value), f"{job}: {name}={value!r} would be refused"
        argv.append(f"--{name}={value}")
    missing = {n for n, p in params.items() if not p["isOptional"]} - set(parameters)
    assert not missing, f"{job}: required parameters missing: {missing}"
    return argv


def _rows(prefix: Path, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(prefix.glob(f"{name}-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line]
    return rows


def test_store_search_retrieve_delete_run_with_flex_launch_argv(
    orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    from pipelines import delete, retrieve, search, store

    url = orthanc.dicomweb_url
    paths = factory.write_ct_instances(tmp_path / "in", count=3, studies=1)
    common = {"dicomweb_url": url, "auth": "none", "max_attempts": "3", "timeout": "30"}
    argv = _flex_argv(
        "store",
        {
            **common,
            "input": str(tmp_path / "in" / "*.dcm"),
            "output": str(tmp_path / "stored"),
            "batch_size": "2",
            "max_concurrency": "2",
            "single_part": "false",
            "on_exists": "skip",
            "no_check_existing": "false",
            "overwrite": "false",
            "no_preflight": "false",
        },
    )
    assert store.main(argv) == 0
    assert len(_rows(tmp_path / "stored", "stored")) == len(paths) == orthanc.instance_count()

    study = str(_rows(tmp_path / "stored", "stored")[0]["study_uid"])
    argv = _flex_argv(
        "search",
        {
            **common,
            "level": "instances",
            "study": study,
            "includefield": "all",
            "fuzzymatching": "false",
            "page_size": "2",
            "output": str(tmp_path / "found"),
            "no_preflight": "true",
        },
    )
    assert search.main(argv) == 0
    found = _rows(tmp_path / "found", "results")
    assert len(found) == 3 and {r["query_id"] for r in found} == {1}
    targets = tmp_path / "targets.jsonl"
    targets.write_text("".join(json.dumps(r) + "\n" for r in found))

    argv = _flex_argv(
        "retrieve",
        {
            **common,
            "uids_file": str(targets),
            "what": "instances",
            "granularity": "instance",
            "transfer_syntax": "*",
            "verify": "true",
            "output": str(tmp_path / "got"),
        },
    )
    assert retrieve.main(argv) == 0
    got = sorted(factory.sha256(p) for p in (tmp_path / "got").rglob("*.dcm"))
    assert got == sorted(factory.sha256(p) for p in paths)

    argv = _flex_argv(
        "delete",
        {
            **common,
            "uids_file": str(targets),
            "delete_api": "orthanc",
            "yes": "true",
            "plan_only": "false",
            "max_targets": "10",
            "verify": "true",
            "output": str(tmp_path / "deleted"),
        },
    )
    assert delete.main(argv) == 0
    assert orthanc.instance_count() == 0


def test_store_json_jpeg_runs_with_flex_launch_argv(orthanc: LocalOrthanc, tmp_path: Path) -> None:
    from pipelines import store_json_jpeg

    jf.write_good_pairs(tmp_path / "in", 2)
    argv = _flex_argv(
        "store_json_jpeg",
        {
            "dicomweb_url": orthanc.dicomweb_url,
            "input": str(tmp_path / "in" / "*.json"),
            "output": str(tmp_path / "out"),
            "mode": "client",
            "generate_uids": "false",
            "fix_metadata": "true",
            "build_only": "false",
            "no_preflight": "false",
        },
    )
    assert store_json_jpeg.main(argv) == 0
    assert orthanc.instance_count() == 2
