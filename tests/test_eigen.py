"""H' → P in float32 (`qpt/eigen.py`): the exact sums behind its rounding corrections.

The corrections themselves are checked where they act, on energies against PySCF and float64
(`tests/test_dft.py`), and the eigen-VJP by finite differences (`tests/test_dft_gradients.py`).
"""

import jax
import numpy as np

from qpt import eigen


def test_float32_squares_are_summed_exactly():
  """The sums behind the float32 rounding corrections (`eigen._norm_deviation`, `eigen.projector`)
  against float64: row sums of squares to 1e-13 (a plain float32 sum is off by ~5e-7), and
  ‖y_i‖² − 2 of columns whose norm² is ≈ 2, with one dominant element as a core orbital has, to
  the float32 rounding of the small result itself (a plain sum could not resolve below 2.4e-7,
  float32's spacing at 2)."""
  rng = np.random.default_rng(1)
  y = rng.normal(size=(200, 30)) * 0.01
  y[rng.permutation(200)[:30], np.arange(30)] = np.sqrt(2.0 - np.sum(y**2, axis=0) + 1e-6)
  y = y.astype(np.float32)
  exact = (y.astype(np.float64) ** 2)
  hi, lo = jax.jit(lambda y: eigen._sum_exactly(eigen._exact_squares(y), axis=1))(y)
  np.testing.assert_allclose(np.float64(hi) + np.float64(lo), exact.sum(1), rtol=0, atol=1e-13)
  deviation = jax.jit(eigen._norm_deviation)(y, np.full(30, 2.0, np.float32))
  np.testing.assert_allclose(np.float64(deviation), exact.sum(0) - 2.0, rtol=1.2e-7, atol=1e-13)
