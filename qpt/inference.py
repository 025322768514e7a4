"""Inference: a trained model's Hamiltonian for any molecule, in the molecule's own (lab) frame.

  molecule ──canonical frame──▶ build_problem ──model──▶ H ──▶ D(H), F[D(H)], E[D(H)] ──rotate back──▶ lab

`load_model` reads a training run's parameters with the level of theory it learnt; `predict` is
`qpt.predict`; `to_pyscf_dm0` turns a prediction into PySCF's starting density.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import haiku as hk
import jax
import numpy as np
import scipy.linalg
from pyscf import gto
from pyscf.data.elements import ELEMENTS

from qpt import checkpoint, dft, frame, run_config
from qpt.build import build_problem, molecule_and_level
from qpt.errors import InputError
from qpt.level import LEARNT_FOR, Level
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


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedModel:
  """A training run's parameters and the level of theory its model learnt (`load_model`).

    params: the QPT's Haiku parameters (float32 numpy arrays).
    level: the level the run was evaluated at (its config's basis, xc, grid_level, eri, dtype);
      None for a checkpoint without its run's config.json (then `predict` needs a level).
    source: the workdir or checkpoint directory they were read from.
    trained_on: the elements and charges of the molecules its model trained on (its run's and a
      pre-trained run's, `run_config.TrainedOn`); None where its config.json does not say.
  """

  params: hk.Params
  level: Level | None
  source: str
  trained_on: run_config.TrainedOn | None = None


def load_model(path: str) -> TrainedModel:
  """A trained model from a workdir (its latest checkpoint) or one checkpoint directory
  (.../checkpoints/<step>), with the level of theory its run recorded: `predict` uses that level
  and refuses another basis or functional, or a molecule with an element or a charge it never
  trained on, at which the model is out of its domain."""
  params = checkpoint.load_params(path)
  run = os.path.dirname(checkpoint.locate(path)[0])
  try:
    level = Level.from_config(run_config.saved(run))
  except (InputError, KeyError):  # a checkpoint copied without its run's config.json
    level = None
  return TrainedModel(params, level, path, run_config.trained_on(run))


@functools.partial(jax.jit, static_argnums=0)
def _predict_device(model: hk.Transformed, params: hk.Params, problem: DFTProblem):
  h = hamiltonian(model, params, problem)
  d = dft.density_matrix(problem, h)
  return h, d, dft.fock(problem, d), dft.loss_energy_delta(problem, h)


def predict(params: TrainedModel | hk.Params, molecule: Molecule | gto.Mole,
            basis: str | Level | None = None, xc: str | None = None,
            grid_level: int | None = None, eri: str | None = None,
            dtype: str | None = None, *, level: Level | None = None,
            model: hk.Transformed | None = None, refine: int = 0) -> Prediction:
  """The model's H, D(H), F[D(H)] and E[D(H)] for a molecule in any orientation, optionally
  refined by `refine` SCF steps on the device (`dft.refine`).

  The molecule is moved to its canonical frame, predicted there, and every AO matrix is rotated
  back, M_lab = R_ao M_can R_aoᵀ (`frame.ao_matrix_to_lab`); AO matrices are translation invariant.

  Args:
    params: a `TrainedModel` (`qpt.load_model(workdir)`), or bare parameters of the QPT.
    molecule: a `Molecule` or a `pyscf.gto.Mole`.
    basis, xc, grid_level, eri, dtype, level: the level of theory, as in `build_problem`. For a
      `TrainedModel`, unset fields are its run's and another basis or xc is a one-line InputError;
      grid_level, eri and dtype may differ. So is a molecule with an element or a total charge
      the model never trained on (`TrainedModel.trained_on`); to predict anyway, give its bare
      parameters. For bare parameters, a Mole's basis is used if none is given: give the level
      the model was trained at.
    model: the Haiku transform; default: the QPT whose shapes `params` have.
    refine: DIIS SCF steps from D(H) on the device (float32, the loss's energy code); 0 = none.
  """
  refine = dft.check_refine(refine)  # before the build: bad input fails at once
  trained = params if isinstance(params, TrainedModel) else None
  if trained:
    params = trained.params
    if (trained.level is None and level is None and not isinstance(basis, Level)
        and (basis is None or xc is None)):  # Level()'s defaults may not be what it learnt
      raise InputError(f"{trained.source} has no config.json to say what level its model was "
                       "trained for: give level= (or basis= and xc=)")
  if model is None:
    model = make_model(config_from_params(params))
  molecule, level = molecule_and_level(molecule, basis, xc, grid_level, eri, dtype, level,
                                       defaults=trained.level if trained and trained.level else Level())
  if trained and trained.level:
    _check_learnt(trained, level)
  if trained and trained.trained_on is not None:
    _check_trained_on(trained, molecule)
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


def _check_learnt(trained: TrainedModel, level: Level) -> None:
  """A one-line InputError if `level` has another basis or functional than the model learnt (a
  pyscf Mole's own basis included): there it is out of its domain."""
  differ = [k for k in LEARNT_FOR if getattr(level, k) != getattr(trained.level, k)]
  if differ:
    theirs = ", ".join(f"{k}={getattr(trained.level, k)!r}" for k in differ)
    ours = ", ".join(f"{k}={getattr(level, k)!r}" for k in differ)
    raise InputError(f"the model of {trained.source} was trained for {theirs}, not {ours}: "
                     f"predict at its level (fine-tune it for another with init_from)")


def _check_trained_on(trained: TrainedModel, molecule: Molecule) -> None:
  """A one-line InputError if `molecule` has an element or a total charge that the model never
  trained on (`run_config.TrainedOn`: water's model put ethanol 2.3 Ha above its SCF)."""
  seen = trained.trained_on
  unseen = sorted(set(molecule.atomic_numbers.tolist()) - set(seen.elements))
  if unseen:
    names = lambda zs: ", ".join(ELEMENTS[z] for z in zs)
    what = f"{names(unseen)} (its molecules had {names(seen.elements)})"
  elif molecule.charge not in seen.charges:
    what = (f"a molecule of charge {molecule.charge:+d} (its molecules had charge "
            f"{', '.join(f'{c:+d}' if c else '0' for c in seen.charges)})")
  else:
    return
  raise InputError(f"the model of {trained.source} never trained on {what}: fine-tune it with "
                   "init_from on such molecules, or give qpt.predict its .params to predict "
                   "anyway")


def to_pyscf_dm0(prediction: Prediction) -> np.ndarray:
  """The predicted density as PySCF's starting guess: (nao, nao) float64, symmetric, in PySCF's AO
  order for the original molecule — `mf.kernel(dm0=to_pyscf_dm0(p))`."""
  d = np.asarray(prediction.density, np.float64)
  return 0.5 * (d + d.T)
