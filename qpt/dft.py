"""The restricted Kohn–Sham energy E[D(H)] on the device: differentiable and float32-stable.

Data path:  H ──Xᵀ·X──▶ H' ──eigh──▶ P ──▶ ΔE = E[P] − E[P0]   (+ E_ref on the host)

Inside, everything lives in the orthonormal basis φ' = φ X prepared by `build.py` on the host
(its AO values on the grid too, or made here from the basis, `ao_values.py`): the density is
the projector P = U diag(occ) Uᵀ of H' = Xᵀ H X, never a float32 product X P Xᵀ. The public
functions speak the AO basis (H, D, F as PySCF has them) and convert at the edge. Two parts
live in modules of their own: H' → P and its eigen-VJP (`eigen.py`), and the XC term summed
over the grid chunk by chunk (`xc_quadrature.py`).

Float32 stabilisation (docs/numerics.md has the measurements behind each choice):
  1. The device never forms a total energy. It evaluates ΔE(ΔD) for ΔD = D − D0, relative to the
     MINAO reference density D0 whose energy E_ref = E_nuc + E[D0] (hundreds of Hartree) was
     computed on the host in float64. ΔE is ~1 Ha, so float32's relative 6e-8 is ~0.1 µHa, not
     ~20 µHa.
       ΔE = tr(ΔD·G0) + ½ tr(ΔD·J[ΔD]) − a/4 tr(ΔD·K[ΔD]) + Σ_g w_g (e(ρ) − e(ρ0))
     with G0 = Hcore + J[D0] − a/2 K[D0] from the host. The Coulomb term of the naive formula is
     where float32 lost most (−386 µHa on uracil): here it acts on the small ΔD only.
  2. The XC difference is taken per grid point, e(ρ) − e(ρ0), with e(ρ0) the host's float64 value:
     the XC term is the one float32 handles well even as a total (~1 µHa on uracil). So a problem
     built with `ao_on_device`, whose host evaluates no AO values, takes it as a total in training:
     e(ρ0) = 0 and E_ref leaves E_xc[D0] out. ΔE is then E_xc-sized (tens of Ha), its float32
     value rounded to ~2 µHa; its gradient is unchanged. The paths that report energies (the SCF,
     refinement) first evaluate e(ρ0) on the device and move E_xc[D0] into E_ref
     (`xc_quadrature.with_xc_reference`).
  3. Totals are summed pairwise (`precision.sum_by_halves`): the quadrature's per chunk and then
     over chunks, the exchange and Coulomb terms over the factor's rows, traces over rows. Their
     rounding then grows with log n, whatever order the backend's own reduction takes (XLA:CPU's
     one-term-at-a-time loop put uracil/def2-SVP 300 µHa off; docs/numerics.md §12).
  4. Totals are assembled on the host in float64 (`reference_energy(problem) + ΔE`): every energy
     this module reports to a user is a Python float.
  5. The density's first-order errors are kept out of E: P is formed in the orthonormal basis (no
     ill-conditioned X·P·Xᵀ in float32: 59 → 8 µHa on uracil/def2-SVP), the energy of the
     orbitals' residual norm errors, Σ_i ε_i (‖y_i‖² − occ_i), is subtracted
     (`eigen.occupied_orbitals`), and so is the float32 rounding of P's diagonal
     (`eigen.projector`; the loss takes ΔP's diagonal from the exact product instead): core
     P_kk ≈ 2 rounds to 2.4e-7, a few µHa of E each.
The Fock matrix is the gradient of the same ΔE, F = ∂E/∂P, so energy and Fock matrix can never
disagree (the SCF and `fock` differentiate `_delta_energy`). The loss's last density is
idempotent, P = Y Yᵀ with Y the m occupied orbitals, and its energy is contracted with Y
(`_delta_energy_occupied`): exchange and the XC quadrature then cost n_aux·n²·m and g·n·m rather
than n_aux·n³ and g·n² (ethanol/def2-SVP: n = 72, m = 13). The unrolled steps keep each density
as a short sum Σ_j c_j Y_j Y_jᵀ and write its Fock matrix out (`_fock_of_orbitals`), checked
against ∂E/∂P in the tests. Every public function traces its matmuls at full float32 precision
(`precision.full_float32`), whatever the device's default.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qpt import eigen, xc_quadrature
from qpt.errors import InputError
from qpt.precision import full_float32, sum_by_halves
from qpt.problem import DFTProblem, mo_occupations, reference_energy  # noqa: F401  (public API)


# ---- H → D -----------------------------------------------------------------------------------


@full_float32
def orbitals(problem: DFTProblem, h: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Solves H C = S C ε. Returns ε (n,) Hartree ascending and C (n, n), padded orbitals last.

  H is symmetrised and its padded rows/columns are replaced by a diagonal above a Gershgorin bound
  of the real block, so padded orbitals sort last, are never occupied, and H's padded entries get
  zero gradient. (A fixed huge shift would cost float32 eigenvalue accuracy ∝ ‖H‖.)
  """
  eps, u = jnp.linalg.eigh(eigen.masked(problem, eigen.to_orthonormal(problem, h)))
  return eps, problem.orthogonalizer @ u


