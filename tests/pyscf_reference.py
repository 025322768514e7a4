"""PySCF reference calculations (float64), cached per process: what every DFT test compares against."""

import functools

import numpy as np
import pyscf.df
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
