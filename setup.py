"""Exists so Dataflow's --setup_file and FLEX_TEMPLATE_PYTHON_SETUP_FILE have a target.

All metadata lives in pyproject.toml. Beam builds the sdist with the virtualenv's own setuptools
(``python setup.py sdist`` when the ``build`` module is absent), and the setuptools a fresh
Python 3.11 virtualenv ships (65.x) refuses ``license = "Apache-2.0"`` (PEP 639, setuptools 77):
for those, the license string is read as the older ``{text = ...}`` form it knows.
"""

import setuptools


def _accept_spdx_license_on_old_setuptools() -> None:
    try:
        major = int(setuptools.__version__.split(".")[0])
    except ValueError:
        return
    if major >= 77:
        return
    from setuptools.config import pyprojecttoml

    load_file = pyprojecttoml.load_file

    def load(filepath):  # type: ignore[no-untyped-def]
        config = load_file(filepath)
        project = config.get("project", {})
        if isinstance(project.get("license"), str):
            project["license"] = {"text": project["license"]}
        return config

    pyprojecttoml.load_file = load


_accept_spdx_license_on_old_setuptools()
setuptools.setup()
