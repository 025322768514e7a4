"""Full float32 matmuls for every device computation, whatever the caller's JAX setting.

XLA's default precision for a float32 matmul is the device's fastest: TF32 (10-bit mantissa) on
Ampere-and-later GPUs, bfloat16 passes on TPUs, and whatever `jax_default_matmul_precision` a user
set globally. Any of them costs the DFT energy milli-Hartrees. `full_float32` pins the precision
while a function is traced, so every dot it emits is recorded in the program as HIGHEST — for
the energy, the Fock matrix, the SCF, the model and their gradients (the transpose of a dot keeps
its precision; custom VJP rules are traced later, so they carry the decorator themselves).
tests/test_precision.py checks the lowered programs under a global bfloat16 setting.

`sum_by_halves` is the same guarantee for sums: a float32 total whose rounding the program fixes,
not the backend's way of reducing.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import jax
import jax.numpy as jnp

F = TypeVar("F", bound=Callable)
PRECISION = "highest"  # full float32 on every backend (CPU ignores the setting: it is always full)


def full_float32(fn: F) -> F:
  """`fn` traced with float32 matmuls at full precision (a decorator)."""

  @functools.wraps(fn)
  def pinned(*args, **kwargs):
    with jax.default_matmul_precision(PRECISION):
      return fn(*args, **kwargs)

  return pinned


def sum_by_halves(x: jax.Array, axis: int = 0) -> jax.Array:
  """Σ of `x` over `axis` as first half + second half, repeatedly (an odd length's last element is
  carried to the next round): pairwise, so float32 rounding grows with log₂ n, and a fixed order of
  element-wise adds, so every backend and layout rounds alike.

  Why not `jnp.sum`: XLA picks a reduction's order per backend. On this project's CPUs XLA hands
  large sums to YNNPACK, which keeps many partial sums; XLA's own CPU loop adds one term at a time,
  and then the 946-term exchange sum of ethanol/def2-SVP (≈ 84 Ha) is 8.7e-4 off, 42 µHa of the
  energy (docs/numerics.md §12). Contiguous halves, not neighbours: several times faster
  (docs/results.md §13).
  """
  while x.shape[axis] > 1:
    n = x.shape[axis]
    half = n // 2
    summed = (jax.lax.slice_in_dim(x, 0, half, axis=axis)
              + jax.lax.slice_in_dim(x, half, 2 * half, axis=axis))
    if n % 2:
      summed = jnp.concatenate([summed, jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis)
    x = summed
  return jnp.squeeze(x, axis)
