"""Lab-frame predictions: they rotate with the molecule and restart PySCF at its own solution."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pyscf import lib
from scipy.spatial.transform import Rotation

import qpt
from qpt import evaluate, frame, inference, integrals, labels, model
from tests.pyscf_reference import padded
from tests.water_labels import BASIS, GRID_LEVEL, LEVEL, XC, problems, reference

NETWORK = model.make_model(model.model_config("tiny", d_model=32, n_layers=1, n_heads=2))


@pytest.fixture(autouse=True, scope="module")
def one_pyscf_thread():
  with lib.with_omp_threads(1):
    yield


@functools.cache
def params() -> hk.Params:
  """Random parameters of NETWORK's shapes, W's output scale 1: W is O(1 Ha), so rotations bite.

  Any parameters must be equivariant; drawing them on the host skips compiling `init` (~8 s).
  """
  p = problems()[0]
  shapes = jax.eval_shape(NETWORK.init, jax.random.key(0), p, jnp.zeros(p.overlap.shape, p.dtype))
  rng = np.random.default_rng(0)
  return hk.data_structures.map(
      lambda module, name, s: np.full(s.shape, -np.log(model.ModelConfig.output_scale), s.dtype)
      if name == "output_log_scale" else rng.normal(0.0, 0.3, s.shape).astype(s.dtype), shapes)


def test_predict_rotates_with_the_molecule():
  water = reference().molecule(0)
  q = Rotation.random(random_state=1).as_matrix()
  moved = water.with_positions(water.positions @ q.T + np.array([0.3, -1.0, 2.0]))
  a = inference.predict(params(), water, LEVEL, model=NETWORK)
  b = qpt.predict(params(), moved.to_pyscf(BASIS), xc=XC, grid_level=GRID_LEVEL)  # model from shapes
  r_ao = frame.rotation_matrix_ao(integrals.orbital_labels(water.to_pyscf(BASIS)), q)
  rotate = lambda m: r_ao @ m @ r_ao.T
  assert np.abs(a.hamiltonian - np.asarray(evaluate.h_init(problems()[0]))[:7, :7]).max() > 0.1
  np.testing.assert_allclose(b.hamiltonian, rotate(a.hamiltonian), atol=1e-4)
  np.testing.assert_allclose(b.density, rotate(a.density), atol=1e-4)
  np.testing.assert_allclose(b.fock, rotate(a.fock), atol=1e-4)
  np.testing.assert_allclose(b.mo_energy, a.mo_energy, atol=1e-4)
  assert b.energy == pytest.approx(a.energy, abs=1e-5)
  # Orbitals: the rotated ones, up to sign, S-orthonormal in the moved molecule's AO basis.
  s = moved.to_pyscf(BASIS).intor("int1e_ovlp")
  np.testing.assert_allclose(b.mo_coeff.T @ s @ b.mo_coeff, np.eye(7), atol=1e-6)
  np.testing.assert_allclose(np.abs(np.sum(b.mo_coeff * (s @ r_ao @ a.mo_coeff), axis=0)), 1.0,
                             atol=1e-4)


def test_predicted_density_restarts_pyscf_in_the_lab_frame():
  """A model that knows the answer: its lab-frame dm0 must be PySCF's solution for the moved
  molecule — the test fails if any AO rotation or ordering is wrong."""
  canonical = reference().molecule(0)
  d_star = padded(reference().density[0], problems()[0].overlap.shape[0])
  oracle = hk.without_apply_rng(hk.transform(
      lambda problem, h_init: qpt.dft.fock(problem, jnp.asarray(d_star, problem.dtype)) - h_init))
  q = Rotation.random(random_state=2).as_matrix()
  moved = canonical.with_positions(canonical.positions @ q.T + 1.0)
  prediction = inference.predict({}, moved, BASIS, XC, GRID_LEVEL, model=oracle)
  assert prediction.energy == pytest.approx(reference().energy[0], abs=50e-6)
  dm0 = inference.to_pyscf_dm0(prediction)
  mol = moved.to_pyscf(BASIS)
  assert dm0.shape == (mol.nao, mol.nao) and dm0.dtype == np.float64
  mf = labels.pyscf_rks(mol, LEVEL)
  assert mf.energy_tot(dm=dm0) == pytest.approx(reference().energy[0], abs=1e-4)  # its own grid
  mf.kernel(dm0=dm0)
  assert mf.converged and mf.cycles < reference().cycles[0]


def test_refined_prediction_approaches_pyscfs_scf_and_bad_refine_is_refused():
  """predict(..., refine=n): n DIIS SCF steps on the device from D(H) of a random model bring the
  energy and orbital energies towards PySCF's converged ones (in the lab frame: rotated input)."""
  water = reference().molecule(0)
  q = Rotation.random(random_state=3).as_matrix()
  moved = water.with_positions(water.positions @ q.T)
  raw = inference.predict(params(), moved, LEVEL, model=NETWORK)
  refined = inference.predict(params(), moved, LEVEL, model=NETWORK, refine=8)
  e_scf, eps_scf = reference().energy[0], reference().mo_energy[0]
  assert raw.refine_steps == 0 and refined.refine_steps == 8
  assert abs(raw.energy - e_scf) > 1e-3  # a random model: far from self-consistent
  assert refined.energy == pytest.approx(e_scf, abs=5e-5)
  np.testing.assert_allclose(refined.mo_energy, eps_scf, atol=2e-4)
  mf = labels.pyscf_rks(moved.to_pyscf(BASIS), LEVEL)
  assert mf.energy_tot(dm=refined.density) == pytest.approx(refined.energy, abs=5e-5)
  for bad in (-1, 1.5, True, "2"):
    with pytest.raises(qpt.InputError, match="refine="):
      inference.predict(params(), moved, LEVEL, model=NETWORK, refine=bad)
