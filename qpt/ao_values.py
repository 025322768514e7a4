"""AO values on the grid, evaluated on the device from the basis a `DFTProblem` carries.

A problem built with `ao_on_device` ships the grid's points and the basis as a few small arrays,
not the AO values themselves: those are g × n_ao × 4 numbers (ethanol/def2-SVP at grid level 3:
115 of a 137 MB problem), which the host computed, transformed and contracted into ρ0 for every
conformer, and the device held all at once. Here they are made a chunk of points at a
time, where the XC quadrature needs them (docs/numerics.md §1–2 has the float32 accuracy;
docs/results.md §2 the cost).

Every AO is a contraction of Cartesian Gaussians φ_c = R(r²) xᵃ yᵇ zᶜ, with r = point − centre,
R = Σ_p C_cp exp(−α_p r²) over the primitives p of its shell. A problem's real-spherical AOs are
fixed linear combinations of those, and the orthonormal basis φ' = φ X another: both are folded
into one matrix on the host (`DFTProblem.cart_to_orth`, float64, then cast), so the device forms
φ' = φ_cart · T with one matmul and never holds a spherical AO.

Float32 on the device: the displacement r − A is formed from hi + lo float32 pairs of the point
and the centre (a plain float32 coordinate near 5 Bohr is rounded by up to 2.4e-7 Bohr, which
0.01 Bohr from a nucleus is 2e-5 of r − A); the rest is plain float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qpt.precision import full_float32

MAX_L = 5  # the highest angular momentum evaluated: h, the highest in the bases PySCF ships


def cartesian_powers(l: int) -> list[tuple[int, int, int]]:
  """(a, b, c) of xᵃ yᵇ zᶜ for the Cartesian functions of angular momentum l, in PySCF's order
  (a, then b, descending)."""
  return [(a, b, l - a - b) for a in range(l, -1, -1) for b in range(l - a, -1, -1)]


@full_float32
def cartesian(problem, start: jax.Array, size: int) -> list[jax.Array]:
  """φ_cart and, for GGA, ∂φ_cart/∂x, ∂y, ∂z at points start … start + size: c arrays
  (n_cart, size), Bohr^-3/2 and Bohr^-5/2. Points are the fastest axis, so all but the radial
  contraction are row gathers and wide element-wise operations XLA fuses.

  ∂/∂x (R xᵃ yᵇ zᶜ) = R'·x·xᵃ yᵇ zᶜ + a·R·xᵃ⁻¹ yᵇ zᶜ with R' = −2 Σ_p C_cp α_p exp(−α_p r²).
  """
  points = jax.lax.dynamic_slice_in_dim(problem.points, start, size, axis=2)  # (2, 3, size)
  hi, lo = problem.positions, problem.positions_lo  # (a, 3)
  d = (points[0][None] - hi[:, :, None]) + (points[1][None] - lo[:, :, None])  # (a, 3, size)
  r2 = jnp.sum(d * d, axis=1)  # (a, size)
  alpha, coefficients = problem.atom_exponents, problem.atom_radial  # (a, k), (a, c, k)
  gaussians = jnp.exp(-alpha[:, :, None] * r2[:, None, :])  # (a, k, size)
  atom, powers = problem.cart_atoms, problem.cart_powers  # (n_cart,), (n_cart, 3)
  if problem.functional.is_gga:  # R and R' from one product: [C; −2α C] per atom
    coefficients = jnp.concatenate([coefficients, -2.0 * alpha[:, None, :] * coefficients], 1)
  blocks = jnp.einsum("ack,aks->acs", coefficients, gaussians)  # (a, c or 2c, size)
  # Each function's row of its atom's block; a padded function has no place (`problem.NO_PLACE`)
  # and reads 0.
  radial = blocks.at[atom, problem.cart_locals].get(mode="fill", fill_value=0)  # (n_cart, size)
  n_atoms = d.shape[0]
  factors = []  # per axis: (n_cart, size) d_axis^power of each function's centre
  table = []
  for axis in range(3):
    rows = [jnp.ones_like(r2)]
    for _ in range(MAX_L):
      rows.append(rows[-1] * d[:, axis])
    table.append(jnp.concatenate(rows))  # ((MAX_L + 1)·a, size): power-major
    factors.append(table[-1][powers[:, axis] * n_atoms + atom])
  monomial = factors[0] * factors[1] * factors[2]
  values = [radial * monomial]
  if not problem.functional.is_gga:
    return values
  slope = blocks.at[atom, problem.cart_locals + problem.atom_radial.shape[1]].get(
      mode="fill", fill_value=0)  # (n_cart, size): the rows of −2α C
  for axis in range(3):
    # d_axis^(power − 1), read at power 1 where power = 0 (then multiplied by 0)
    lowered = table[axis][jnp.maximum(powers[:, axis] - 1, 0) * n_atoms + atom]
    others = [factors[x] for x in range(3) if x != axis]
    down = powers[:, axis, None].astype(radial.dtype) * lowered * others[0] * others[1]
    values.append(slope * table[axis][n_atoms + atom] * monomial + radial * down)
  return values


@full_float32
def orthonormal(problem, start: jax.Array, size: int) -> list[jax.Array]:
  """φ' = φ X and its gradients at points start … start + size: c arrays (n, size), points the
  fastest axis as in `cartesian` (Tᵀ φ_cart; the (size, n) product φ_cartᵀ T, a transposed
  output, is several times slower on XLA:CPU: docs/results.md §13)."""
  transform = problem.cart_to_orth  # (n_cart, n)
  return [jax.lax.dot_general(transform, v, (((0,), (0,)), ((), ())))
          for v in cartesian(problem, start, size)]


@full_float32
def orthonormal_all(problem) -> jax.Array:
  """φ' and its gradients on every grid point, (c, n, g), a chunk at a time: for the paths that
  walk the grid several times (unrolled steps, the SCF), one evaluation instead of one per walk.

  Each chunk is written in place into the (c, n, g) result: a scan's stacked (chunks, c, n, chunk)
  output needed a transposing copy of the whole array afterwards, which cost more than the
  evaluation itself (docs/results.md §13)."""
  chunk, n = problem.xc_chunk, problem.cart_to_orth.shape[1]
  n_grid = problem.weights.shape[0]
  c = len(jax.eval_shape(lambda: orthonormal(problem, 0, chunk)))  # components, as made

  def one(k, values):
    for x, v in enumerate(orthonormal(problem, k * chunk, chunk)):
      values = jax.lax.dynamic_update_slice(values, v[None], (x, 0, k * chunk))
    return values

  return jax.lax.fori_loop(0, n_grid // chunk, one, jnp.zeros((c, n, n_grid), problem.dtype))
