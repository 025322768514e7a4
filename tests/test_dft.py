"""The JAX Kohn–Sham energy and SCF against PySCF in float64, and float32 against the same reference.

The full grid (4 molecules × 3 basis sets × 3 functionals × 2 dtypes) is `tools/validate_pyscf.py`;
here is a representative subset that covers every code path: LDA / GGA / hybrid, both VWN
variants, dense and DF electron repulsion, float64 and float32.
"""

import functools

import jax
import numpy as np
import pytest

import qpt
from tests import jitted, pyscf_reference as ref

F64_CASES = [  # molecule, basis, xc, eri
    ("water", "def2-svp", "lda,vwn", "dense"),
    ("water", "def2-svp", "pbe", "dense"),
    ("water", "def2-svp", "b3lyp5", "dense"),
    ("water", "6-31g", "b3lyp", "dense"),
    ("water", "def2-svp", "b3lyp5", "df"),
    ("malondialdehyde", "sto-3g", "pbe", "dense"),
]
F32_CASES = [
    ("water", "def2-svp", "b3lyp5", "dense"),
    ("water", "def2-svp", "pbe", "df"),
    ("malondialdehyde", "sto-3g", "b3lyp5", "dense"),
]


@pytest.mark.parametrize("molecule, basis, xc, eri", F64_CASES)
def test_float64_scf_matches_pyscf(molecule, basis, xc, eri):
  mf = ref.rks(molecule, basis, xc, eri)
  result = qpt.dft.scf(ref.problem(molecule, basis, xc, eri, "float64"))
  assert result.converged
  assert abs(result.energy - mf.e_tot) < 1e-6
  assert result.iterations <= mf.cycles + 3
  homo, lumo = ref.homo_lumo(mf)
  assert abs(result.homo - homo) < 1e-6 and abs(result.lumo - lumo) < 1e-6


@pytest.mark.parametrize("molecule, basis, xc, eri", F32_CASES)
def test_float32_scf_within_50_microhartree(molecule, basis, xc, eri):
  mf = ref.rks(molecule, basis, xc, eri)
  problem = ref.problem(molecule, basis, xc, eri, "float32")
  assert problem.overlap.dtype == np.float32
  result = qpt.dft.scf(problem)
  assert result.converged
  assert isinstance(result.energy, float)  # assembled on the host in float64
  assert abs(result.energy - mf.e_tot) < 50e-6
  homo, lumo = ref.homo_lumo(mf)
  assert abs(result.homo - homo) < 50e-6 and abs(result.lumo - lumo) < 50e-6


def test_the_widest_molecule_accepted_is_still_pyscfs_energy_and_a_wider_one_is_refused():
  """He 1,000 Å from H2 (`molecule.MAX_SPAN_ANGSTROM`): float32 within 50 µHa of PySCF. At 10²⁰
  Å the grids overflowed and the energy came out 13 Ha off with only a numpy warning."""
  widest = qpt.Molecule(["H", "H", "He"], [[0, 0, 0], [0, 0, 0.74], [0, 0, 999.9]])
  mf = ref.converged_rks(widest, "sto-3g", "lda,vwn", 1)
  result = qpt.dft.scf(qpt.build_problem(widest, "sto-3g", "lda,vwn", grid_level=1))
  assert result.converged and abs(result.energy - mf.e_tot) < 50e-6
  with pytest.raises(qpt.InputError, match=r"atoms 1 \(H\) and 3 \(He\) are 1e\+20 Å apart "
                     r"\(maximum 1000 Å\): are the positions in Å\?"):
    qpt.Molecule(["H", "H", "He"], [[0, 0, 0], [0, 0, 0.74], [0, 0, 1e20]])


def test_float32_loss_energy_is_steady_under_small_changes_of_h():
  """The float32 loss energy E[D(H)] against float64's, at 8 Hamiltonians within 1e-4 Ha of
  water/def2-SVP's converged Fock matrix: the differences span under 1.5 µHa (measured 0.6;
  6.3 before ΔP's diagonal was taken from the exact product, `eigen.diagonal_rounding`)."""
  kwargs = dict(basis="def2-svp", xc="b3lyp5", eri="df", grid_level=1)
  water = qpt.molecules.get("water")
  p32, p64 = (qpt.build_problem(water, dtype=d, **kwargs) for d in ("float32", "float64"))
  fock = qpt.dft.scf(p64).fock
  loss = jax.jit(qpt.dft.loss_energy_delta)
  rng = np.random.default_rng(0)
  differences = []
  for _ in range(8):
    noise = rng.normal(size=fock.shape) * 1e-4
    h = fock + noise + noise.T
    e32 = qpt.dft.reference_energy(p32) + float(loss(p32, h.astype(np.float32)))
    differences.append(e32 - (qpt.dft.reference_energy(p64) + float(loss(p64, h))))
  assert max(differences) - min(differences) < 1.5e-6
  assert max(abs(d) for d in differences) < 1e-5


