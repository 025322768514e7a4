"""Two displaced water conformers labelled by PySCF in their canonical frames, shared by the
label, evaluation and inference tests.

Water in STO-3G on grid level 1 with LDA keeps PySCF (which dominates the time) cheap; the two
conformers share one padded shape, so each jitted function compiles once.
"""

import functools

import numpy as np
import scipy.linalg

import qpt
from qpt import evaluate, frame, labels
from tests import pyscf_reference as ref
from tests.processes import load_tool

LEVEL = qpt.Level("sto-3g", "lda,vwn", 1)
BASIS, XC, GRID_LEVEL = LEVEL.basis, LEVEL.xc, LEVEL.grid_level


@functools.cache
def reference() -> labels.Labels:
  """Two displaced water conformers, labelled in their canonical frames."""
  water = qpt.molecules.get("water")
  positions = load_tool("label").gaussian_conformers(water, 2, seed=0)
  molecules = [frame.to_canonical(qpt.Molecule(water.symbols, p))[0] for p in positions]
  return labels.label(molecules, LEVEL)


@functools.cache
def problems() -> list[qpt.dft.DFTProblem]:
  return evaluate.problems_for(reference())


# ---- float64 host references, independent of QPT's code ------------------------------------------

N_OCC = 5  # water: 10 electrons


def host_rks(i: int):
  """PySCF's converged RKS for conformer i, configured by the tests (not by qpt.labels): its exact
  integrals on its own grid give F[D] and E[D] for any D."""
  return ref.converged_rks(reference().molecule(i), BASIS, XC, GRID_LEVEL)


def host_scores(i: int, h: np.ndarray, mixing=()) -> dict:
  """Conformer i's errors (Hartree, fractions) of a real-block H (7, 7), in float64 on the host:
  what `evaluate` must report, from PySCF's Fock matrix and energy of D(H) and of the unrolled
  D_k (`mixing` has one weight per step; the last step never mixes)."""
  mf, labelled = host_rks(i), reference()
  d, d_k = ref.unrolled_density(mf, h), ref.unrolled_density(mf, h, mixing)
  fock = mf.get_fock(dm=d)
  eps, c = scipy.linalg.eigh(fock, mf.get_ovlp())
  c_ref = labelled.mo_coeff[i][:, :N_OCC]
  cosine = np.abs(np.sum(c[:, :N_OCC] * c_ref, axis=0)) / (
      np.linalg.norm(c[:, :N_OCC], axis=0) * np.linalg.norm(c_ref, axis=0))
  eps_ref, f_ref, e_ref = labelled.mo_energy[i], labelled.fock[i], labelled.energy[i]
  return dict(h_mae=np.mean(np.abs(h - f_ref)), h_mae_fock=np.mean(np.abs(fock - f_ref)),
              h_mae_after_k=np.mean(np.abs(mf.get_fock(dm=d_k) - f_ref)),
              eps_occ_mae=np.mean(np.abs(eps[:N_OCC] - eps_ref[:N_OCC])),
              eps_all_mae=np.mean(np.abs(eps - eps_ref)),
              eps_occ_raw_mae=np.mean(np.abs(
                  scipy.linalg.eigvalsh(h, mf.get_ovlp())[:N_OCC] - eps_ref[:N_OCC])),
              energy_mae=abs(mf.energy_tot(dm=d) - e_ref),
              energy_after_k_mae=abs(mf.energy_tot(dm=d_k) - e_ref),
              gap_mae=abs((eps[N_OCC] - eps[N_OCC - 1]) - (eps_ref[N_OCC] - eps_ref[N_OCC - 1])),
              psi_cos=np.mean(cosine), energy=mf.energy_tot(dm=d_k))
