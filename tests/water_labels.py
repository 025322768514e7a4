"""Two displaced water conformers labelled by PySCF in their canonical frames, shared by the
label, evaluation and inference tests.

Water in STO-3G on grid level 1 with LDA keeps PySCF (which dominates the time) cheap; the two
conformers share one padded shape, so each jitted function compiles once.
"""

import functools
import importlib.util
import os

import numpy as np
import scipy.linalg
from pyscf import dft

import qpt
from qpt import evaluate, frame, labels

LEVEL = qpt.Level("sto-3g", "lda,vwn", 1)
BASIS, XC, GRID_LEVEL = LEVEL.basis, LEVEL.xc, LEVEL.grid_level


def load_tool():
  """tools/label.py as a module (tools/ is not a package)."""
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", "label.py")
  spec = importlib.util.spec_from_file_location("label_tool", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@functools.cache
def reference() -> labels.Labels:
  """Two displaced water conformers, labelled in their canonical frames."""
  water = qpt.molecules.get("water")
  positions = load_tool().gaussian_conformers(water, 2, seed=0)
  molecules = [frame.to_canonical(qpt.Molecule(water.symbols, p))[0] for p in positions]
  return labels.label(molecules, LEVEL)


@functools.cache
def problems() -> list[qpt.dft.DFTProblem]:
  return evaluate.problems_for(reference())


# ---- float64 host references, independent of QPT's code ------------------------------------------

N_OCC = 5  # water: 10 electrons


@functools.cache
def host_rks(i: int):
  """PySCF's converged RKS for conformer i, configured here (not by qpt.labels): its grid, pruned by
  the MINAO guess as `kernel` does, and its exact integrals give F[D] and E[D] for any D."""
  mol = reference().molecule(i).to_pyscf(BASIS)
  mf = dft.RKS(mol, xc=XC)
  mf.grids.level = GRID_LEVEL
  mf.conv_tol = 1e-10
  mf.verbose = 0
  mf.kernel()
  assert mf.converged
  return mf


def occupied_projector(h: np.ndarray, s: np.ndarray) -> np.ndarray:
  """D = 2 C_occ C_occᵀ for H C = S C ε (float64, scipy)."""
  c = scipy.linalg.eigh(h, s)[1][:, :N_OCC]
  return 2.0 * c @ c.T


def host_scores(i: int, h: np.ndarray, mixing=()) -> dict:
  """Conformer i's errors (Hartree, fractions) of a real-block H (7, 7), in float64 on the host:
  what `evaluate` must report, from PySCF's Fock matrix and energy of D(H) and of the unrolled
  D_k (`mixing` has one weight per step; the last step never mixes)."""
  mf, ref = host_rks(i), reference()
  s = mf.get_ovlp()
  d = occupied_projector(h, s)
  fock = mf.get_fock(dm=d)
  eps, c = scipy.linalg.eigh(fock, s)
  c_ref = ref.mo_coeff[i][:, :N_OCC]
  cosine = np.abs(np.sum(c[:, :N_OCC] * c_ref, axis=0)) / (
      np.linalg.norm(c[:, :N_OCC], axis=0) * np.linalg.norm(c_ref, axis=0))
  d_k = d
  for step, m in enumerate(mixing):
    new = occupied_projector(mf.get_fock(dm=d_k), s)
    d_k = new if step == len(mixing) - 1 else (1 - m) * new + m * d_k
  eps_ref = ref.mo_energy[i]
  return dict(h_mae=np.mean(np.abs(h - ref.fock[i])), h_mae_fock=np.mean(np.abs(fock - ref.fock[i])),
              h_mae_after_k=np.mean(np.abs(mf.get_fock(dm=d_k) - ref.fock[i])),
              eps_occ_mae=np.mean(np.abs(eps[:N_OCC] - eps_ref[:N_OCC])),
              energy_mae=abs(mf.energy_tot(dm=d) - ref.energy[i]),
              energy_after_k_mae=abs(mf.energy_tot(dm=d_k) - ref.energy[i]),
              gap_mae=abs((eps[N_OCC] - eps[N_OCC - 1]) - (eps_ref[N_OCC] - eps_ref[N_OCC - 1])),
              psi_cos=np.mean(cosine), energy=mf.energy_tot(dm=d_k))