# XLA:CPU hands large sums to YNNPACK (many partial sums) unless told otherwise; with only its
# matmuls handed over, XLA sums in its own loop, one term at a time.
XLA_OWN_REDUCTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


@pytest.mark.parametrize("k", [0, 3])
def test_float32_loss_energy_does_not_rest_on_how_the_backend_sums(k):
  """The float32 loss energy within 5 µHa of float64's, whether XLA:CPU sums as it does by default
  or term by term. Before the energy's totals were summed pairwise (`precision.sum_by_halves`),
  term by term put this case 30 µHa (k = 0) and 35 µHa (k = 3) off; now 2–3 µHa either way."""
  ethanol = qpt.molecules.get("ethanol")
  p32, p64 = (qpt.build_problem(ethanol, grid_level=1, dtype=d) for d in ("float32", "float64"))
  h = np.asarray(jax.jit(qpt.dft.initial_fock)(p32), np.float64)
  loss = functools.partial(qpt.dft.loss_energy_delta, iterations=k, mixing=(0.0, 0.5, 0.0)[:k])
  e64 = float(jax.jit(loss)(p64, h))
  for options in ({}, XLA_OWN_REDUCTIONS):
    e32 = float(jax.jit(loss, compiler_options=options)(p32, h.astype(np.float32)))
    assert abs(e32 - e64) < 5e-6, (options, e32 - e64)

def test_energy_of_pyscf_density_matches_pyscf_energy():
  """E[D] alone (no SCF), at PySCF's converged density: the functional itself is PySCF's."""
  mf = ref.rks("water", "def2-svp", "b3lyp5")
  problem = ref.problem("water", "def2-svp", "b3lyp5")
  n = problem.shapes[0]
  e = qpt.dft.reference_energy(problem) + float(
      jitted.delta_energy(problem, ref.padded(mf.make_rdm1(), n)))
  assert abs(e - mf.e_tot) < 1e-8


def test_fock_matrix_matches_pyscf():
  mf = ref.rks("water", "def2-svp", "pbe")
  problem = ref.problem("water", "def2-svp", "pbe")
  n, nao = problem.shapes[0], mf.mol.nao
  f = np.asarray(jitted.fock(problem, ref.padded(mf.make_rdm1(), n)))
  np.testing.assert_allclose(f[:nao, :nao], mf.get_fock(), atol=1e-8)
  assert not f[nao:].any() and not f[:, nao:].any()


def test_initial_fock_is_pyscfs_fock_of_the_minao_density():
  mf = ref.rks("water", "def2-svp", "b3lyp5")  # a GGA with exact exchange: every term of F
  problem = ref.problem("water", "def2-svp", "b3lyp5")
  n, nao = problem.shapes[0], mf.mol.nao
  h = np.asarray(jitted.initial_fock(problem))
  np.testing.assert_allclose(h[:nao, :nao], mf.get_fock(dm=mf.get_init_guess(key="minao")),
                             atol=1e-8)
  assert not h[nao:].any() and not h[:, nao:].any()


def test_minao_start_is_pyscf_minao():
  problem = ref.problem("water", "def2-svp", "b3lyp5")
  mf = ref.rks("water", "def2-svp", "b3lyp5")
  d0 = mf.get_init_guess(key="minao")
  np.testing.assert_allclose(np.asarray(problem.density_ref)[: mf.mol.nao, : mf.mol.nao], d0,
                             atol=1e-12)
  assert abs(qpt.dft.reference_energy(problem) - mf.energy_tot(d0)) < 1e-8


@pytest.mark.parametrize("padded", [False, True])
def test_scf_from_given_density_converges_at_once(padded):
  """PySCF's own (n_real, n_real) density, or the problem's padded (n, n) one."""
  mf = ref.rks("water", "sto-3g", "b3lyp5")
  problem = ref.problem("water", "sto-3g", "b3lyp5")
  density0 = mf.make_rdm1()
  assert density0.shape[0] < problem.shapes[0]  # 7 AOs padded to 8: the two shapes differ
  if padded:
    density0 = ref.padded(density0, problem.shapes[0])
  result = qpt.dft.scf(problem, density0=density0)
  assert result.converged and result.iterations <= 2
  assert abs(result.energy - mf.e_tot) < 1e-6


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(density0=np.eye(3)), r"density0 has shape \(3, 3\): expected this problem's \(7, 7\)"),
    (dict(density0=np.full((7, 7), np.nan)), "density0 has non-finite entries"),
    (dict(max_iterations=-3), "max_iterations=-3"),  # was 0 iterations, silently
    (dict(max_iterations="a"), "max_iterations='a'"),
    (dict(diis_space=0), "diis_space=0"),  # was an IndexError
])
def test_bad_scf_arguments_are_input_errors(kwargs, fragment):
  problem = qpt.build_problem(qpt.molecules.get("water"), basis="sto-3g", grid_level=0)
  with pytest.raises(qpt.InputError, match=fragment):
    qpt.dft.scf(problem, **kwargs)


