"""The XC term on the grid, a chunk of points at a time: its energy, its potential, their VJPs.

Every function here walks the grid in chunks of `problem.xc_chunk` points (a `lax.scan`), so
peak memory is one chunk's intermediates whatever the grid's size. The AO values of a chunk are
the orthonormal-basis φ' = φ X: sliced from the problem's (host's) values, evaluated from the
basis (`ao_values.py`), or held for a path that walks the grid several times
(`with_ao_values`). The energy is differenced point by point against the reference density's,
e(ρ) − e(ρ0), and summed in two levels, per chunk and then over chunks (`dft.py`'s docstring,
points 2 and 3). Where autodiff would walk the grid twice or keep every chunk's orbitals, the
VJP is written out (`energy_delta_occupied`, `potential`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from qpt import ao_values
from qpt.precision import full_float32, sum_by_halves
from qpt.problem import DFTProblem, reference_energy

def _density_on_grid(p: jax.Array, ao: list[jax.Array]) -> jax.Array:
  """ρ (and ∇ρ = 2 Σ_μν ∇φ_μ P_μν φ_ν for GGA) (c, chunk) of a density P (n, n) from a chunk of
  AO values ao: c arrays (n, chunk)."""
  return _rho_and_gradient(ao, p @ ao[0], axis=0)  # P φ (n, chunk); P symmetric


def _density_on_grid_occupied(y: jax.Array, ao: list[jax.Array]) -> jax.Array:
  """ρ = Σ_i ψ_i² (and ∇ρ = 2 Σ_i ψ_i ∇ψ_i) (c, chunk) of P = Y Yᵀ from a chunk of AO values
  ao: c arrays (n, chunk), with ψ = Yᵀ φ (m, chunk): plain 2-D matmuls, which XLA's CPU backend
  runs many times faster than a contraction over two axes."""
  yt = y.T
  psi = [yt @ a for a in ao]
  return _rho_and_gradient(psi, psi[0], axis=0)


def _rho_and_gradient(values: list[jax.Array], partner: jax.Array, axis: int) -> jax.Array:
  """(c, chunk): Σ over `axis` of partner·values[x], the gradient rows (x ≥ 1) doubled — ρ and
  ∇ρ = 2 Σ ψ ∇ψ from orbitals (values ψ, ∇ψ; partner ψ), or from AO values and φ P."""
  return jnp.stack([(1.0 if x == 0 else 2.0) * jnp.sum(v * partner, axis=axis)
                    for x, v in enumerate(values)])


def _xc_delta(problem: DFTProblem, density) -> jax.Array:
  """Σ_g w_g (e(ρ_g) − e(ρ0_g)), in chunks of grid points; `density(k)` gives chunk k's ρ (and
  ∇ρ) (c, chunk), e(ρ0) and weights (chunk,) (from `_xc_chunk` or `_xc_chunk_density`).

  e(ρ0) per point is the host's float64 libxc value (`exc_ref`; 0 with `ao_on_device`, point 2
  of the module docstring): the same number E_ref holds, so the difference is exact but for the
  float32 rounding of e(ρ) itself (docs/numerics.md §1: XC loses ~1 µHa in float32 even as a
  total). A scan over chunks with rematerialisation: peak
  memory is one chunk's intermediates, forward and backward, whatever n_grid is.
  """
  functional = problem.functional

  @jax.checkpoint
  def chunk_energy(_, k):
    return None, _xc_chunk_delta(functional, *density(k))

  _, partial = jax.lax.scan(chunk_energy, None, _xc_chunks(problem))
  return sum_by_halves(partial)


def _xc_chunks(problem: DFTProblem) -> jax.Array:
  """The chunk indices 0 … g/chunk − 1, to scan the grid over (`_xc_chunk`)."""
  return jnp.arange(problem.weights.shape[0] // problem.xc_chunk)


def _xc_chunk(problem: DFTProblem, k: jax.Array) -> tuple[list[jax.Array], jax.Array, jax.Array]:
  """Chunk k of the grid: orthonormal AO values φ' = φ X as c arrays (n, chunk) — value, then
  gradient components —, e(ρ0) and weights (chunk,). Evaluated from the basis
  (`ao_values.orthonormal`), or sliced from `ao_orth` where a path holds them (`with_ao_values`):
  each component on its own, straight into the contiguous block a matmul reads (sliced as one
  (c, n, chunk) block, XLA copied it and then each component out of it again: docs/results.md
  §13)."""
  start, size = k * problem.xc_chunk, problem.xc_chunk
  if problem.ao_orth is None:
    ao = ao_values.orthonormal(problem, start, size)
  else:
    c, n, _ = problem.ao_orth.shape
    ao = [jax.lax.dynamic_slice(problem.ao_orth, (x, 0, start), (1, n, size))[0]
          for x in range(c)]
  return (ao, *_exc_ref_and_weights(problem, start, size))


def _exc_ref_and_weights(problem: DFTProblem, start: jax.Array,
                         size: int) -> tuple[jax.Array, jax.Array]:
  """e(ρ0) and the weights (size,) of points start … start + size."""
  return (jax.lax.dynamic_slice_in_dim(problem.exc_ref, start, size),
          jax.lax.dynamic_slice_in_dim(problem.weights, start, size))


def _xc_chunk_density(problem: DFTProblem, k: jax.Array):
  """Chunk k of the grid for orbitals Y (n, m): (Y ↦ ρ and ∇ρ (c, chunk) of P = Y Yᵀ, e(ρ0),
  weights). Without held AO values the orbitals are ψ = (T Y)ᵀ φ_cart (m, chunk): the
  (n, chunk) φ' is never formed, so the chunk costs g·n·m, not g·n², beyond the AO values, and
  points stay the fastest axis (a product with the point axis contracted or leading ran 2× slower
  on XLA:CPU)."""
  if problem.ao_orth is not None:
    ao, exc_ref, weights = _xc_chunk(problem, k)
    return functools.partial(_density_on_grid_occupied, ao=ao), exc_ref, weights
  start, size = k * problem.xc_chunk, problem.xc_chunk
  cart = ao_values.cartesian(problem, start, size)  # c arrays (n_cart, chunk)

  def density(y):
    ty = (problem.cart_to_orth @ y).T  # (m, n_cart)
    psi = [ty @ v for v in cart]  # (m, chunk)
    return _rho_and_gradient(psi, psi[0], axis=0)

  return (density, *_exc_ref_and_weights(problem, start, size))


def with_ao_values(problem: DFTProblem) -> DFTProblem:
  """`problem` holding φ' on every grid point (`ao_orth`), for a path that walks the grid
  several times: one evaluation (and one g·n² transform) instead of one per walk, at the memory
  of the whole (c, g, n) array."""
  if problem.ao_orth is not None:
    return problem
  return dataclasses.replace(problem, ao_orth=ao_values.orthonormal_all(problem))


def with_xc_reference(problem: DFTProblem) -> DFTProblem:
  """`problem` with e(ρ0) on every grid point and E_xc[D0] inside E_ref, where its host left both
  out (a problem built with `ao_on_device`): for the paths that report energies to a user (the
  SCF and refinement call it), once per problem. A problem whose `exc_ref` is set is returned as
  it is.

  Why: without e(ρ0) the device's ΔE carries the whole E_xc (tens of Hartree), so the float32 ΔE
  is rounded to steps of ~4 µHa (uracil/def2-SVP: 3.8 µHa, the spacing between 32 and 64 Ha;
  docs/numerics.md §4c). Here e(ρ0) is evaluated on the device by the same float32 code as e(ρ)
  and summed on the host in float64, so that each point's term is a small difference again.
  Training leaves it out: a constant moves no gradient."""
  if np.any(np.asarray(problem.exc_ref)):
    return problem
  exc_ref = _xc_reference_values(problem)
  e_xc = float(np.sum(np.asarray(problem.weights, np.float64) * np.asarray(exc_ref, np.float64)))
  total = reference_energy(problem) + e_xc
  hi = np.asarray(total, problem.dtype)
  energy_ref = jnp.asarray([hi, total - np.float64(hi)], problem.dtype)
  return dataclasses.replace(problem, exc_ref=exc_ref, energy_ref=energy_ref)


@jax.jit
@full_float32
def _xc_reference_values(problem: DFTProblem) -> jax.Array:
  """e(ρ0) (g,) Hartree/Bohr³ on every grid point, for the reference density P0."""
  functional = problem.functional

  def chunk(_, k):
    rho = _density_on_grid(problem.density_ref_orth, _xc_chunk(problem, k)[0])
    return None, _energy_density(functional, rho)

  return jax.lax.scan(chunk, None, _xc_chunks(problem))[1].reshape(-1)


def _xc_chunk_delta(functional, rho: jax.Array, exc_ref: jax.Array,
                    weights: jax.Array) -> jax.Array:
  """One chunk's Σ w (e(ρ) − e(ρ0)) from ρ (and ∇ρ) (c, chunk)."""
  return sum_by_halves(weights * (_energy_density(functional, rho) - exc_ref))


