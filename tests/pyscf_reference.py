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


def occupied_projector(h: np.ndarray, s: np.ndarray, n_occ: int) -> np.ndarray:
  """D = 2 C_occ C_occᵀ for H C = S C ε (float64, scipy)."""
  c = scipy.linalg.eigh(h, s)[1][:, :n_occ]
  return 2.0 * c @ c.T


def unrolled_density(mf, h: np.ndarray, mixing=()) -> np.ndarray:
  """D_k written out on the host: D_0 = D(H), then one PySCF Fock build and diagonalisation per
  weight in `mixing`, mixed with the previous density (the last step never mixes)."""
  s, n_occ = mf.get_ovlp(), mf.mol.nelectron // 2
  d = occupied_projector(h, s, n_occ)
  for step, m in enumerate(mixing):
    new = occupied_projector(mf.get_fock(dm=d), s, n_occ)
    d = new if step == len(mixing) - 1 else (1 - m) * new + m * d
  return d


def energy_of_hamiltonian(molecule: qpt.Molecule, basis: str, xc: str, grid_level: int,
                          h: np.ndarray) -> float:
  """E[D(H)] in float64 by PySCF, D(H) the occupied projector of a real-block H (Hartree)."""
  mf = converged_rks(molecule, basis, xc, grid_level)
  return float(mf.energy_tot(dm=unrolled_density(mf, h)))


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
  mf = converged_rks(molecule, basis, xc, grid_level)
  h_init = mf.get_fock(dm=mf.get_init_guess(key="minao"))
  return float(mf.energy_tot(dm=unrolled_density(mf, h_init, (0.0,) * steps)))
