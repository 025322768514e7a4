"""GPU (CUDA/ROCm jaxlib plugins): float32 by default, float64 allowed for reference runs.

float32 matmuls are pinned to full precision: Ampere and later would otherwise use TF32
(10-bit mantissa), which costs the DFT energy milli-Hartrees.
"""

import jax

from qpt.backends.base import Policy

POLICY = Policy("gpu")


def devices(backend_config) -> list:
  del backend_config
  return jax.devices("gpu")
