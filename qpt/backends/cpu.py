"""CPU: the development and CI machine. float64 allowed (reference runs); `backend.cpu_devices`
fakes N devices so the sharded step, its collectives and multi-process runs are tested here."""

import jax

from qpt.backends.base import Policy

# XLA's CPU float32 matmuls are plain float32 already: nothing to raise.
POLICY = Policy("cpu", matmul_precision=None)


def devices(backend_config) -> list:
  del backend_config
  return jax.devices("cpu")
