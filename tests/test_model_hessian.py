"""Lindh's model Hessian against the RHF/STO-3G Hessians the built-in sampler uses, and the
identities any Hessian of an isolated molecule obeys."""

import os

import numpy as np

import qpt
from qpt import conformers
from qpt.model_hessian import model_hessian

ETHANOL_RHF = os.path.join(os.path.dirname(__file__), "data", "ethanol_rhf_sto3g_hessian.npy")


def rms_displacement(sampler, n=300):
  """Mean over atoms of the RMS thermal displacement (Bohr)."""
  d = np.stack([sampler.positions(i) - sampler.molecule.positions for i in range(n)])
  return float(np.sqrt((d ** 2).sum(-1).mean(0)).mean())


def test_translations_and_rotations_cost_nothing():
  ethanol = qpt.molecules.get("ethanol")
  hess = model_hessian(ethanol)
  np.testing.assert_allclose(hess, hess.T, atol=1e-12)
  rigid = conformers.rigid_body_basis(ethanol.positions, np.ones(ethanol.n_atoms))
  assert np.abs(hess @ rigid).max() < 1e-6 * np.abs(hess).max()
  assert np.linalg.eigvalsh(hess).min() > -1e-8  # a sum of k b bᵀ with k > 0


def test_water_frequencies_are_rhf_stretches_and_a_softer_bend():
  water = qpt.molecules.get("water")
  model = conformers.vibrations(water, model_hessian(water)).frequencies
  rhf = conformers.vibrations(water, conformers.hessian(water)).frequencies  # 0.3 s
  np.testing.assert_allclose(model, rhf, rtol=0.2)  # cm⁻¹: 2408/4335/4394 vs 2080/4352/4647


def test_thermal_amplitudes_are_within_half_again_of_rhf_normal_modes():
  """What the sampler uses the Hessian for: ethanol at 500 K moves 0.18 Å RMS in the model's modes
  against 0.13 Å in RHF/STO-3G's (docs/numerics.md)."""
  ethanol = qpt.molecules.get("ethanol")
  model = rms_displacement(conformers.ThermalSampler(ethanol, 500.0, hess=model_hessian(ethanol)))
  rhf = rms_displacement(conformers.ThermalSampler(ethanol, 500.0, hess=np.load(ETHANOL_RHF)))
  assert 1.0 < model / rhf < 1.5, (model, rhf)


def test_b_vectors_are_the_gradients_of_the_internal_coordinates():
  """The bend term alone, for water, against k (∂θ/∂x)(∂θ/∂x)ᵀ from the angle's analytic gradient."""
  from qpt import model_hessian as mh
  water = qpt.molecules.get("water")
  x = water.positions[[1, 0, 2]]  # H, O, H: the angle at O
  u, v = x[0] - x[1], x[2] - x[1]
  cos = u @ v / np.linalg.norm(u) / np.linalg.norm(v)
  sin = np.sqrt(1 - cos ** 2)
  du = (cos * u / np.linalg.norm(u) - v / np.linalg.norm(v)) / (np.linalg.norm(u) * sin)
  dv = (cos * v / np.linalg.norm(v) - u / np.linalg.norm(u)) / (np.linalg.norm(v) * sin)
  np.testing.assert_allclose(mh._b_vector(mh._angle, x), np.stack([du, -du - dv, dv]), atol=1e-8)
