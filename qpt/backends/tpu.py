"""TPU (single host or pod slice): float32 only, matmuls at full float32 (the default would run
them as bf16 passes). Pods: one process per host, started by the pod runtime; JAX finds the
coordinator itself (`jax.distributed.initialize()` without arguments)."""

import jax

from qpt.backends.base import Policy

POLICY = Policy("tpu", float64=False)


def devices(backend_config) -> list:
  del backend_config
  return jax.devices("tpu")
