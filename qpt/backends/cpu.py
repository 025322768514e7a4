"""CPU: the development and CI machine. float64 allowed (reference runs); `backend.cpu_devices`
fakes N devices so the sharded step, its collectives and multi-process runs are tested here."""

import os

import jax
from jax._src import xla_bridge  # whether JAX has made its clients has no public name yet

from qpt.backends.base import Policy
from qpt.errors import InputError

POLICY = Policy("cpu", shared_thread_pool=True, host_buffers=True)  # see Policy

# Threads of XLA:CPU's intra-op pool when sums must not depend on the layout (at least; more if
# the machine has more cores): see `fix_intra_op_threads`.
LAYOUT_INDEPENDENT_THREADS = 8


def devices(backend_config) -> list:
  del backend_config
  return jax.devices("cpu")


def fix_intra_op_threads() -> int:
  """Gives XLA:CPU's intra-op thread pool one size whatever the number of fake devices, for
  `backend.layout_independent`; returns that size. Call it before JAX starts.

  Why: XLA:CPU sizes the pool as max(cores, devices in the process) — its NPROC environment
  variable stands in for the cores — and Eigen's matmul splits its rows into blocks by the pool's
  threads, a block's last rows summed by another kernel, so some rows of a product round
  differently on another pool size. Seen on an AMD EPYC with 2 cores: 1 device (2 threads)
  against 4 devices (4 threads), rows 978, 979, 1022 and 1023 of f32[7, 1024]ᵀ · f32[7, 256],
  docs/results.md §9. With NPROC at max(cores, LAYOUT_INDEPENDENT_THREADS) every process of up
  to that many fake devices has the same pool, so its matmuls round alike.
  """
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  threads = max(cores or 1, LAYOUT_INDEPENDENT_THREADS)
  if os.environ.get("NPROC") == str(threads):
    return threads
  if xla_bridge.backends_are_initialized():
    raise InputError("backend.layout_independent must be set before JAX starts: this process "
                     "already has its CPU thread pool")
  os.environ["NPROC"] = str(threads)
  return threads