@full_float32
def density_matrix(problem: DFTProblem, h: jax.Array) -> jax.Array:
  """D = Σ_i occ_i C_i C_iᵀ (n, n), AO basis, for the occupied eigenvectors of H C = S C ε."""
  x = problem.orthogonalizer
  return x @ eigen.projector(problem, eigen.to_orthonormal(problem, h))[0] @ x.T


# ---- D → ΔE ----------------------------------------------------------------------------------


@full_float32
def delta_energy(problem: DFTProblem, density: jax.Array) -> jax.Array:
  """E[D] − E_ref in Hartree (device dtype). `density`: (n, n) AO basis, electrons, padded.

  Converts D to the orthonormal basis in the device dtype; in float32 that costs first-order
  accuracy on ill-conditioned bases — the SCF and the loss never take this path.
  """
  return _delta_energy(problem, _to_orthonormal_density(problem, density))


def _to_orthonormal_density(problem: DFTProblem, density: jax.Array) -> jax.Array:
  """P = X⁻¹ D X⁻ᵀ (n, n) of an AO-basis D, padded (n, n) as the problem is."""
  x_inv = problem.orthogonalizer_inv
  if jnp.shape(density) != x_inv.shape:  # static: checked while tracing
    raise InputError(f"D has shape {jnp.shape(density)}; this problem's is {x_inv.shape} (its "
                     "padded n_ao)")
  return x_inv @ density @ x_inv.T


def _delta_energy(problem: DFTProblem, p: jax.Array) -> jax.Array:
  """E[P] − E_ref for any orthonormal-basis density P (n, n): what Fock matrices differentiate."""
  dp = p - problem.density_ref_orth
  energy = _one_electron_and_coulomb(problem, dp)
  a = problem.functional.exact_exchange
  if a:
    bd = problem.eri_orth @ dp  # (n_aux, n, n); tr(ΔP K[ΔP]) = Σ_Q tr(B_Q ΔP B_Q ΔP)
    energy -= 0.25 * a * sum_by_halves(jnp.sum(bd * jnp.swapaxes(bd, 1, 2), axis=(1, 2)))
  return energy + xc_quadrature.energy_delta(problem, p)


def _delta_energy_occupied(problem: DFTProblem, y: jax.Array) -> jax.Array:
  """E[Y Yᵀ] − E_ref for occupied orbitals Y (n, m): the same energy as `_delta_energy`, at a cost
  that follows the electrons. Exchange and the density on the grid are contracted with Y
  (n_aux·n²·m and g·n·m instead of n_aux·n³ and g·n²); exchange through
      tr(ΔP K[ΔP]) = Σ_Q ‖Yᵀ B_Q Y‖² − 2 tr(Yᵀ K[P0] Y) + tr(P0 K[P0]),
  with K[P0] from the host. Only for idempotent P = Y Yᵀ, i.e. the loss's last density.

  ΔP's diagonal is the exact product's (`eigen.diagonal_rounding`): P_kk ≈ 2 of a core function is
  rounded to 2.4e-7 in float32, a few µHa of E each (docs/numerics.md §4c), while ΔP_kk, small,
  holds the difference to ~1e-10.
  """
  p = y @ y.T
  dp = p - problem.density_ref_orth - jnp.diag(eigen.diagonal_rounding(p, y))
  energy = _one_electron_and_coulomb(problem, dp)
  a = problem.functional.exact_exchange
  if a:
    by = problem.eri_orth @ y  # (n_aux, n, m)
    yby = jnp.einsum("im,qin->qmn", y, by)
    k_ref = problem.exchange_ref_orth  # tr(P K0) = tr(ΔP K0) + tr(P0 K0)
    exchange = (sum_by_halves(jnp.sum(yby * yby, axis=(1, 2))) - 2.0 * _trace(dp, k_ref)
                - _trace(problem.density_ref_orth, k_ref))
    energy -= 0.25 * a * exchange
  return energy + xc_quadrature.energy_delta_occupied(problem, y)


