"""TPU (single host or pod slice): float32 only (QPT's device code pins its matmuls at full
float32, where the TPU's default would run them as bf16 passes). Pods: one process per host,
started by the pod runtime; JAX finds the coordinator itself (`jax.distributed.initialize()`
without arguments)."""

import jax

from qpt.backends.base import Policy

POLICY = Policy("tpu", float64=False)


def devices(backend_config) -> list:
  del backend_config
  return jax.devices("tpu")
