"""Lindh's model Hessian: normal modes for any molecule in milliseconds, no electronic structure.

Lindh, Bernhardsson, Karlström and Malmqvist, Chem. Phys. Lett. 241, 423 (1995): a force field
over the covalent bond graph — stretches, bends and torsions — whose force constants decay with
distance,

  k_stretch(ij) = 0.45 ρ_ij,  k_bend(ijk) = 0.15 ρ_ij ρ_jk,  k_torsion(ijkl) = 0.005 ρ_ij ρ_jk ρ_kl,
  ρ_ij = exp(α_ij (r_ref,ij² − r_ij²))   (Bohr, Hartree; α, r_ref by the rows of i and j),

  H = Σ_q k_q b_q b_qᵀ,  b_q = ∂q/∂x  (Wilson's B vectors: each internal coordinate's gradient).

It is used where an RHF Hessian per molecule is too dear: a stream over thousands of molecules
(`molecule_sets.MoleculeSetSampler`). Thermal samples from it, against RHF/STO-3G normal modes
(`conformers.ThermalSampler`'s default; 400 conformers at 500 K, mean RMS atomic displacement):
water 0.027 vs 0.029 Å, ethanol 0.18 vs 0.13 Å, malondialdehyde 0.27 vs 0.17 Å — softer bends and
torsions than STO-3G's (which overestimates them), the same stretches (docs/numerics.md).

Bonds are `conformers.bond_graph`'s. B vectors are central differences of the internal
coordinate (h = 1e-5 Bohr: float64 error ~1e-10, far below the model's own); bends within 10° of
linear and torsions about them are left out, where the coordinate is ill-defined.
"""

from __future__ import annotations

import itertools

import numpy as np

from qpt.conformers import bond_graph
from qpt.molecule import Molecule

K_STRETCH, K_BEND, K_TORSION = 0.45, 0.15, 0.005  # Hartree/Bohr², Hartree/rad² (× ρ products)
# α (Bohr⁻²) and r_ref (Bohr) for periodic-table rows (1: H, He; 2: Li–Ne; 3: beyond), as in Lindh.
ALPHA = {(1, 1): 1.0000, (1, 2): 0.3949, (2, 2): 0.2800, (1, 3): 0.3949, (2, 3): 0.2800,
         (3, 3): 0.2800}
R_REF = {(1, 1): 1.35, (1, 2): 2.10, (2, 2): 2.53, (1, 3): 2.87, (2, 3): 3.40, (3, 3): 3.40}
MIN_SIN = np.sin(np.radians(10.0))  # bends closer to linear than this carry no bend or torsion
STEP = 1e-5  # Bohr, for the B vectors


def _row(z: int) -> int:
  return 1 if z <= 2 else 2 if z <= 10 else 3


def _distance(x: np.ndarray) -> float:
  return float(np.linalg.norm(x[0] - x[1]))


def _angle(x: np.ndarray) -> float:
  """Angle at x[1] (radians); atan2 stays accurate near 0 and π, unlike acos."""
  u, v = x[0] - x[1], x[2] - x[1]
  return float(np.arctan2(np.linalg.norm(np.cross(u, v)), u @ v))


def _dihedral(x: np.ndarray) -> float:
  """Torsion about x[1]–x[2] (radians, −π..π)."""
  b0, b1, b2 = x[0] - x[1], x[2] - x[1], x[3] - x[2]
  n1, n2 = np.cross(b0, b1), np.cross(b2, b1)
  return float(np.arctan2(np.cross(n1, b1 / np.linalg.norm(b1)) @ n2, n1 @ n2))


def _b_vector(coordinate, x: np.ndarray) -> np.ndarray:
  """∂q/∂x (k, 3) by central differences; a torsion's difference is taken modulo 2π."""
  grad = np.zeros_like(x)
  for index in np.ndindex(x.shape):
    plus, minus = x.copy(), x.copy()
    plus[index] += STEP
    minus[index] -= STEP
    delta = coordinate(plus) - coordinate(minus)
    grad[index] = ((delta + np.pi) % (2 * np.pi) - np.pi) / (2 * STEP)
  return grad


def model_hessian(molecule: Molecule) -> np.ndarray:
  """(3N, 3N) Hartree/Bohr², rows and columns ordered (atom, xyz) like `conformers.hessian`."""
  z, x = molecule.atomic_numbers, molecule.positions
  n = len(z)
  d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
  rows = [_row(int(k)) for k in z]
  pair = lambda i, j: tuple(sorted((rows[i], rows[j])))
  rho = np.array([[np.exp(ALPHA[pair(i, j)] * (R_REF[pair(i, j)] ** 2 - d[i, j] ** 2))
                   for j in range(n)] for i in range(n)])
  bonded = bond_graph(molecule)
  straight = lambda i, j, k: np.sin(_angle(x[[i, j, k]])) < MIN_SIN

  hess = np.zeros((3 * n, 3 * n))

  def add(atoms, k, coordinate):
    b = np.zeros((n, 3))
    b[list(atoms)] = _b_vector(coordinate, x[list(atoms)])
    b = b.ravel()
    hess[:] += k * np.outer(b, b)

  for i, j in itertools.combinations(range(n), 2):
    if bonded[i, j]:
      add((i, j), K_STRETCH * rho[i, j], _distance)
  for j in range(n):
    for i, k in itertools.combinations(np.flatnonzero(bonded[j]), 2):
      if not straight(i, j, k):
        add((i, j, k), K_BEND * rho[i, j] * rho[j, k], _angle)
  for j, k in zip(*np.nonzero(np.triu(bonded))):
    for i in np.flatnonzero(bonded[j]):
      for l in np.flatnonzero(bonded[k]):
        if len({i, j, k, l}) == 4 and not (straight(i, j, k) or straight(j, k, l)):
          add((i, j, k, l), K_TORSION * rho[i, j] * rho[j, k] * rho[k, l], _dihedral)
  return hess
