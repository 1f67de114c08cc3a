"""Generate the Flex Template metadata files ``templates/<job>.json`` from each job's ``--help``.

    .venv/bin/python templates/generate.py          # rewrite templates/<job>.json, requirements.txt
    .venv/bin/python templates/generate.py --check  # exit 1 when a committed file is stale

A parameter is one of the job's own options (``help_parser(SPEC)``, what ``--help`` lists); its
name is the option string without the dashes, i.e. what a Flex launch passes as ``--name=value``.
The regexes come from the option's kind (on/off, choices, integer, number) or from ``_BY_NAME``
below. A new option without a row there still gets a template parameter (any non-blank value).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.cli import help_parser  # noqa: E402

JOBS = ("store", "search", "retrieve", "delete", "store_json_jpeg")
TEMPLATES_DIR = Path(__file__).resolve().parent

_UID = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*)){1,63}$"
_PATH = r"^(gs://[a-z0-9][-_.a-z0-9]{1,220}[a-z0-9]/\S*|[^\s:]+)$"  # gs:// or a local path
_URL = r"^https?://[^\s/]+(/\S*)?$"
_ENV_VAR = r"^[A-Za-z_][A-Za-z0-9_]*$"
_POSITIVE_INT = r"^[1-9][0-9]*$"
_NON_NEGATIVE_INT = r"^[0-9]+$"
_POSITIVE_NUMBER = r"^([0-9]+\.?[0-9]*|\.[0-9]+)$"
_BOOLEAN = r"^(true|false|True|False|TRUE|FALSE)$"
_ANY = r"^\S.*$"

# (label, regex, paramType) for options whose kind alone says too little. paramType: the
# console's input picker; GCS_* pickers browse Cloud Storage (a local path is still accepted by
# the regex for DirectRunner runs with the same parameters).
_BY_NAME: dict[str, tuple[str, str, str]] = {
    "input": ("DICOM files (glob)", _PATH, "GCS_READ_FILE"),
    "output": ("Output prefix", _PATH, "GCS_WRITE_FOLDER"),
    "uids_file": ("Targets file", _PATH, "GCS_READ_FILE"),
    "queries": ("Queries file", _PATH, "GCS_READ_FILE"),
    "template": ("DICOM JSON template", _PATH, "GCS_READ_FILE"),
    "metadata_csv": ("Per-image metadata CSV", _PATH, "GCS_READ_FILE"),
    "token_file": ("Bearer token file", _PATH, "GCS_READ_FILE"),
    "dicomweb_url": ("DICOMweb base URL", _URL, "TEXT"),
    "orthanc_url": ("Orthanc REST root", _URL, "TEXT"),
    "location": ("Google store location", r"^[a-z][a-z0-9-]{0,62}[a-z0-9]$", "TEXT"),
    "dataset": ("Google store dataset", r"^[A-Za-z0-9_.-]{1,256}$", "TEXT"),
    "dicom_store": ("Google DICOM store", r"^[A-Za-z0-9_.-]{1,256}$", "TEXT"),
    "token_env": ("Bearer token variable", _ENV_VAR, "TEXT"),
    "password_env": ("Password variable", _ENV_VAR, "TEXT"),
    "username": ("Basic auth user", r"^[^\s:]+$", "TEXT"),
    "study": ("Study Instance UID", _UID, "TEXT"),
    "series": ("Series Instance UID", _UID, "TEXT"),
    "uid_root": ("Root of generated UIDs", r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.?$", "TEXT"),
    "sop_class_uid": ("SOP Class UID", _UID, "TEXT"),
    "level": (
        "Level",
        r"^(studies|series|instances|study|instance)$",
        "TEXT",
    ),
    "filter": ("Filter KEY=VALUE", r"^[A-Za-z0-9][A-Za-z0-9.]*=.*$", "TEXT"),
    "includefield": ("Include fields", r"^[A-Za-z0-9]+(,[A-Za-z0-9]+)*$", "TEXT"),
    "csv": ("CSV columns", r"^[A-Za-z0-9]+(,[A-Za-z0-9]+)*$", "TEXT"),
    "transfer_syntax": ("Transfer syntax", r"^(\*|(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+)$", "TEXT"),
    "render_frames": ("Frames to render", r"^(all|[1-9][0-9]*(,[1-9][0-9]*)*)$", "TEXT"),
    "frames": ("Frames", r"^(all|[1-9][0-9]*(,[1-9][0-9]*)*)$", "TEXT"),
    "viewport": ("Viewport W,H", r"^[1-9][0-9]*,[1-9][0-9]*$", "TEXT"),
    "bulkdata_path": (
        "Bulk data path",
        r"^[0-9A-Fa-f]{8}(/[0-9]+/[0-9A-Fa-f]{8})*$",
        "TEXT",
    ),
    "layout": ("File layout", r"^[^\s:]+$", "TEXT"),
}

_DESCRIPTIONS = {
    "store": "Store DICOM files from Cloud Storage into a DICOMweb store (STOW-RS).",
    "search": "Search a DICOMweb store (QIDO-RS) and write one JSON line per match.",
    "retrieve": "Retrieve instances, metadata, rendered images, frames or bulk data (WADO-RS).",
    "delete": "Plan, then delete studies, series or instances from a DICOMweb store.",
    "store_json_jpeg": "Store JPEG images with DICOM JSON metadata as DICOM instances.",
}


def parameter_name(action: argparse.Action) -> str:
    """The name a Flex launch passes (``--name=value``): the long option without its dashes."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    return longs[0][2:]


