"""CPU: the development and CI machine. float64 allowed (reference runs); `backend.cpu_devices`
fakes N devices so the sharded step, its collectives and multi-process runs are tested here."""

import jax

from qpt.backends.base import Policy

POLICY = Policy("cpu", shared_thread_pool=True)  # fake devices: see Policy


def devices(backend_config) -> list:
  del backend_config
  return jax.devices("cpu")
