"""The canonical frame: how QPT gets rotation and translation equivariance.

The transformer in `model.py` reads raw Cartesian coordinates and orientation-dependent AO labels
(p_x, p_y, p_z ...), so by itself it is neither rotation- nor translation-equivariant. Instead every
molecule is first moved into a frame defined by the molecule itself:

  lab molecule ──canonical_frame──▶ (rotation, center) ──▶ canonical molecule ──model──▶ H_can
  H_lab = R_ao H_can R_aoᵀ,  R_ao = rotation_matrix_ao(orbital_labels, rotation)

Because the canonical geometry of a rigidly moved molecule is the same (to rounding), so is H_can,
and H_lab transforms exactly like the Hamiltonian of the moved molecule. Conventions (positions are
rows, Bohr):

  canonical = (lab − center) @ rotation,      lab = canonical @ rotationᵀ + center.

The columns of `rotation` are the canonical axes written in lab coordinates.

Ties. Where the moments do not decide, atoms do, in atom order:
  * equal second moments (perfect benzene, methane, SF6) leave any axis of their plane or space a
    principal axis, and the eigensolver's choice among them follows the lab orientation, so a
    rotated copy would get another frame and another prediction (docs/results.md §13). There
    the axis points at the atom reaching furthest into that plane or space (`_toward_an_atom`);
    only a linear molecule's axes 1 and 2 stay the eigensolver's, a symmetry of the molecule;
  * an axis whose third moment vanishes (a mirror plane or C2 axis perpendicular to it) takes its
    sign from the atom furthest along it;
  * in both, atoms tied within `_ZERO` go by atom order, and near a tie the frame — and so the
    prediction — jumps when the geometry crosses it.
Where the ambiguity is a true symmetry of the molecule, the candidate canonical geometries are the
same atoms relabelled, so the canonical-frame predictions agree up to that relabelling; mapped back
to the lab they agree only as far as the model has learned the symmetry.
"""

from __future__ import annotations

import numpy as np
from pyscf.symm import Dmatrix

from qpt.molecule import Molecule

# Relative size below which a moment or projection counts as zero. Far above float64 rounding of a
# rotated copy (~1e-15) so noise never flips a decision, far below real asymmetry of a geometry
# (MMFF water's two O–H bonds differ by 1e-5 Å: relative third moment ~1e-5).
_ZERO = 1e-9


def canonical_frame(atomic_numbers, positions) -> tuple[np.ndarray, np.ndarray]:
  """The molecule's own frame, from its nuclear-charge distribution.

  Args:
    atomic_numbers: (a,) int; zeros (padding atoms) carry no weight.
    positions: (a, 3) Bohr.

  Returns:
    rotation: (3, 3) proper rotation (det +1); column k is canonical axis k in lab coordinates.
      Axes are the eigenvectors of the charge-weighted second moment Σ_i Z_i p_i p_iᵀ (p relative
      to `center`), largest eigenvalue first, so axis 0 is the molecule's long axis and, for a
      planar molecule, axis 2 its normal. Among tied eigenvalues (relative difference ≤ `_ZERO`)
      an axis points at an atom (module docstring).
    center: (3,) Bohr, the nuclear-charge-weighted centroid.
  """
  z = np.asarray(atomic_numbers, dtype=np.float64)
  r = np.asarray(positions, dtype=np.float64)
  center = z @ r / z.sum()
  p = r - center
  second = np.einsum("i,ij,ik->jk", z, p, p)
  values, vectors = np.linalg.eigh(second)  # ascending eigenvalues
  values, principal = values[::-1], vectors[:, ::-1]
  axes = principal.copy()
  tie = _ZERO * max(values[0], np.finfo(np.float64).tiny)
  for k in (0, 1):
    shared = np.abs(values - values[k]) <= tie  # principal axes with axis k's second moment
    if shared.sum() > 1:
      # Any unit vector of their span, less the axes already fixed, is as good a principal axis.
      span = principal[:, shared] @ principal[:, shared].T - axes[:, :k] @ axes[:, :k].T
      toward = _toward_an_atom(z, p, span) if np.trace(span) > 1.5 else None
      if toward is not None:
        axes[:, k] = toward
        continue
      if shared[:k].any():  # axis 0 was chosen in this span: the one direction left
        axes[:, k] = np.linalg.eigh(span)[1][:, -1]
      # else no atom leaves the origin in the span (a linear molecule, one atom): the
      # eigensolver's axis is as good as any, a symmetry of the molecule
    axes[:, k] *= _axis_sign(z, p @ axes[:, k])
  # Axis 2 completes a right-handed frame. For a planar molecule it is the normal, on which every
  # moment vanishes; a mirror image needs an improper rotation, which we never use.
  axes[:, 2] = np.cross(axes[:, 0], axes[:, 1])
  return axes, center