def _energy_density(functional, rho: jax.Array) -> jax.Array:
  """e(ρ, |∇ρ|²) (chunk,) Hartree/Bohr³ from ρ (and ∇ρ) (c, chunk)."""
  sigma = jnp.sum(rho[1:4] ** 2, axis=0) if functional.is_gga else None
  return functional.energy_density(rho[0], sigma)


# (c, chunk) ∂E/∂ρ (and ∂E/∂∇ρ) of one chunk, weights included: the XC potential on the grid.
_xc_chunk_potential = jax.grad(_xc_chunk_delta, argnums=1)


def energy_delta(problem: DFTProblem, p: jax.Array) -> jax.Array:
  """Σ_g w_g (e(ρ_g) − e(ρ0_g)) for any orthonormal-basis density P (n, n): the XC term of
  `dft`'s ΔE, differentiable (a rematerialised scan, `_xc_delta`)."""
  def density(k):
    ao_k, exc_ref_k, w_k = _xc_chunk(problem, k)
    return _density_on_grid(p, ao_k), exc_ref_k, w_k

  return _xc_delta(problem, density)


@jax.custom_vjp
def energy_delta_occupied(problem: DFTProblem, y: jax.Array) -> jax.Array:
  """`energy_delta` of P = Y Yᵀ (Y: (n, m) occupied orbitals, orthonormal basis): the loss's XC
  term.

  Differentiated, it walks the grid once: each chunk's energy and its gradient ∂E/∂Y are taken
  together (`_energy_delta_occupied_fwd`), and the backward pass only scales the summed gradient.
  The generic rematerialised scan would evaluate every chunk twice (forward, then again before
  its VJP) — the XC quadrature is the largest part of a k = 0 step. First derivatives only: the
  Fock matrices of unrolled steps take their XC potential from `potential`, not from here.
  """
  def density(k):
    density_of, exc_ref_k, w_k = _xc_chunk_density(problem, k)
    return density_of(y), exc_ref_k, w_k

  return _xc_delta(problem, density)