def test_padded_orbitals_are_never_occupied_or_reported():
  problem = ref.problem("water", "sto-3g", "lda,vwn", "dense", "float64")
  n, nao = problem.shapes[0], 7
  assert n > nao
  result = qpt.dft.scf(problem)
  assert result.mo_energy.shape == (nao,) and result.mo_coeff.shape == (n, nao)
  assert not result.mo_coeff[nao:].any()
  assert result.fock.shape == (n, n) and result.density.shape == (n, n)
  mf = ref.rks("water", "sto-3g", "lda,vwn")
  np.testing.assert_allclose(result.mo_energy, mf.mo_energy, atol=1e-6)
  assert result.mo_occ.sum() == 10


def test_basis_missing_for_element_is_an_input_error():
  iodine = qpt.Molecule(["I", "I"], [[0, 0, 0], [0, 0, 2.7]])
  with pytest.raises(qpt.InputError, match="not defined for element I"):
    qpt.build_problem(iodine, basis="6-31g")


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(xc="m06"), "unknown XC functional"),
    (dict(eri="cd"), "eri='cd'"),
    (dict(dtype="float16"), "dtype='float16'"),
    (dict(grid_level=12), "grid_level=12"),
    (dict(xc_chunk=0), "xc_chunk=0"),  # was a ZeroDivisionError
    (dict(xc_chunk=1.5), "xc_chunk=1.5"),
])
def test_bad_options_are_input_errors(kwargs, fragment):
  with pytest.raises(qpt.InputError, match=fragment):
    qpt.build_problem(qpt.molecules.get("water"), basis="sto-3g", **kwargs)


@pytest.mark.parametrize("molecule, kwargs, fragment", [
    ("water", {}, r"molecule='water': give a qpt.Molecule or a pyscf Mole \(a built-in one"),
    (None, {}, "molecule=None: give a qpt.Molecule"),
    (qpt.molecules.get("water"), dict(pad_to="big"), "a padded shape is"),
])
def test_a_wrong_kind_of_argument_is_an_input_error(molecule, kwargs, fragment):
  with pytest.raises(qpt.InputError, match=fragment):
    qpt.build_problem(molecule, basis="sto-3g", **kwargs)


def test_a_density_of_another_shape_is_one_input_error():
  """PySCF's unpadded D (7 × 7 for water/STO-3G, whose problem pads to 8) failed in a matmul."""
  problem = qpt.build_problem(qpt.molecules.get("water"), basis="sto-3g", grid_level=0)
  for function in (qpt.dft.fock, qpt.dft.delta_energy, jax.jit(qpt.dft.delta_energy)):
    with pytest.raises(qpt.InputError, match=r"D has shape \(7, 7\); this problem's is \(8, 8\)"):
      function(problem, np.zeros((7, 7), np.float32))


def test_a_hamiltonian_of_another_shape_is_one_input_error():
  """An unpadded H (7 × 7 for water/STO-3G, whose problem pads to 8) used to fail deep in a
  dot_general, jitted or not."""
  problem = qpt.build_problem(qpt.molecules.get("water"), basis="sto-3g", grid_level=0)
  for loss in (qpt.dft.loss_energy_delta, jax.jit(qpt.dft.loss_energy_delta)):
    with pytest.raises(qpt.InputError, match=r"H has shape \(7, 7\); this problem's is \(8, 8\)"):
      loss(problem, np.zeros((7, 7), np.float32))


def test_a_hamiltonian_with_nans_is_one_input_error_and_traced_ones_are_not_checked():
  """A NaN in a given H came back as a NaN energy. Traced (jit, grad) it cannot be looked at: a
  training step's non-finite loss is caught by the step instead."""
  problem = qpt.build_problem(qpt.molecules.get("water"), basis="sto-3g", grid_level=0)
  bad = np.asarray(problem.overlap).copy()
  bad[0, 1] = np.nan
  for loss in (qpt.dft.loss_energy_delta, qpt.dft.loss_energy):
    with pytest.raises(qpt.InputError, match="H has non-finite entries"):
      loss(problem, bad)
  assert np.isnan(jax.jit(qpt.dft.loss_energy_delta)(problem, bad))