def job_actions(job: str) -> list[argparse.Action]:
    """The job's own options, as its ``--help`` lists them."""
    spec = importlib.import_module(f"pipelines.{job}").SPEC
    return [
        a
        for a in help_parser(spec)._actions  # noqa: SLF001
        if a.option_strings and not isinstance(a, argparse._HelpAction)  # noqa: SLF001
    ]


def _type_name(action: argparse.Action) -> str:
    return getattr(action.type, "__name__", "")


# Options a run of the job always needs (the job refuses to start without them).
_REQUIRED = {
    "store": {"input", "output"},
    "search": {"output"},
    "retrieve": {"output"},
    "delete": {"output"},
    "store_json_jpeg": {"input", "output"},
}


def parameter(action: argparse.Action, required: bool = False) -> dict[str, Any]:
    name = parameter_name(action)
    label, regex, param_type = _BY_NAME.get(name, ("", _ANY, "TEXT"))
    if isinstance(action, argparse._StoreTrueAction):  # noqa: SLF001
        regex, param_type = _BOOLEAN, "BOOLEAN"
    elif action.choices:
        regex, param_type = "^(" + "|".join(map(str, action.choices)) + ")$", "ENUM"
    elif "non_negative_int" in _type_name(action):
        regex, param_type = _NON_NEGATIVE_INT, "NUMBER"
    elif "positive_int" in _type_name(action):
        regex, param_type = _POSITIVE_INT, "NUMBER"
    elif action.type is float:
        regex, param_type = _POSITIVE_NUMBER, "NUMBER"
    help_text = (action.help or "").replace("%(default)s", str(action.default))
    if action.choices and (not help_text or help_text.startswith("(default")):
        help_text = f"One of {', '.join(map(str, action.choices))} {help_text}".strip()
    help_text = help_text[:1].upper() + help_text[1:] if help_text else name.replace("_", " ")
    if action.default not in (None, False, []) and "default" not in help_text:
        help_text += f" (default: {action.default})"
    if isinstance(action, argparse._AppendAction):  # noqa: SLF001
        help_text += "; a template launch passes one value"
    entry: dict[str, Any] = {
        "name": name,
        "label": label or name.replace("_", " ").capitalize(),
        "helpText": help_text,
        # Other combinations (--dicomweb_url or a Google store...) the job checks (exit 2).
        "isOptional": not required,
        "regexes": [regex],
        "paramType": param_type,
    }
    if param_type == "ENUM":
        entry["enumOptions"] = [{"value": str(c)} for c in action.choices or ()]
    return entry


def metadata(job: str) -> dict[str, Any]:
    return {
        "name": f"dicomweb-beam {job}",
        "description": _DESCRIPTIONS[job],
        "streaming": False,
        "parameters": [parameter(a, parameter_name(a) in _REQUIRED[job]) for a in job_actions(job)],
    }


def render(job: str) -> str:
    return json.dumps(metadata(job), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    outputs = [(TEMPLATES_DIR / f"{job}.json", render(job)) for job in JOBS]
    outputs.append((TEMPLATES_DIR / "requirements.txt", render_requirements()))
    for path, text in outputs:
        if "--check" in argv:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale: {', '.join(stale)}; run templates/generate.py", file=sys.stderr)
        return 1
    return 0


# --- pinned dependencies of the image (templates/requirements.txt) ----------------------------


def pinned_requirements(root: str = "dicomweb-beam") -> list[str]:
    """``name==version`` for every distribution the package needs at run time (its dependencies
    and theirs, extras followed, test extras left out), as installed in this virtualenv: the
    image installs exactly what the tests ran with."""
    from importlib import metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = md.distribution(name)
        if name != root:
            pins[str(canonicalize_name(dist.metadata["Name"]))] = dist.version
        for text in dist.requires or ():
            req = Requirement(text)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(env) for env in envs):
                continue
            try:
                md.distribution(req.name)
            except md.PackageNotFoundError:
                continue  # an optional dependency for another platform or Python
            todo.append((str(canonicalize_name(req.name)), frozenset(req.extras)))
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def render_requirements() -> str:
    header = (
        "# Generated by templates/generate.py from the virtualenv the tests ran in: every\n"
        "# run-time dependency of dicomweb-beam, pinned. The image installs these at build time.\n"
    )
    return header + "".join(f"{line}\n" for line in pinned_requirements())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