def _one_electron_and_coulomb(problem: DFTProblem, dp: jax.Array) -> jax.Array:
  """tr(ΔP G0) + ½ tr(ΔP J[ΔP]) for ΔP = P − P0 (n, n), orthonormal basis."""
  fit = jnp.einsum("pij,ij->p", problem.eri_orth, dp)
  return _trace(dp, problem.fock_ref_nonxc_orth) + 0.5 * sum_by_halves(fit * fit)


def _trace(a: jax.Array, b: jax.Array) -> jax.Array:
  """tr(A B) for symmetric A, B: each row summed, then the rows' sums pairwise (float32)."""
  return sum_by_halves(jnp.sum(a * b, axis=1))


@full_float32
def fock(problem: DFTProblem, density: jax.Array) -> jax.Array:
  """Kohn–Sham Fock matrix F[D] = ∂E/∂D = Hcore + J − a/2 K + Vxc (n, n) Hartree, AO basis, padded.

  `density` is an AO-basis D (n, n). F = X⁻ᵀ F' X⁻¹ for the orthonormal-basis F' = ∂E/∂P.
  """
  f_orth = _energy_and_fock(problem, _to_orthonormal_density(problem, density))[1]
  x_inv = problem.orthogonalizer_inv
  return x_inv.T @ f_orth @ x_inv


@full_float32
def initial_fock(problem: DFTProblem) -> jax.Array:
  """H_init = F[D0] (n, n), AO basis: the Fock matrix of the MINAO density, a model's baseline.

  At D0 the host's G0 = Hcore + J[D0] − a/2 K[D0] is the whole non-XC part, so only Vxc[ρ0] is
  computed: one walk of the grid, where differentiating the energy (`fock`) walks it twice and
  evaluates the functional's VJP too — every training step pays this, once per conformer."""
  f = problem.fock_ref_nonxc_orth + xc_quadrature.reference_potential(problem)
  x_inv = problem.orthogonalizer_inv
  return x_inv.T @ (0.5 * (f + f.T)) @ x_inv


