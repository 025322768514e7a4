"""PySCF reference calculations (float64), cached per process: what every DFT test compares against."""

import functools

import numpy as np
import pyscf.df
import scipy.linalg
from pyscf import dft

import qpt


@functools.cache
def rks(molecule: str, basis: str, xc: str, eri: str = "dense", grid_level: int = 3,
        conv_tol: float = 1e-11) -> dft.rks.RKS:
  """A converged PySCF RKS for a built-in molecule; DF with QPT's auxiliary basis."""
  mol = qpt.molecules.get(molecule).to_pyscf(basis)
  mf = dft.RKS(mol, xc=xc)
  if eri == "df":
    mf = mf.density_fit(auxbasis=pyscf.df.make_auxbasis(mol))
  mf.grids.level = grid_level
  mf.conv_tol = conv_tol
  mf.verbose = 0
  mf.kernel()
  assert mf.converged
  return mf


@functools.cache
def problem(molecule: str, basis: str, xc: str, eri: str = "dense", dtype: str = "float64",
            grid_level: int = 3) -> qpt.dft.DFTProblem:
  return qpt.build_problem(qpt.molecules.get(molecule), basis=basis, xc=xc,
                               grid_level=grid_level, eri=eri, dtype=dtype)


def padded(matrix: np.ndarray, n: int) -> np.ndarray:
  """An (m, m) AO matrix zero-padded to (n, n)."""
  out = np.zeros((n, n))
  out[: matrix.shape[0], : matrix.shape[1]] = matrix
  return out


def homo_lumo(mf) -> tuple[float, float]:
  n_occ = mf.mol.nelectron // 2
  return float(mf.mo_energy[n_occ - 1]), float(mf.mo_energy[n_occ])


def converged_rks(molecule: qpt.Molecule, basis: str, xc: str, grid_level: int):
  """PySCF's converged RKS of any molecule (its grid pruned by the MINAO guess, as QPT's is)."""
  key = (tuple(molecule.atomic_numbers), molecule.positions.tobytes(), basis, xc, grid_level)
  if key not in _CONVERGED:
    mf = dft.RKS(molecule.to_pyscf(basis), xc=xc)
    mf.grids.level = grid_level
    mf.conv_tol = 1e-10
    mf.verbose = 0
    mf.kernel()
    assert mf.converged
    _CONVERGED[key] = mf
  return _CONVERGED[key]


_CONVERGED: dict = {}


def scf_energy(molecule: qpt.Molecule, basis: str, xc: str, grid_level: int) -> float:
  """PySCF's converged RKS energy (Hartree) of any molecule: a variational lower bound for every
  E[D] QPT reports at that level."""
  return float(converged_rks(molecule, basis, xc, grid_level).e_tot)


def energy_of_hamiltonian(molecule: qpt.Molecule, basis: str, xc: str, grid_level: int,
                          h: np.ndarray) -> float:
  """E[D(H)] in float64 by PySCF, D(H) the occupied projector of a real-block H (Hartree)."""
  mf = converged_rks(molecule, basis, xc, grid_level)
  c = scipy.linalg.eigh(h, mf.get_ovlp())[1][:, :molecule.n_electrons // 2]
  return float(mf.energy_tot(dm=2 * c @ c.T))


def step_conformers(config, workdir: str, step: int) -> list[qpt.Molecule]:
  """The conformers of training step `step` (1-based) of a run of `config` with mol_repeats 1, in
  the canonical frame the stream builds them in."""
  from qpt import experiment, frame
  train = experiment.sources(config, workdir).train
  b = config.train.batch_size
  return [frame.canonical_molecule(train(i)) for i in range((step - 1) * b, step * b)]


def unrolled_minao_energy(molecule: qpt.Molecule, basis: str, xc: str, grid_level: int,
                          steps: int) -> float:
  """E[D_k] of `steps` + 1 plain SCF steps from the MINAO density (k unrolled steps from
  H_init = F[D_MINAO], no mixing), float64 on the host: an untrained QPT's loss."""
  mf = dft.RKS(molecule.to_pyscf(basis), xc=xc)
  mf.grids.level = grid_level
  mf.verbose = 0
  s = mf.get_ovlp()
  d = mf.get_init_guess(key="minao")
  n_occ = molecule.n_electrons // 2
  for _ in range(steps + 1):
    c = scipy.linalg.eigh(mf.get_fock(dm=d), s)[1][:, :n_occ]
    d = 2 * c @ c.T
  return float(mf.energy_tot(dm=d))
