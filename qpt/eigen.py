"""H' → P: the occupied orbitals of an orthonormal-basis Hamiltonian, float32-stable.

`dft.py` works in the orthonormal basis φ' = φ X; here H' = Xᵀ H X becomes its occupied orbitals
Y (n, m), the density P = Y Yᵀ, and the first-order energies of their float32 rounding, which
the energy subtracts (docs/numerics.md §3, §4c). The eigen-decomposition's VJP is written out
(Daleckii–Krein, restricted to the occupied–virtual pairs the energy depends on), so degenerate
orbitals never divide by zero and a vanishing HOMO–LUMO gap has a bounded gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qpt.errors import InputError
from qpt.precision import full_float32
from qpt.problem import DFTProblem

GAP_GUARD = 1e-4  # Hartree; broadens 1/(ε_i − ε_a) in the eigen-VJP so it stays ≤ 1/(2·GAP_GUARD)


def to_orthonormal(problem: DFTProblem, h: jax.Array) -> jax.Array:
  """H' = Xᵀ H X in the problem's dtype (a float64 H from the host is rounded here, once). Rounding
  here only perturbs the Hamiltonian: energies change at second order."""
  x = problem.orthogonalizer
  if jnp.shape(h) != x.shape:  # static: checked while tracing, free in the compiled program
    raise InputError(f"H has shape {jnp.shape(h)}; this problem's is {x.shape} (its padded n_ao)")
  if not isinstance(h, jax.core.Tracer) and not np.isfinite(np.asarray(h)).all():
    raise InputError("H has non-finite entries")  # a value given, not traced: the energy was NaN
  return x.T @ jnp.asarray(h, problem.dtype) @ x


def projector(problem: DFTProblem, h_orth: jax.Array) -> tuple[jax.Array, jax.Array]:
  """P = Y Yᵀ (n, n) for an orthonormal-basis H', and the first-order energy of its float32
  rounding: Y's norm errors (see `occupied_orbitals`) plus Σ_k H'_kk (P_kk − (Y Yᵀ)_kk exact).

  Why the diagonal: a core function's P_kk ≈ 2 is rounded to float32's 2.4e-7 when the product
  is formed, and E moves by F_kk ≈ −20 Ha times that, ~5 µHa per core function. Uncorrected, the
  float32 SCF energy of uracil/def2-SVP spread over −3.6 … +11.7 µHa with the iteration it
  stopped at, though its density was exact (docs/numerics.md §4c). H' stands in for F[P]: they
  agree to the SCF's residual, and the rounding it multiplies is ~1e-7. Off-diagonal roundings
  are left: an element's rounding scales with |P_kl|, which is large only on the diagonal of
  core functions. No gradient: it is a rounding correction, like the norm errors'."""
  y, norm_energy = occupied_orbitals(problem, h_orth)
  p = y @ y.T
  diagonal = jnp.diagonal(masked(problem, h_orth))
  return p, norm_energy + jnp.sum(diagonal * diagonal_rounding(p, y))


def diagonal_rounding(p: jax.Array, y: jax.Array) -> jax.Array:
  """P_kk − (Y Yᵀ)_kk (n,) for P = Y Yᵀ formed in float32, the exact product's diagonal summed
  exactly (`_exact_squares`, `_sum_exactly`). Carries no gradient: a rounding correction."""
  exact_hi, exact_lo = _sum_exactly(_exact_squares(y), axis=1)
  return jax.lax.stop_gradient((jnp.diagonal(p) - exact_hi) - exact_lo)


def occupied_orbitals(problem: DFTProblem, h_orth: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Y = U_occ diag(√occ) (n, m) for an orthonormal-basis H' (P = Y Yᵀ), and the first-order
  energy of Y's norm errors.

  Why the second output: a float32 eigenvector u_i is normalised only to ~1e-7, and once rounded to
  float32 no rescaling can do better. A norm error δn_i moves E by ε_i·δn_i to first order; for
  core orbitals (ε ≈ −20 Ha) that was ±10–60 µHa (malondialdehyde/STO-3G). Subtracting
  Σ_i occ_i ε_i δn_i, with δn_i = ‖u_i‖² − 1 computed without cancellation and ε_i the eigenvalue
  of H' (equal to F's at self-consistency), removes it. It carries no gradient: it is a rounding
  correction.
  """
  return _eigh_occupied(masked(problem, h_orth), problem.occupation)


def masked(problem: DFTProblem, h_orth: jax.Array) -> jax.Array:
  """H' symmetrised, its padded rows and columns replaced by a diagonal above a Gershgorin bound
  of the real block: padded orbitals sort last and are never occupied, and H's padded entries get
  no gradient."""
  mask = problem.ao_mask
  real = (mask[:, None] * mask[None, :]) > 0
  # where, not ×0: NaN in padding stays out
  h_orth = jnp.where(real, 0.5 * (h_orth + h_orth.T), 0.0)
  bound = jax.lax.stop_gradient(jnp.max(jnp.sum(jnp.abs(h_orth), axis=1))) + 1.0
  return h_orth + jnp.diag((1.0 - mask) * bound)


@jax.custom_vjp
def _eigh_occupied(h_orth: jax.Array, occupation: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Y = U[:, :m] diag(√occ) for the eigenvectors U of a symmetric h_orth (ascending eigenvalues;
  occupation (m,) of the m lowest), and Σ_i occ_i ε_i (‖u_i‖² − 1), the energy of U's norm errors
  (see `occupied_orbitals`)."""
  return _eigh_occupied_fwd(h_orth, occupation)[0]


