"""∂E/∂H of the QPT loss: finite differences, stationarity, degeneracy, padding, invariances."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qpt
from tests import jitted, pyscf_reference as ref

PAPER_MIXING = (0.0, 0.5, 0.0)  # k = 3 with mixing in the second step, as in the paper


def benzene_d6h() -> qpt.Molecule:
  """Exactly hexagonal benzene: its occupied e1g / e2g orbitals are exactly degenerate."""
  angles = np.arange(6) * np.pi / 3
  ring = np.stack([np.cos(angles), np.sin(angles), np.zeros(6)], axis=1)
  return qpt.Molecule(["C"] * 6 + ["H"] * 6, np.concatenate([1.397 * ring, 2.481 * ring]),
                      name="benzene-D6h")


@functools.cache
def benzene_problem(dtype):
  return qpt.build_problem(benzene_d6h(), basis="sto-3g", xc="b3lyp5", grid_level=1,
                               dtype=dtype)


def random_symmetric(problem, seed):
  """A random symmetric direction on the real (unpadded) block, unit max-norm."""
  n = problem.shapes[0]
  v = np.random.default_rng(seed).standard_normal((n, n))
  mask = np.outer(problem.ao_mask, problem.ao_mask)
  v = (v + v.T) * mask
  return v / np.abs(v).max()


def directional_check(problem, h, iterations, mixing, seeds=(0, 1), step=1e-4):
  """Directional derivatives of the loss: autodiff vs Richardson-extrapolated central differences.

  Each direction is half along the gradient, half random: a purely random direction can be nearly
  orthogonal to a small gradient (after k SCF steps), and then float64 rounding in the loss
  (~1e-13 Ha) decides the finite difference rather than the derivative.
  """
  # The problem is an argument, not a closure: as a closure its arrays would be constants of the
  # program, and XLA folding them costs more than the test itself.
  loss_of = jax.jit(lambda p, h: qpt.dft.loss_energy_delta(p, h, iterations, mixing))
  grad = np.asarray(jax.jit(jax.grad(loss_of, argnums=1))(problem, h))
  loss = lambda h: loss_of(problem, h)
  for seed in seeds:
    v = grad / np.abs(grad).max() + random_symmetric(problem, seed)
    analytic = np.vdot(grad, v)
    central = lambda t: (float(loss(h + t * v)) - float(loss(h - t * v))) / (2 * t)
    # Richardson: cancels the O(step²) error of central differences, which after k SCF steps
    # from a far-from-converged H is larger than 1e-6 relative.
    numeric = (4 * central(step / 2) - central(step)) / 3
    assert abs(analytic - numeric) <= 1e-6 * abs(analytic), (analytic, numeric)
  return grad


@pytest.mark.parametrize("iterations, mixing", [(0, 0.0), (3, PAPER_MIXING)])
def test_gradient_matches_finite_differences(iterations, mixing):
  problem = ref.problem("water", "sto-3g", "b3lyp5", grid_level=1)
  h = np.asarray(jitted.fock(problem, problem.density_ref))  # the MINAO Fock matrix
  h = h + 0.02 * random_symmetric(problem, 7)  # a generic H, not a special point
  directional_check(problem, h, iterations, mixing)


@pytest.mark.parametrize("iterations, mixing", [(0, 0.0), (3, PAPER_MIXING)])
def test_gradient_with_degenerate_occupied_orbitals(iterations, mixing):
  problem = benzene_problem("float64")
  # Hcore + J[D0] − a/2 K[D0]: exact integrals of a D6h density, so exactly D6h itself.
  x_inv = np.asarray(problem.orthogonalizer_inv)
  h = x_inv.T @ np.asarray(problem.fock_ref_nonxc_orth) @ x_inv
  eps = np.asarray(jitted.orbitals(problem, h)[0])[:21]
  assert np.min(np.diff(eps)) < 1e-10  # really degenerate, among the occupied orbitals
  grad = directional_check(problem, h, iterations, mixing, seeds=(3,))
  assert np.isfinite(grad).all()
  # float32 too: finite and close to the float64 gradient.
  problem32 = benzene_problem("float32")
  grad32 = jax.jit(jax.grad(qpt.dft.loss_energy_delta, argnums=1), static_argnums=(2, 3))(
      problem32, h.astype(np.float32), iterations, mixing)  # the problem an argument: see above
  assert np.isfinite(grad32).all()
  # float32 rounding leaves ~1–3e-5 in the gradient's Frobenius norm, at k = 0 and k = 3 alike (at
  # k = 3, near self-consistency, 0.1–0.7 % of a gradient of norm 4e-3). Its largest element is a
  # heavy-tailed 2e-6 – 1.1e-5 that one CPU's kernels or the last bit of H decide, so the norm is
  # compared, not that element (docs/numerics.md §7d). A float32 failure at the degeneracy
  # (1/(ε_i − ε_j) at a split of ~1e-7) would exceed the bound by decades.
  error = np.linalg.norm(np.asarray(grad32, np.float64) - grad)
  assert error <= 1e-4, error


def test_gradient_vanishes_at_the_converged_fock_matrix():
  mf = ref.rks("water", "def2-svp", "b3lyp5")
  problem = ref.problem("water", "def2-svp", "b3lyp5")
  n = problem.shapes[0]
  grad = jax.jit(jax.grad(qpt.dft.loss_energy_delta, argnums=1))
  at_scf = np.abs(np.asarray(grad(problem, ref.padded(mf.get_fock(), n)))).max()
  at_minao = np.abs(np.asarray(grad(problem, jitted.fock(problem, problem.density_ref)))).max()
  assert at_minao > 1e-2
  assert at_scf < 1e-6


@pytest.mark.parametrize("ao_on_device", [False, True])
def test_padding_has_no_effect_and_gets_no_gradient(ao_on_device):
  """Every padded size — AOs, grid points, auxiliary functions, atoms, occupied slots, and with AO
  values on the device Cartesian functions, and primitives and Cartesian functions per atom —
  changes neither the energy (k = 0, k = 1) nor the SCF, and garbage in H's padding gets no
  gradient.

  B3LYP: a GGA and exchange through the occupied orbitals, so every term the padding could reach.
  What a padded grid point gives each functional (exactly 0, finite gradients) is test_xc's
  `test_gradients_finite_everywhere`; a PBE variant of this test added no path and 70 s."""
  mol = qpt.molecules.get("water")
  small = qpt.build_problem(mol, basis="sto-3g", xc="b3lyp5", grid_level=1, dtype="float64",
                            ao_on_device=ao_on_device)
  n, g, n_aux, n_atoms, n_occ, n_cart, n_atom_prim, n_atom_cart = small.shapes
  big = qpt.build_problem(mol, basis="sto-3g", xc="b3lyp5", grid_level=1, dtype="float64",
                          ao_on_device=ao_on_device,
                          pad_to=(n + 5, g + small.xc_chunk, n_aux + 3, n_atoms + 2, n_occ + 3,
                                  n_cart + 4, n_atom_prim + 8, n_atom_cart + 4))
  h_small = np.asarray(jitted.fock(small, small.density_ref))
  rng = np.random.default_rng(0)
  h_big = rng.standard_normal((n + 5, n + 5)) * 10  # garbage in the padding
  h_big[:n, :n] = h_small
  # Jitted (eager ops each compile); the big problem's energy and gradient in one program.
  loss = jax.jit(qpt.dft.loss_energy_delta, static_argnums=2)
  loss_and_grad = jax.jit(jax.value_and_grad(qpt.dft.loss_energy_delta, argnums=1),
                          static_argnums=2)
  for k in (0, 1):
    e_big, grad = loss_and_grad(big, h_big, k)
    assert abs(float(loss(small, h_small, k)) - float(e_big)) < 1e-10
    grad = np.asarray(grad)
    assert not grad[7:].any() and not grad[:, 7:].any()
  assert abs(qpt.dft.scf(small).energy - qpt.dft.scf(big).energy) < 1e-8


def test_loss_energy_total_is_reference_plus_delta():
  problem = ref.problem("water", "sto-3g", "b3lyp5", grid_level=1)
  h = jitted.fock(problem, problem.density_ref)
  total = float(jitted.loss_energy(problem, h))
  delta = float(jitted.loss_energy_delta(problem, h))
  assert abs(total - (qpt.dft.reference_energy(problem) + delta)) < 1e-10
  # k steps from the MINAO Fock matrix lower the energy toward the SCF minimum, never below it.
  e_scf = qpt.dft.scf(problem).energy
  e3 = qpt.dft.reference_energy(problem) + float(jitted.loss_energy_delta(problem, h, 3, 0.3))
  assert e_scf - 1e-9 <= e3 < qpt.dft.reference_energy(problem) + delta


def rotation(seed):
  q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
  q = q * np.sign(np.diag(r))
  return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("transform, tolerance", [
    (lambda x: x + np.array([1.3, -0.7, 2.1]), 1e-8),  # PySCF's grid moves with the atoms
    (lambda x: x @ rotation(5).T, 1e-5),  # the Lebedev grid does not rotate: ~1e-6 Ha at level 3
])
def test_energy_invariance(transform, tolerance):
  mol = qpt.molecules.get("water")
  moved = mol.with_positions(transform(mol.positions))
  energies = [qpt.dft.scf(qpt.build_problem(m, basis="def2-svp", xc="b3lyp5",
                                                dtype="float64")).energy for m in (mol, moved)]
  assert abs(energies[0] - energies[1]) < tolerance


def test_xc_chunk_size_does_not_change_the_energy():
  mol = qpt.molecules.get("water")
  energies = []
  for chunk in (1024, 4096):
    problem = qpt.build_problem(mol, basis="sto-3g", xc="b3lyp5", grid_level=1,
                                    dtype="float64", xc_chunk=chunk)
    h = jitted.fock(problem, problem.density_ref)
    energies.append(float(jitted.loss_energy_delta(problem, h)))
  assert abs(energies[0] - energies[1]) < 1e-12


def test_float32_loss_and_gradient_track_float64():
  p64 = ref.problem("water", "def2-svp", "b3lyp5")
  p32 = ref.problem("water", "def2-svp", "b3lyp5", dtype="float32")
  h = np.asarray(jitted.fock(p64, p64.density_ref))
  # The problem an argument, not a closure (directional_check says why).
  vg = jax.jit(jax.value_and_grad(lambda p, h: qpt.dft.loss_energy_delta(p, h, 3, PAPER_MIXING),
                                  argnums=1))
  e64, g64 = vg(p64, h)
  e32, g32 = vg(p32, h.astype(np.float32))
  assert abs(float(e32) - float(e64)) < 20e-6
  np.testing.assert_allclose(g32, g64, atol=1e-3 * float(jnp.abs(g64).max()))


@pytest.mark.parametrize("xc", ["pbe", "b3lyp5"])
def test_occupied_orbital_energy_is_the_general_energy(xc):
  """The loss's energy through Y (P = Y Yᵀ) is the general E[P], value and gradient, off the
  SCF solution too (float64, water/def2-SVP, n_occ padded beyond the electrons)."""
  from qpt import dft, eigen
  problem = ref.problem("water", "def2-svp", xc, grid_level=1)
  h = np.asarray(jitted.fock(problem, problem.density_ref)) + 0.05 * random_symmetric(problem, 3)

  def general(problem, h):  # the pre-occupied-orbital path: E[P(H)] minus the same norm correction
    p, norm_energy = eigen.projector(problem, eigen.to_orthonormal(problem, h))
    return dft._delta_energy(problem, p) - norm_energy

  # jitted (eager ops compile one by one), the problem an argument (directional_check says why)
  e_general, g_general = jax.jit(jax.value_and_grad(general, argnums=1))(problem, h)
  e_loss, g_loss = jax.jit(jax.value_and_grad(dft.loss_energy_delta, argnums=1))(problem, h)
  assert problem.shapes[4] > 5  # padded occupied slots are exercised
  assert abs(float(e_loss) - float(e_general)) < 1e-10
  np.testing.assert_allclose(np.asarray(g_loss), np.asarray(g_general), atol=1e-9)
  assert np.abs(np.asarray(g_general)).max() > 1e-3  # away from the minimum: a real comparison


@pytest.mark.parametrize("xc", ["lda,vwn", "b3lyp5"])
def test_fock_of_orbitals_is_the_energys_gradient(xc):
  """The unrolled loss's written-out Fock matrix of a mixed Σ c_j Y_j Y_jᵀ is ∂E/∂P (float64), and
  its hand-written VJP (the XC potential's) is that of autodiff's second derivatives of E."""
  from qpt import dft, eigen
  problem = ref.problem("water", "def2-svp", xc, grid_level=1)
  h0 = eigen.to_orthonormal(problem, jitted.fock(problem, problem.density_ref))
  y0 = eigen.occupied_orbitals(problem, h0)[0]
  y1 = eigen.occupied_orbitals(problem, h0 + 0.1 * random_symmetric(problem, 4))[0]
  density = ((0.3, y0), (0.7, y1))
  p = 0.3 * y0 @ y0.T + 0.7 * y1 @ y1.T
  expected = np.asarray(jax.jit(dft._energy_and_fock)(problem, p)[1])
  np.testing.assert_allclose(np.asarray(jax.jit(dft._fock_of_orbitals)(problem, density)),
                             expected, atol=1e-10)
  assert np.abs(expected).max() > 1.0

  cotangent = random_symmetric(problem, 5) + np.triu(random_symmetric(problem, 6))  # not symmetric
  def vjp(fock_of):  # (Ȳ0, Ȳ1, c̄) of ⟨cotangent, F(Y0, Y1, c)⟩ at c = 0.3
    return jax.jit(jax.grad(lambda p, y0, y1, c: jnp.sum(cotangent * fock_of(p, y0, y1, c)),
                            argnums=(1, 2, 3)))(problem, y0, y1, 0.3)  # p: see directional_check
  written = vjp(lambda p, y0, y1, c: dft._fock_of_orbitals(p, ((c, y0), (1 - c, y1))))
  autodiff = vjp(lambda p, y0, y1, c: dft._energy_and_fock(
      p, c * y0 @ y0.T + (1 - c) * y1 @ y1.T)[1])
  # Not a comparison of zeros: Ȳ0, Ȳ1 are ~4 and ~9 here, c̄ ~0.01–0.04.
  for w, a, floor in zip(written, autodiff, (0.1, 0.1, 1e-3)):
    assert np.abs(np.asarray(a)).max() > floor
    np.testing.assert_allclose(np.asarray(w), np.asarray(a), atol=1e-9)
