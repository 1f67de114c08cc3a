"""The jobs ask OpenBLAS for one thread before Beam brings NumPy in (see pipelines/__init__)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = (
    "import pipelines.store, sys, os; "
    "assert 'numpy' in sys.modules, 'Beam no longer imports NumPy: this setting can go'; "
    "print(os.environ['OPENBLAS_NUM_THREADS'])"
)


def _probe(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("3", "3")])
def test_one_blas_thread_unless_the_environment_says_otherwise(
    given: str | None, expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    assert _probe(env) == expected


def test_numpy_sees_one_thread() -> None:
    # What OpenBLAS itself reports, when NumPy exposes it (threadpoolctl is not a dependency).
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    probe = (
        "import pipelines.store, numpy, ctypes, glob, os; "
        "libs = glob.glob(os.path.join(os.path.dirname(numpy.__file__), '..', "
        "'scipy_openblas64*', 'lib', '*.so')) + glob.glob(os.path.join("
        "os.path.dirname(numpy.__file__), '..', 'numpy.libs', '*openblas*.so*')); "
        "print(libs[0] if libs else '')"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert found.returncode == 0, found.stderr[-2000:]
    library = found.stdout.strip()
    if not library:
        pytest.skip("this NumPy has no OpenBLAS of its own")
    check = (
        "import pipelines.store, ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); "
        "names = [n for n in ('scipy_openblas_get_num_threads64_', 'openblas_get_num_threads64_',"
        " 'openblas_get_num_threads') if hasattr(lib, n)]; "
        "print(getattr(lib, names[0])() if names else -1)"
    )
    threads = subprocess.run(
        [sys.executable, "-c", check, library], env=env, capture_output=True, text=True, timeout=120
    )
    assert threads.returncode == 0, threads.stderr[-2000:]
    if threads.stdout.strip() == "-1":
        pytest.skip("this OpenBLAS does not say how many threads it has")
    assert threads.stdout.strip() == "1"
