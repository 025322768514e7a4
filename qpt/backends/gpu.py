"""GPU (CUDA/ROCm jaxlib plugins): float32 by default, float64 allowed for reference runs.

Ampere and later would run float32 matmuls as TF32 (10-bit mantissa) by default, which costs the
DFT energy milli-Hartrees; QPT's device code pins full float32 itself (`qpt.precision`).
"""

import jax

from qpt.backends.base import Policy

POLICY = Policy("gpu")


def devices(backend_config) -> list:
  del backend_config
  return jax.devices("gpu")
