"""What the store job imports at start: pydicom (numpy, Pillow) only when a file needs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_store_job_does_not_import_pydicom_at_start() -> None:
    code = "import sys, pipelines.store; print('pydicom' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_qido_keywords_still_resolve_through_pydicom() -> None:
    from transforms.dicomweb.qido_query import key_name, resolve_key

    assert resolve_key("PatientName") == "00100010"
    assert key_name("00100010") == "PatientName"
