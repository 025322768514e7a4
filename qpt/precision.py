"""Full float32 matmuls for every device computation, whatever the caller's JAX setting.

XLA's default precision for a float32 matmul is the device's fastest: TF32 (10-bit mantissa) on
Ampere-and-later GPUs, bfloat16 passes on TPUs, and whatever `jax_default_matmul_precision` a user
set globally. Any of them costs the DFT energy milli-Hartrees. `full_float32` pins the precision
while a function is traced, so every dot it emits is recorded in the program as HIGHEST — for
the energy, the Fock matrix, the SCF, the model and their gradients (the transpose of a dot keeps
its precision; custom VJP rules are traced later, so they carry the decorator themselves).
tests/test_precision.py checks the lowered programs under a global bfloat16 setting.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import jax

F = TypeVar("F", bound=Callable)
PRECISION = "highest"  # full float32 on every backend (CPU ignores the setting: it is always full)


def full_float32(fn: F) -> F:
  """`fn` traced with float32 matmuls at full precision (a decorator)."""

  @functools.wraps(fn)
  def pinned(*args, **kwargs):
    with jax.default_matmul_precision(PRECISION):
      return fn(*args, **kwargs)

  return pinned