@full_float32  # traced with the gradient, possibly outside the caller's decorator
def _energy_delta_occupied_fwd(problem: DFTProblem, y: jax.Array):
  functional = problem.functional

  def chunk(gradient, k):
    density, exc_ref_k, w_k = _xc_chunk_density(problem, k)
    energy, vjp = jax.vjp(lambda y: _xc_chunk_delta(functional, density(y), exc_ref_k, w_k), y)
    return gradient + vjp(jnp.ones_like(energy))[0], energy

  gradient, partial = jax.lax.scan(chunk, jnp.zeros_like(y), _xc_chunks(problem))
  return sum_by_halves(partial), gradient


def _energy_delta_occupied_bwd(gradient, cotangent):
  return None, cotangent * gradient  # the problem is data: no cotangent


energy_delta_occupied.defvjp(_energy_delta_occupied_fwd, _energy_delta_occupied_bwd)


def reference_potential(problem: DFTProblem) -> jax.Array:
  """Vxc[ρ0] (n, n), orthonormal basis, of the reference density P0: one walk of the grid, no
  derivative of the functional beyond the first (`dft.initial_fock`)."""
  p0 = problem.density_ref_orth
  return _xc_potential_walk(problem, lambda ao_k: _density_on_grid(p0, ao_k))[0]


@jax.custom_vjp
def potential(problem: DFTProblem, density) -> jax.Array:
  """Vxc (n, n) = Σ_g [∂E/∂ρ φφᵀ + ∂E/∂∇ρ·(∇φ φᵀ + φ ∇φᵀ)] = Wᵀφ + φᵀW, W = ½ ∂E/∂ρ φ + ∂E/∂∇ρ·∇φ,
  for P = Σ_j c_j Y_j Y_jᵀ given as ((c_j, Y_j), ...), in chunks of grid points (weights are
  inside ∂E/∂ρ).

  Its VJP is written out (`_potential_bwd`) and keeps only ρ (and ∇ρ) of every grid point
  (c × g numbers) from the forward pass. The generic rematerialised scan evaluated each chunk's
  potential again and went back through each term's orbitals on the grid; an unrolled k = 3
  loss makes three such Fock builds (docs/numerics.md §7c, docs/results.md §13).
  """
  return _potential_fwd(problem, density)[0]