def _energy_and_fock(problem: DFTProblem, p: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(E[P] − E_ref, F' = ∂E/∂P) for an orthonormal-basis density P."""
  e, g = jax.value_and_grad(_delta_energy, argnums=1)(problem, p)
  return e, 0.5 * (g + g.T)


# ---- the QPT loss ------------------------------------------------------------------------------


@full_float32
def loss_energy_delta(problem: DFTProblem, h: jax.Array, iterations: int = 0,
                      mixing: float | Sequence[float] = 0.0) -> jax.Array:
  """E[D_k] − E_ref (Hartree, device dtype) after k unrolled SCF steps from D_0 = D(H).

  Step i: D_i = (1 − m_i)·D(F[D_{i−1}]) + m_i·D_{i−1}. `mixing` is one m for every intermediate
  step or a sequence of k values (the paper: k = 3, mixing (0, 0.5, 0)). The last step never mixes,
  so D_k is idempotent and E[D_k] stays a variational upper bound of the SCF energy.
  """
  # 2k + 1 walks of the grid: the AO values evaluated once
  problem = xc_quadrature.with_ao_values(problem) if iterations else problem
  y, norm_energy = _unrolled(problem, h, iterations, mixing)
  return _delta_energy_occupied(problem, y) - norm_energy


@full_float32
def unrolled_density(problem: DFTProblem, h: jax.Array, iterations: int = 0,
                     mixing: float | Sequence[float] = 0.0) -> jax.Array:
  """D_k (n, n), AO basis: the density whose energy `loss_energy_delta` returns."""
  problem = xc_quadrature.with_ao_values(problem) if iterations else problem
  x, y = problem.orthogonalizer, _unrolled(problem, h, iterations, mixing)[0]
  return x @ (y @ y.T) @ x.T


@full_float32
def loss_self_consistency(problem: DFTProblem, h: jax.Array) -> jax.Array:
  """‖H' − F'[P(H)]‖² / n_real (Hartree²), orthonormal basis, with F' held constant.

  The residual of a self-consistent H is zero. Holding the target F'[P(H)] constant
  (stop_gradient) makes the gradient 2 (H' − F')/n_real: a gradient step on H' is a damped Fock
  iteration H' ← H' − η (H' − F'[P(H')]), which, like the SCF, is drawn to the ground state.
  Differentiating through the target instead turns the loss into the root-finding of a nonlinear
  residual, with a minimum at every self-consistent solution and none preferred (issue 13: energy
  errors of ~0.5 Ha). The orthonormal basis weights every direction of the Hilbert space alike
  (the AO residual weights S's near-null directions by λ(S)²) and needs no float32 X P Xᵀ.
  """
  h_orth = eigen.to_orthonormal(problem, h)
  y, _ = eigen.occupied_orbitals(problem, h_orth)
  target = jax.lax.stop_gradient(_fock_of_orbitals(problem, ((1.0, y),)))
  mask = problem.ao_mask
  real = (mask[:, None] * mask[None, :]) > 0
  residual = jnp.where(real, 0.5 * (h_orth + h_orth.T) - target, 0.0)
  return jnp.sum(residual**2) / jnp.sum(mask)


def mixing_schedule(iterations: int, mixing: float | Sequence[float]) -> tuple[float, ...]:
  """`mixing` as k per-step weights: one value for every step, or a sequence of k values."""
  if not (isinstance(iterations, numbers.Integral) and iterations >= 0):
    raise InputError(f"iterations={iterations!r}: must be a whole number ≥ 0 (unrolled SCF steps)")
  m = (tuple(float(x) for x in mixing) if isinstance(mixing, Sequence)
       else (float(mixing),) * iterations)
  if len(m) != iterations:
    raise InputError(f"mixing has {len(m)} values for {iterations} iterations")
  return m


def _unrolled(problem, h, iterations, mixing) -> tuple[jax.Array, jax.Array]:
  """(Y_k with P_k = Y_k Y_kᵀ, the norm-error energy of its last diagonalisation), orthonormal
  basis. Each intermediate density is kept as a short sum Σ_j c_j Y_j Y_jᵀ (mixing adds a term,
  a zero mixing drops the old ones), so its Fock matrix is contracted with orbitals too."""
  m = mixing_schedule(iterations, mixing)
  y, norm_energy = eigen.occupied_orbitals(problem, eigen.to_orthonormal(problem, h))
  density = ()  # ((c_j, Y_j), ...): P = Σ_j c_j Y_j Y_jᵀ
  for i in range(iterations):
    mixed = tuple((m[i - 1] * c, y_j) for c, y_j in density) if i and m[i - 1] else ()
    density = ((1.0 - m[i - 1] if i else 1.0, y),) + mixed
    y, norm_energy = eigen.occupied_orbitals(problem, _fock_of_orbitals(problem, density))
  return y, norm_energy


def _fock_of_orbitals(problem: DFTProblem, density) -> jax.Array:
  """F' = ∂E/∂P (n, n) for P = Σ_j c_j Y_j Y_jᵀ given as ((c_j, Y_j), ...), orthonormal basis:
  G0 + J[ΔP] − a/2 (K[P] − K[P0]) + Vxc[ρ], written out rather than differentiated, so that
  exchange costs n_aux·n²·m per term and the XC quadrature one g·n² product (Vxc) instead of
  two. The same matrix as `_energy_and_fock`'s (tests/test_dft_gradients.py)."""
  b = problem.eri_orth
  n_aux, n, _ = b.shape
  p = sum(c * (y @ y.T) for c, y in density)
  fit = jnp.einsum("pij,ij->p", b, p - problem.density_ref_orth)
  f = problem.fock_ref_nonxc_orth + (fit @ b.reshape(n_aux, n * n)).reshape(n, n)
  a = problem.functional.exact_exchange
  if a:
    exchange = -problem.exchange_ref_orth
    for c, y in density:  # K[Y Yᵀ] = Σ_Q (B_Q Y)(B_Q Y)ᵀ, as one (n, n_aux·m) product
      by = (b.reshape(n_aux * n, n) @ y).reshape(n_aux, n, -1).transpose(1, 0, 2).reshape(n, -1)
      exchange = exchange + c * (by @ by.T)
    f = f - 0.5 * a * exchange
  f = f + xc_quadrature.potential(problem, density)
  return 0.5 * (f + f.T)


@full_float32
def loss_energy(problem: DFTProblem, h: jax.Array, iterations: int = 0,
                mixing: float | Sequence[float] = 0.0) -> jax.Array:
  """The QPT loss: E[D_k] in Hartree, a differentiable scalar in the device dtype.

  In float32 the *total* is rounded to float32's spacing (3e-5 Ha at −284 Ha); gradients are not
  affected. Report `reference_energy(problem) + loss_energy_delta(...)`, assembled in float64.
  """
  hi, lo = problem.energy_ref[0], problem.energy_ref[1]
  return hi + (lo + loss_energy_delta(problem, h, iterations, mixing))


# ---- the full SCF ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SCFResult:
  """A converged (or not) SCF. Matrices are padded (n, n); orbital arrays cover real orbitals only.

  energy: total energy E[density], Hartree, float64 (assembled on the host).
  fock, density: (n, n) at the last iteration; `fock` is F[density] (`scf`) or the DIIS estimate
    of the self-consistent F from every Fock matrix built (`refine`).
  mo_energy: (n_real,) Hartree, eigenvalues of `fock`; mo_coeff: (n, n_real); mo_occ: (n_real,).
  """

  energy: float
  fock: np.ndarray
  density: np.ndarray
  mo_energy: np.ndarray
  mo_coeff: np.ndarray
  mo_occ: np.ndarray
  iterations: int
  converged: bool

  @property
  def homo(self) -> float:
    return float(self.mo_energy[np.flatnonzero(self.mo_occ > 0)[-1]])

  @property
  def lumo(self) -> float:
    return float(self.mo_energy[np.flatnonzero(self.mo_occ == 0)[0]])


def default_tolerances(dtype) -> tuple[float, float]:
  """(|ΔE| Hartree, ‖FDS − SDF‖) at which the SCF stops: what the dtype can resolve."""
  return (1e-10, 1e-6) if jnp.dtype(dtype) == jnp.float64 else (1e-7, 1e-4)


def scf(problem: DFTProblem, max_iterations: int = 50, energy_tol: float | None = None,
        commutator_tol: float | None = None, diis_space: int = 8,
        density0: jax.Array | None = None) -> SCFResult:
  """Self-consistent field from the MINAO density (or an AO-basis `density0`: (n_real, n_real) as
  PySCF's `make_rdm1` gives it, or padded (n, n)), with Pulay DIIS.

  Converged when the energy change of the last step is below `energy_tol` and the AO-basis
  commutator ‖FDS − SDF‖_F is below `commutator_tol` (defaults: `default_tolerances`). DIIS itself
  works in the orthonormal basis, where FDS − SDF is F'P − PF'.

  The energy test never asks for more than the dtype can resolve: energy changes below
  8·ε_mach·|tr(F D)| (measured at the start; |tr(F D)| = |Σ occ_i ε_i|, dominated by the core
  orbitals) count as converged. In float64 that floor is ~1e-13 Ha and the requested tolerance
  rules.
  """
  max_iterations = check_refine(max_iterations, "max_iterations")
  _check_diis_space(diis_space)
  problem = xc_quadrature.with_xc_reference(problem)
  e_tol, c_tol = default_tolerances(problem.dtype)
  e_tol = e_tol if energy_tol is None else energy_tol
  c_tol = c_tol if commutator_tol is None else commutator_tol
  if density0 is None:
    p0 = problem.density_ref_orth
  else:
    x_inv = np.asarray(problem.orthogonalizer_inv, np.float64)
    p0 = np.asarray(x_inv @ _padded_density(problem, density0) @ x_inv.T, problem.dtype)
  zero = jnp.zeros((), problem.dtype)
  return _scf_result(problem, _scf_loop(problem, p0, zero, jnp.asarray(e_tol, problem.dtype),
                                        jnp.asarray(c_tol, problem.dtype),
                                        jnp.asarray(max_iterations), diis_space))


def refine(problem: DFTProblem, h: jax.Array, steps: int, diis_space: int = 8) -> SCFResult:
  """Exactly `steps` DIIS SCF iterations on the device from D(H) (no convergence test): a
  predicted Hamiltonian made more self-consistent by the same float32 energy code, at the cost of
  `steps` Fock builds. steps = 0 returns F[D(H)] and E[D(H)].

  The start is the orthonormal projector of H′ = XᵀHX itself, never a float32 X⁻¹ D X⁻ᵀ.
  Returns an SCFResult: density D_n and its energy E[D_n] (variational); fock, the refined
  Hamiltonian, is the DIIS extrapolation of F[D_0] … F[D_n] (mo_energy, mo_coeff its eigenpairs),
  not F[D_n] alone. Why: F[D_n]'s orbital energies are first order in D_n's error, and the soft
  charge modes a model gets wrong are the ones plain SCF steps overshoot; on water from a trained
  model, 2 steps took occupied ε from 1,478 µHa to 1,472 with F[D_2] and to 32 with the
  extrapolation, at no extra Fock build (docs/numerics.md §11).
  """
  steps = check_refine(steps)
  _check_diis_space(diis_space)
  problem = xc_quadrature.with_xc_reference(problem)
  p0, p0_rounding = _start_density(problem, h)
  zero = jnp.zeros((), problem.dtype)
  return _scf_result(problem, _scf_loop(problem, p0, p0_rounding, zero, zero,
                                        jnp.asarray(steps), diis_space,
                                        extrapolate_last=True))


def check_refine(steps, name: str = "refine") -> int:
  """`steps` as an int, or a one-line InputError naming `name` (the API's or the config's)."""
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
    raise InputError(f"{name}={steps!r}: must be a whole number of SCF steps ≥ 0")
  return int(steps)


def _check_diis_space(diis_space) -> None:
  if isinstance(diis_space, bool) or not isinstance(diis_space, numbers.Integral) or diis_space < 1:
    raise InputError(f"diis_space={diis_space!r}: must be a whole number of Fock matrices ≥ 1")


def _padded_density(problem: DFTProblem, density) -> np.ndarray:
  """An AO density as PySCF has it (n_real, n_real), or already padded (n, n): (n, n) float64."""
  n, n_real = problem.shapes[0], int(np.sum(problem.ao_mask))
  try:
    d = np.asarray(density, np.float64)
  except (TypeError, ValueError):
    raise InputError("density0 is not a matrix of numbers") from None
  if d.shape not in ((n_real, n_real), (n, n)):
    raise InputError(f"density0 has shape {d.shape}: expected this problem's ({n_real}, {n_real}) "
                     f"AO density (or ({n}, {n}) padded)")
  if not np.all(np.isfinite(d)):
    raise InputError("density0 has non-finite entries")
  return np.pad(d, (0, n - d.shape[0]))


@jax.jit
@full_float32
def _start_density(problem: DFTProblem, h: jax.Array) -> tuple[jax.Array, jax.Array]:
  """P(H) (n, n), orthonormal basis: the occupied projector the loss's energy is taken at, and
  the energy of its float32 rounding (`eigen.projector`)."""
  return eigen.projector(problem, eigen.to_orthonormal(problem, h))


def _scf_result(problem: DFTProblem, out) -> SCFResult:
  """`_scf_loop`'s device outputs as an SCFResult: AO basis, float64, total energy."""
  e_delta, f_orth, p, eps, u, iterations, converged = jax.device_get(out)
  # Back to the AO basis on the host, in float64: F = X⁻ᵀ F' X⁻¹, D = X P Xᵀ, C = X U.
  x = np.asarray(problem.orthogonalizer, np.float64)
  x_inv = np.asarray(problem.orthogonalizer_inv, np.float64)
  f_orth, p, u = (np.asarray(a, np.float64) for a in (f_orth, p, u))
  n_real = int(np.sum(problem.ao_mask))
  return SCFResult(reference_energy(problem) + float(e_delta), x_inv.T @ f_orth @ x_inv,
                   x @ p @ x.T, eps[:n_real].astype(np.float64), (x @ u)[:, :n_real],
                   mo_occupations(problem), int(iterations), bool(converged))


@functools.partial(jax.jit, static_argnames=("diis_space", "extrapolate_last"))
@full_float32
def _scf_loop(problem, p0, p0_rounding, e_tol, c_tol, max_iterations, diis_space,
              extrapolate_last=False):
  """The SCF in the orthonormal basis: (ΔE, F', P, ε, U, iterations, converged), from P0 whose
  float32 rounding has the energy p0_rounding (`eigen.projector`; 0 for the MINAO density).

  extrapolate_last: F' (and ε, U) is the DIIS extrapolation of every Fock matrix built, the last
  one included, instead of the last one alone: the history's estimate of the self-consistent F,
  at the cost of one small linear solve (what PySCF diagonalises at every cycle). Without it,
  a run stopped short of convergence reports F[D_n], whose error is first order in D_n's.
  """
  n = p0.shape[0]
  x_inv = problem.orthogonalizer_inv
  problem = xc_quadrature.with_ao_values(problem)  # every iteration walks the grid twice

  def commutator(f, p):
    fp = f @ p
    return fp - fp.T

  def extrapolate(f, p, f_hist, err_hist, it):
    """F[P] of iteration `it` into the history, and the DIIS extrapolation of the history."""
    slot = it % diis_space
    f_hist = f_hist.at[slot].set(f)
    err_hist = err_hist.at[slot].set(commutator(f, p))
    return _diis(f_hist, err_hist, jnp.minimum(it + 1, diis_space), f), f_hist, err_hist

  def step(state):
    p, e, f, f_hist, err_hist, it, _ = state
    f_extrapolated, f_hist, err_hist = extrapolate(f, p, f_hist, err_hist, it)
    p_new, norm_energy = eigen.projector(problem, f_extrapolated)
    e_new, f_new = _energy_and_fock(problem, p_new)
    e_new = e_new - norm_energy
    e_converged = jnp.abs(e_new - e) < e_tol
    c_converged = jnp.linalg.norm(x_inv.T @ commutator(f_new, p_new) @ x_inv) < c_tol  # FDS − SDF
    return p_new, e_new, f_new, f_hist, err_hist, it + 1, e_converged & c_converged

  def not_done(state):
    return (~state[-1]) & (state[-2] < max_iterations)

  e0, f0 = _energy_and_fock(problem, p0)
  e0 = e0 - p0_rounding
  energy_noise = 8 * jnp.finfo(problem.dtype).eps * jnp.abs(_trace(f0, p0))
  e_tol = jnp.maximum(e_tol, energy_noise)
  hist = jnp.zeros((diis_space, n, n), problem.dtype)
  state = (p0, e0, f0, hist, hist, jnp.asarray(0), jnp.asarray(False))
  p, e, f, f_hist, err_hist, iterations, converged = jax.lax.while_loop(not_done, step, state)
  if extrapolate_last:
    f = extrapolate(f, p, f_hist, err_hist, iterations)[0]
  eps, u = jnp.linalg.eigh(eigen.masked(problem, f))
  return e, f, p, eps, u, iterations, converged


def _diis(f_hist: jax.Array, err_hist: jax.Array, count: jax.Array,
          fallback: jax.Array) -> jax.Array:
  """Pulay's extrapolation Σ c_i F_i minimising ‖Σ c_i e_i‖ subject to Σ c_i = 1.

  Works on a fixed-size history (static shapes); slots ≥ count are inert. The error matrix is
  normalised by its largest diagonal so float32 can solve it near convergence; an unsolvable system
  falls back to `fallback` (the newest Fock matrix).
  """
  m = f_hist.shape[0]
  valid = jnp.arange(m) < count
  b = jnp.einsum("iab,jab->ij", err_hist, err_hist)
  both = valid[:, None] & valid[None, :]
  scale = jnp.max(jnp.where(valid, jnp.diag(b), 0.0))
  scale = jnp.where(scale > 0, scale, 1.0)
  b = jnp.where(both, b / scale, jnp.eye(m, dtype=b.dtype))
  ones = valid.astype(b.dtype)
  a = jnp.block([[b, -ones[:, None]], [-ones[None, :], jnp.zeros((1, 1), b.dtype)]])
  rhs = jnp.concatenate([jnp.zeros(m, b.dtype), -jnp.ones(1, b.dtype)])
  coeff = jnp.linalg.solve(a, rhs)[:m] * ones
  extrapolated = jnp.einsum("i,iab->ab", coeff, f_hist)
  return jnp.where(jnp.all(jnp.isfinite(coeff)), extrapolated, fallback)