def test_pyscf_mole_is_accepted():
  mole = qpt.molecules.get("water").to_pyscf("sto-3g")
  problem = qpt.build_problem(mole, xc="lda,vwn", dtype="float64")
  mf = ref.rks("water", "sto-3g", "lda,vwn")
  assert abs(qpt.dft.scf(problem).energy - mf.e_tot) < 1e-6


def test_self_consistency_descent_on_h_reaches_the_scf_energy():
  """Plain gradient descent on H itself (no model) with the self-consistency loss, whose target
  F'[D(H)] is held constant: each step is a damped Fock iteration, so it must reach PySCF's SCF
  energy (water/STO-3G, float32; measured −2.6 µHa after 100 steps). Differentiating through the
  target instead settled ~0.4 Ha away (issue 13)."""
  problem = ref.problem("water", "sto-3g", "b3lyp5", dtype="float32", grid_level=1)
  scf = ref.rks("water", "sto-3g", "b3lyp5", grid_level=1)
  residual_and_grad = jax.jit(jax.value_and_grad(qpt.dft.loss_self_consistency, argnums=1))
  h = jitted.initial_fock(problem)
  first, _ = residual_and_grad(problem, h)
  for _ in range(100):  # step 0.2 in H' (n_real/2 undoes the loss's normalisation)
    residual, grad = residual_and_grad(problem, h)
    h = h - 0.2 * 7 / 2 * grad
  energy = qpt.dft.reference_energy(problem) + float(jitted.loss_energy_delta(problem, h))
  assert energy - scf.e_tot == pytest.approx(0.0, abs=1e-5)
  assert float(residual) < 1e-5 * float(first)
  # At PySCF's converged Fock matrix the residual vanishes (to float32 and the grid's fit).
  converged = ref.padded(scf.get_fock(), problem.shapes[0])
  assert float(jitted.loss_self_consistency(problem, converged)) < 1e-8


def test_refine_from_h_init_converges_to_pyscf_and_zero_steps_is_the_loss():
  """dft.refine: 0 steps is E[D(H)] of the loss; 25 DIIS steps from H_init = F[D_MINAO] reach
  PySCF's SCF (float32: energy within 20 µHa, orbital energies within 0.1 mHa)."""
  problem = ref.problem("water", "def2-svp", "b3lyp5", dtype="float32")
  mf = ref.rks("water", "def2-svp", "b3lyp5")
  h = jitted.initial_fock(problem)
  zero = qpt.dft.refine(problem, h, 0)
  loss = qpt.dft.reference_energy(problem) + float(jitted.loss_energy_delta(problem, h))
  assert zero.iterations == 0 and zero.energy == pytest.approx(loss, abs=5e-6)
  refined = qpt.dft.refine(problem, h, 25)
  assert refined.iterations == 25 and refined.energy == pytest.approx(mf.e_tot, abs=2e-5)
  np.testing.assert_allclose(refined.mo_energy, mf.mo_energy, atol=1e-4)
  with pytest.raises(qpt.InputError, match="refine=-1"):
    qpt.dft.refine(problem, h, -1)


def test_refined_orbital_energies_are_the_diis_estimate():
  """A refinement stopped short of convergence reports the DIIS extrapolation of every Fock
  matrix it built: 4 steps from H_init (float32, water/def2-SVP) put the occupied orbital
  energies within 10 µHa of PySCF's converged ones (measured 1.2 µHa; F[D_4] alone is ~140 µHa
  off), while the energy stays E[D_4], variational: above PySCF's converged energy in float64
  (measured 0.04 µHa above), and the float32 refinement within float32's few µHa of it (measured
  +2.9 µHa; −1.6 with the grid's points summed in another order: its rounding is larger than the
  true excess, so its sign means nothing). 0 steps is F[D(H)]."""
  problem = ref.problem("water", "def2-svp", "b3lyp5", dtype="float32")
  mf = ref.rks("water", "def2-svp", "b3lyp5")
  occupied = mf.mo_occ > 0
  h = jitted.initial_fock(problem)
  n = int(np.sum(problem.ao_mask))
  fock_of_start = np.asarray(jitted.fock(problem, jitted.density_matrix(problem, h)))[:n, :n]
  np.testing.assert_allclose(qpt.dft.refine(problem, h, 0).fock[:n, :n], fock_of_start,
                             atol=1e-5)
  refined = qpt.dft.refine(problem, h, 4)
  assert np.max(np.abs(refined.mo_energy - mf.mo_energy)[occupied]) < 1e-5
  problem64 = ref.problem("water", "def2-svp", "b3lyp5", dtype="float64")
  refined64 = qpt.dft.refine(problem64, jitted.initial_fock(problem64), 4)
  assert 0 < refined64.energy - mf.e_tot < 2e-5
  assert abs(refined.energy - refined64.energy) < 5e-6