def _toward_an_atom(z: np.ndarray, p: np.ndarray, span: np.ndarray) -> np.ndarray | None:
  """The unit vector of the plane or space `span` (a (3, 3) projector) pointing at the atom that
  reaches furthest into it, the first in atom order among atoms tied within `_ZERO`; None if no
  atom leaves the origin there (a linear molecule's normal plane, one atom: any axis will do)."""
  projected = p @ span  # (a, 3), rows: each atom's component within the span
  reach = np.linalg.norm(projected, axis=1) * (z > 0)
  if reach.max() <= _ZERO * max(np.abs(p).max(), np.finfo(np.float64).tiny):
    return None
  first = np.flatnonzero(reach >= reach.max() * (1.0 - _ZERO))[0]
  return projected[first] / reach[first]


def _axis_sign(z: np.ndarray, projection: np.ndarray) -> float:
  """+1 or −1: the sign making the charge-weighted third moment along an axis positive.

  If the third moment vanishes (the molecule is symmetric under reflecting this axis), the atom
  furthest along the axis points it; among atoms tied within tolerance, the first in atom order.
  """
  third = np.sum(z * projection**3)
  if abs(third) > _ZERO * np.sum(z * np.abs(projection) ** 3):
    return float(np.sign(third))
  reach = np.abs(projection) * (z > 0)
  furthest = np.flatnonzero(reach >= reach.max() * (1.0 - _ZERO))[0]
  return -1.0 if projection[furthest] < 0 else 1.0


def to_canonical(molecule: Molecule) -> tuple[Molecule, np.ndarray, np.ndarray]:
  """The molecule in its canonical frame, and the frame.

  Returns:
    canonical: the same atoms at (positions − center) @ rotation, Bohr.
    rotation: (3, 3), see `canonical_frame`.
    center: (3,) Bohr.
  """
  rotation, center = canonical_frame(molecule.atomic_numbers, molecule.positions)
  return molecule.with_positions((molecule.positions - center) @ rotation), rotation, center


def rotation_matrix_ao(orbital_labels, rotation) -> np.ndarray:
  """The AO-basis representation R_ao (n, n) of a rotation, block-diagonal over shells.

  If a molecule is rotated so that each position r becomes rotation @ r (rows: positions @
  rotationᵀ), every AO matrix of the rotated molecule (S, Hcore, H and, R_ao being orthogonal, the
  density matrix D too) is R_ao M R_aoᵀ. In particular, with the frame from
  `canonical_frame`, M_lab = R_ao M_can R_aoᵀ. R_ao is orthogonal; its p blocks equal `rotation`
  (PySCF orders p as x, y, z) and its other blocks are PySCF's real Wigner D matrices.

  Args:
    orbital_labels: (n, 4) int per AO: atom, shell, l, m (padding rows −1), as in `DFTProblem`.
    rotation: (3, 3) proper rotation.

  Returns:
    (n, n) float64; identity on padded AOs.
  """
  labels = np.asarray(orbital_labels)
  rotation = np.asarray(rotation, dtype=np.float64)
  if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-8) or np.linalg.det(rotation) < 0:
    raise ValueError("rotation must be a proper rotation matrix (orthogonal, det +1)")
  # PySCF's Euler angles for axes Qᵀ give Dmatrix(1) = Q with reorder_p (checked in the tests).
  alpha, beta, gamma = Dmatrix.get_euler_angles(np.eye(3), rotation.T)
  blocks = {}
  n = len(labels)
  r_ao = np.eye(n)
  starts = np.flatnonzero((labels[:, 2] >= 0) & (labels[:, 3] == 0))
  for i in starts:
    l = int(labels[i, 2])
    if l not in blocks:
      blocks[l] = Dmatrix.Dmatrix(l, alpha, beta, gamma, reorder_p=True)
    r_ao[i:i + 2 * l + 1, i:i + 2 * l + 1] = blocks[l]
  return r_ao


def ao_matrix_to_lab(matrix, orbital_labels, rotation) -> np.ndarray:
  """R_ao M R_aoᵀ: an AO matrix (n, n) of the canonical molecule, in the lab frame."""
  r_ao = rotation_matrix_ao(orbital_labels, rotation)
  return r_ao @ np.asarray(matrix, dtype=np.float64) @ r_ao.T


def canonical_molecule(molecule: Molecule) -> Molecule:
  """The molecule in its canonical frame: a picklable conformer transform for the data stream."""
  return to_canonical(molecule)[0]
