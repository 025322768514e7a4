"""One thread for every host computation that feeds training, so its bits never depend on cores.

A threaded sum (OpenBLAS's dot products, PySCF's OpenMP loops) splits its work by the thread count,
and with dynamic scheduling differently from run to run: the results differ in the last bits
(~1e-13 Ha in a logged energy, seen with OMP_NUM_THREADS=2). So the conformer sampler's Hessian
and normal modes, every problem build and every stream label run on one thread — in a worker,
whose environment is single-threaded from the start, and in this process, under `one_thread()` —
whatever OMP_NUM_THREADS says. Evaluation labels and benchmarks keep PySCF's OpenMP threads:
their numbers are compared with tolerances, not bit for bit.

numpy's and SciPy's BLAS run on one thread in every QPT process, for correctness, not speed
(`single_threaded_blas`, called when qpt is imported): jaxlib's CPU LAPACK kernels (the eigh of
every energy) call SciPy's OpenBLAS from XLA's threads, and threaded OpenBLAS used at the same time
from another thread — the host's numpy, or a second XLA program — intermittently returns wrong
results (jax-ml/jax#38056: a matmul after an unblocked eigh; seen here once in five test suites as a
3 mHa energy error with OMP_NUM_THREADS unset, never with 1). PySCF's own OpenMP loops are not
BLAS and keep their threads.
"""

from __future__ import annotations

import contextlib
import functools

import numpy  # noqa: F401  (its BLAS must be loaded before the controller looks)
import pyscf.lib  # noqa: F401  (PySCF's OpenMP runtime and BLAS, likewise)
import scipy.linalg  # noqa: F401
import threadpoolctl

# Variables a spawned worker must see before it imports numpy: BLAS reads them once, at load.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@functools.cache
def _controller() -> threadpoolctl.ThreadpoolController:
  """The BLAS and OpenMP thread pools loaded in this process (numpy's, SciPy's, PySCF's)."""
  return threadpoolctl.ThreadpoolController()


@contextlib.contextmanager
def one_thread():
  """Every BLAS and OpenMP pool of this process limited to one thread inside (~20 µs)."""
  with _controller().limit(limits=1):
    yield


def single_threaded_blas() -> None:
  """numpy's and SciPy's BLAS pools on one thread for the rest of this process (see above)."""
  _controller().select(user_api="blas").limit(limits=1)


def limit_to_one_thread() -> None:
  """The same, for good: for a worker process whose every computation feeds training."""
  _controller().limit(limits=1)
