"""Exists so Dataflow's --setup_file and FLEX_TEMPLATE_PYTHON_SETUP_FILE have a target.

All metadata lives in pyproject.toml.
"""

import setuptools

setuptools.setup()