def _eigh_occupied_fwd(h_orth, occupation):
  m = occupation.shape[0]
  eps, u = jnp.linalg.eigh(h_orth)
  y = u[:, :m] * jnp.sqrt(occupation)
  norm_energy = jnp.sum(eps[:m] * _norm_deviation(y, occupation))
  return (y, norm_energy), (eps, u, occupation)


def _norm_deviation(y: jax.Array, occupation: jax.Array) -> jax.Array:
  """‖y_i‖² − occ_i per column of Y (n, m), without float32 cancellation.

  Σ_k y_k² − occ summed directly cannot resolve below ~1e-7 of occ (the sum is ≈ occ). The
  squares are split into float32 parts whose sum is exact and summed with their rounding errors
  kept (`_sum_exactly`), then occ is taken off the leading part, which it nearly equals. Taken
  of Y itself, not of the unit eigenvectors: scaling them by √occ rounds every element again."""
  total, low = _sum_exactly(_exact_squares(y), axis=0)
  return (total - occupation) + low


def _exact_squares(a: jax.Array) -> jax.Array:
  """a² as (3, …) float32 parts whose sum is exactly a²: a = hi + lo split so that hi has 12
  significant bits (Veltkamp), then hi², 2·hi·lo and lo² are each exact in float32."""
  c = a * 4097.0  # 2¹² + 1
  hi = c - (c - a)
  lo = a - hi
  return jnp.stack([hi * hi, 2.0 * hi * lo, lo * lo])


def _sum_exactly(parts: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
  """Σ of `parts` (3, …) over the part axis and `axis` of the rest, as float32 (hi, lo) with
  hi + lo accurate to ~1e-7 of the largest rounding error: a pairwise tree of Knuth's TwoSum,
  whose rounding errors are added up separately (they are ~1e-7 of the sum, so their own
  float32 sum is exact enough)."""
  x = jnp.moveaxis(parts, axis + 1, 1)
  x = x.reshape((-1,) + x.shape[2:])
  low = jnp.zeros_like(x)
  while x.shape[0] > 1:
    if x.shape[0] % 2:
      x, low = (jnp.concatenate([a, jnp.zeros_like(a[:1])]) for a in (x, low))
    a, b = x[0::2], x[1::2]
    total = a + b
    b_virtual = total - a
    error = (a - (total - b_virtual)) + (b - b_virtual)
    x, low = total, (low[0::2] + low[1::2]) + error
  return x[0], low[0]


@full_float32  # traced when the gradient is, outside the forward's decorator
def _eigh_occupied_bwd(residuals, cotangents):
  """Daleckii–Krein: dH' = U (Γ ∘ G) Uᵀ with Γ_ij = (f_i − f_j)/(ε_i − ε_j), G = Uᵀ P̄ U.

  Whatever the energy is computed from, it depends on Y only through P = Y Yᵀ, so Ȳ = 2 P̄ Y and
  Uᵀ Ȳ holds G's occupied columns, scaled by 2√occ — all Γ needs, for Γ vanishes unless one
  orbital is occupied and the other is not. So degenerate occupied (or virtual) orbitals never
  divide by zero; the occupied–virtual denominator is broadened by GAP_GUARD, bounding the
  gradient when HOMO and LUMO nearly touch. The norm-error energy gets no gradient.
  """
  eps, u, occupation = residuals
  n, m = u.shape[0], occupation.shape[0]
  occ = jnp.zeros(n, u.dtype).at[:m].set(occupation)
  scale = jnp.where(occupation > 0, 0.5 / jnp.sqrt(jnp.where(occupation > 0, occupation, 1.0)), 0.0)
  columns = (u.T @ cotangents[0]) * scale  # (n, m): G[:, j] for the occupied j
  virtual_rows = jnp.zeros((n, n), u.dtype).at[:, :m].set(
      jnp.where((occ == 0)[:, None], columns, 0.0))  # G[a, i], a virtual, i occupied
  g = virtual_rows + virtual_rows.T
  d_eps = eps[:, None] - eps[None, :]
  d_occ = occ[:, None] - occ[None, :]
  gamma = d_occ * d_eps / (d_eps**2 + GAP_GUARD**2)
  return u @ (gamma * g) @ u.T, jnp.zeros_like(occupation)


_eigh_occupied.defvjp(_eigh_occupied_fwd, _eigh_occupied_bwd)
