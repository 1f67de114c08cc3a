"""Runnable jobs: ``python -m pipelines.<job> --help``.

NumPy comes in with Beam, and OpenBLAS behind it starts a thread per core that spins for a
while; on a 2-core machine that cost every job 0.1-0.2 s of CPU at start-up, taken from the
import itself and from the server beside it. No job here does linear algebra, so one BLAS
thread is asked for, unless the environment already says otherwise. This runs before Beam is
imported, since ``python -m pipelines.<job>`` imports this package first.
"""

import os

# Whether the setting below came from here (benchmarks start their baselines without it).
BLAS_THREADS_SET_HERE = "OPENBLAS_NUM_THREADS" not in os.environ
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
