"""Inference: a trained model's Hamiltonian for any molecule, in the molecule's own (lab) frame.

  molecule ──canonical frame──▶ build_problem ──model──▶ H ──▶ D(H), F[D(H)], E[D(H)] ──rotate back──▶ lab

`predict` is `qpt.predict`; `to_pyscf_dm0` turns a prediction into PySCF's starting density.
"""

from __future__ import annotations

import dataclasses
import functools

import haiku as hk
import jax
import numpy as np
import scipy.linalg
from pyscf import gto

from qpt import dft, frame
from qpt.build import build_problem, molecule_and_level
from qpt.level import Level
from qpt.model import check_supported, config_from_params, hamiltonian, make_model
from qpt.molecule import Molecule
from qpt.problem import DFTProblem, mo_occupations, reference_energy


@dataclasses.dataclass(frozen=True, eq=False)
class Prediction:
  """A model's prediction for one molecule in its own (lab) frame; n = real AOs, float64.

  Matrices use the AO order of `molecule.to_pyscf(basis)`.
    hamiltonian (n, n) Hartree: H = H_init + W.
    density (n, n) electrons: D(H), the occupied projector of H.
    fock (n, n) Hartree: F[D(H)].
    energy: E[D(H)], Hartree.
    mo_energy (n,) Hartree, mo_coeff (n, n), mo_occ (n,): orbitals of F[D(H)], which the energy
      loss constrains (H's own spectrum it does not); so make_rdm1(mo_coeff, mo_occ) is one SCF
      step beyond `density`.
    molecule: as given (lab frame); level: the level of theory predicted at.
    refine_steps: on-device SCF steps taken from D(H) (`predict(..., refine=n)`); when n > 0,
      hamiltonian and fock are the DIIS estimate of the self-consistent F from F[D_0] … F[D_n]
      (`dft.refine`; mo_* its orbitals), density D_n and energy E[D_n] after those steps.
  """

  hamiltonian: np.ndarray
  density: np.ndarray
  fock: np.ndarray
  energy: float
  mo_energy: np.ndarray
  mo_coeff: np.ndarray
  mo_occ: np.ndarray
  molecule: Molecule
  level: Level
  refine_steps: int = 0

  @property
  def basis(self) -> str:
    return self.level.basis


@functools.partial(jax.jit, static_argnums=0)
def _predict_device(model: hk.Transformed, params: hk.Params, problem: DFTProblem):
  h = hamiltonian(model, params, problem)
  d = dft.density_matrix(problem, h)
  return h, d, dft.fock(problem, d), dft.loss_energy_delta(problem, h)


def predict(params: hk.Params, molecule: Molecule | gto.Mole, basis: str | Level | None = None,
            xc: str | None = None, grid_level: int | None = None, eri: str | None = None,
            dtype: str | None = None, *, level: Level | None = None,
            model: hk.Transformed | None = None, refine: int = 0) -> Prediction:
  """The model's H, D(H), F[D(H)] and E[D(H)] for a molecule in any orientation, optionally
  refined by `refine` SCF steps on the device (`dft.refine`).

  The molecule is moved to its canonical frame, predicted there, and every AO matrix is rotated
  back, M_lab = R_ao M_can R_aoᵀ (`frame.ao_matrix_to_lab`); AO matrices are translation invariant.

  Args:
    params: the QPT's parameters (e.g. `qpt.load_params(workdir)`).
    molecule: a `Molecule` or a `pyscf.gto.Mole` (whose basis is used if none is given).
    basis, xc, grid_level, eri, dtype, level: the level of theory, as in `build_problem`; use the
      level the model was trained at.
    model: the Haiku transform; default: the QPT whose shapes `params` have.
    refine: DIIS SCF steps from D(H) on the device (float32, the loss's energy code); 0 = none.
  """
  refine = dft.check_refine(refine)  # before the build: bad input fails at once
  if model is None:
    model = make_model(config_from_params(params))
  molecule, level = molecule_and_level(molecule, basis, xc, grid_level, eri, dtype, level)
  canonical, rotation, _ = frame.to_canonical(molecule)
  problem = build_problem(canonical, level)
  check_supported(problem)
  h, d, f, delta = jax.device_get(_predict_device(model, params, problem))
  energy = reference_energy(problem) + float(delta)
  if refine:
    refined = dft.refine(problem, h, refine)
    h, d, f, energy = refined.fock, refined.density, refined.fock, refined.energy
  n = int(np.sum(problem.ao_mask))
  real = lambda m: np.asarray(m, np.float64)[:n, :n]
  r_ao = frame.rotation_matrix_ao(np.asarray(problem.orbital_labels)[:n], rotation)
  to_lab = lambda m: r_ao @ real(m) @ r_ao.T
  eps, c = scipy.linalg.eigh(real(f), real(problem.overlap))
  return Prediction(hamiltonian=to_lab(h), density=to_lab(d), fock=to_lab(f),
                    energy=energy, mo_energy=eps, mo_coeff=r_ao @ c,
                    mo_occ=mo_occupations(problem), molecule=molecule, level=level,
                    refine_steps=refine)


def to_pyscf_dm0(prediction: Prediction) -> np.ndarray:
  """The predicted density as PySCF's starting guess: (nao, nao) float64, symmetric, in PySCF's AO
  order for the original molecule — `mf.kernel(dm0=to_pyscf_dm0(p))`."""
  d = np.asarray(prediction.density, np.float64)
  return 0.5 * (d + d.T)