@full_float32  # traced with the gradient, possibly outside the caller's decorator
def _potential_fwd(problem: DFTProblem, density):
  potential, rho = _xc_potential_walk(
      problem, lambda ao_k: sum(cj * _density_on_grid_occupied(y, ao_k) for cj, y in density))
  return potential, (problem, density, rho)


def _xc_potential_walk(problem: DFTProblem, rho_of: Callable) -> tuple[jax.Array, jax.Array]:
  """(Vxc (n, n), ρ (and ∇ρ) (chunks, c, chunk)) in one walk of the grid, for the density whose
  values on a chunk `rho_of(ao_k)` gives from the chunk's AO values (c arrays (n, chunk))."""
  n = problem.overlap.shape[0]

  def chunk_potential(potential, k):
    ao_k, exc_ref_k, w_k = _xc_chunk(problem, k)
    rho = rho_of(ao_k)
    d_rho = _xc_chunk_potential(problem.functional, rho, exc_ref_k, w_k)  # (c, chunk)
    w_mat = 0.5 * d_rho[0] * ao_k[0]  # (n, chunk)
    for x in range(1, len(ao_k)):
      w_mat = w_mat + d_rho[x] * ao_k[x]
    part = _over_points(w_mat, ao_k[0])
    return potential + part + part.T, rho

  return jax.lax.scan(chunk_potential, jnp.zeros((n, n), problem.dtype), _xc_chunks(problem))


@full_float32
def _potential_bwd(residuals, cotangent):
  """V̄ → Ȳ_j, chunk by chunk, in three g·n² products' worth of work at most: with S = V̄ + V̄ᵀ,
  W̄ = φ S; the cotangents of ∂E/∂ρ are v̄_0 = ½ Σ_μ W̄ φ, v̄_x = Σ_μ W̄ ∇_xφ; ρ̄ = (∂²E/∂ρ²) v̄
  (a Hessian-vector product of the chunk's quadrature); then P̄ = Aᵀφ with
  A = ρ̄_0 φ + 2 Σ_x ρ̄_x ∇_xφ, summed over chunks, and Ȳ_j = c_j (P̄ + P̄ᵀ) Y_j. Going through P̄
  rather than through each Y_j's orbitals on the grid costs one g·n² product whatever the number
  of density terms (two g·n·m products per term otherwise)."""
  problem, density, rho = residuals
  n = problem.overlap.shape[0]
  s = cotangent + cotangent.T

  def chunk(p_bar, inputs):
    k, rho_k = inputs
    ao_k, exc_ref_k, w_k = _xc_chunk(problem, k)
    w_bar = s @ ao_k[0]  # (n, chunk); S symmetric
    v_bar = jnp.stack([(0.5 if x == 0 else 1.0) * jnp.sum(w_bar * a, axis=0)
                       for x, a in enumerate(ao_k)])
    # The Hessian is symmetric, so its VJP is ρ̄. Reverse over reverse, not forward: the float32
    # functional drops the overflowing curvature of near-zero densities with a select, which a
    # cotangent passes cleanly and a tangent does not (inf × 0; xc.py).
    rho_bar = jax.vjp(lambda r: _xc_chunk_potential(problem.functional, r, exc_ref_k, w_k),
                      rho_k)[1](v_bar)[0]
    a = rho_bar[0] * ao_k[0]
    for x in range(1, len(ao_k)):
      a = a + 2.0 * rho_bar[x] * ao_k[x]
    return p_bar + _over_points(a, ao_k[0]), None

  p_bar, _ = jax.lax.scan(chunk, jnp.zeros((n, n), problem.dtype), (_xc_chunks(problem), rho))
  p_bar = p_bar + p_bar.T
  terms = tuple((0.5 * jnp.sum((p_bar @ y) * y), cj * (p_bar @ y)) for cj, y in density)
  return None, terms  # the problem is data: no cotangent


potential.defvjp(_potential_fwd, _potential_bwd)


def _over_points(a: jax.Array, b: jax.Array) -> jax.Array:
  """A Bᵀ (n, n) for a, b (n, chunk): the sum over a chunk's points."""
  return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())))
