"""PySCF references: the RKS at a level of theory, and converged labels of conformers (cached).

  conformers ──PySCF RKS (float64, minao start, `pyscf_rks`)──▶ Labels (.npz, cached)

`pyscf_rks` is the one place a PySCF Kohn–Sham object is configured for a `Level`. Everything that
compares with PySCF uses it — the labels, the evaluation's SCF cycles, the validation tool, the
benchmarks — and so does the host builder for its grid (`integrals.quadrature`): the reference
and the device energy integrate on the very same points with the same auxiliary basis.

PySCF orders a grid's points box by box (`gen_grid.arg_group_grids`) through a row-wise
`numpy.unique`, a comparison sort of 3-integer records: a large part of a small problem's build
(docs/results.md §13). `group_grids` computes the same permutation, bit for bit, with a stable
sort of one integer key per point, and this module installs it in PySCF's place
(every grid PySCF builds in this process then comes out identical, only sooner;
tests/test_labels.py compares the two on several molecules and levels).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import time
import zipfile
from typing import Sequence

import numpy as np
import pyscf.df
from pyscf import dft, gto, scf
from pyscf.dft import gen_grid

from qpt.errors import InputError, check_writable
from qpt.files import written_whole
from qpt.level import Level
from qpt.molecule import Molecule

CONV_TOL = 1e-9  # Hartree; PySCF's energy convergence for labels and cycle counts (gradient: √tol)
_LABEL_FORMAT = 1  # bump when the .npz layout changes: old files are then relabelled
_LEVEL_FIELDS = ("basis", "xc", "grid_level", "eri")  # how a label file stores its level


def group_grids(mol: gto.Mole, coords: np.ndarray,
                box_size: float = gen_grid.GROUP_BOX_SIZE) -> np.ndarray:
  """The permutation that groups grid points (g, 3) Bohr into boxes of ~box_size Bohr: PySCF's
  `arg_group_grids`, computed faster.

  PySCF numbers each point's box (bx, by, bz), each clipped to [−1, boxes], ranks the distinct boxes
  in lexicographic order (`numpy.unique(axis=0)`) and sorts the points by rank, stably. Shifted by
  one, the box numbers are digits of one integer key in a mixed radix (boxes + 2 per axis): keys
  order as the boxes do, so a stable sort of the keys is the same permutation.
  """
  atoms = mol.atom_coords()
  lower = atoms.min(axis=0) - gen_grid.GROUP_BOUNDARY_PENALTY
  upper = atoms.max(axis=0) + gen_grid.GROUP_BOUNDARY_PENALTY
  boxes = ((upper - lower) * (1.0 / box_size)).round().astype(int)
  box = np.floor((coords - lower) * (1.0 / ((upper - lower) / boxes))).astype(int)
  digits = np.clip(box, -1, boxes) + 1  # PySCF clips the same way: below −1, and above boxes
  radix = boxes + 2
  key = (digits[:, 0] * radix[1] + digits[:, 1]) * radix[2] + digits[:, 2]
  return np.argsort(key, kind="stable")


_pyscf_group_grids = gen_grid.arg_group_grids  # kept for the test that compares the two
gen_grid.arg_group_grids = group_grids


def auxiliary_basis(mol: gto.Mole):
  """The density-fitting basis of eri="df": PySCF's JK-fit basis for `mol`'s orbital basis."""
  return pyscf.df.make_auxbasis(mol)


def pyscf_rks(mol: gto.Mole, level: Level, conv_tol: float = CONV_TOL,
              density_ref: np.ndarray | None = None):
  """PySCF's RKS for `mol` at `level`, not yet run, with its grid built from the MINAO density.

  PySCF prunes grid points by the density it first sees; building the grid here from MINAO
  (`density_ref`, computed if not given) gives every run the grid the device integrates on,
  whatever dm0 the run starts from. eri="df" fits J and K with `auxiliary_basis` (PySCF's own
  default for pure functionals would fit J only).
  """
  mf = dft.RKS(mol, xc=level.xc)
  if level.eri == "df":
    mf = mf.density_fit(auxbasis=auxiliary_basis(mol))
  mf.grids.level = level.grid_level
  mf.conv_tol = conv_tol
  mf.verbose = 0
  if density_ref is None:
    density_ref = scf.hf.init_guess_by_minao(mol)
  mf.initialize_grids(mol, density_ref)
  return mf


def converge(mf, dm0: np.ndarray | None = None):
  """Runs `mf`'s SCF (from PySCF's minao guess unless `dm0`) and returns it: the one place PySCF
  iterates."""
  mf.kernel(dm0=dm0)
  return mf


@dataclasses.dataclass(frozen=True, eq=False)
class Labels:
  """PySCF reference results for c conformers of one molecule; n = n_ao (real AOs), float64.

  Level of theory: level (dtype float64: PySCF's), conv_tol (Hartree).
  Geometry, exactly as labelled (the canonical frame if the caller canonicalised):
    atomic_numbers (a,) int, charge (e), positions (c, a, 3) Bohr.
  Results, in PySCF's AO order for that geometry:
    fock (c, n, n) Hartree: F[D] of the converged density; density (c, n, n) electrons;
    mo_energy (c, n) Hartree, ascending; mo_coeff (c, n, n); mo_occ (c, n);
    energy (c,) Hartree; cycles (c,) SCF cycles from PySCF's minao guess; converged (c,) bool.
  """

  level: Level
  conv_tol: float
  atomic_numbers: np.ndarray
  charge: int
  positions: np.ndarray
  fock: np.ndarray
  density: np.ndarray
  mo_energy: np.ndarray
  mo_coeff: np.ndarray
  mo_occ: np.ndarray
  energy: np.ndarray
  cycles: np.ndarray
  converged: np.ndarray

  def __len__(self) -> int:
    return len(self.positions)

  def molecule(self, i: int) -> Molecule:
    """Conformer i as a `Molecule` (build evaluation problems from this, not from the lab input)."""
    return Molecule.from_bohr(self.atomic_numbers, self.positions[i], self.charge, "conformer")

  def molecules(self) -> list[Molecule]:
    return [self.molecule(i) for i in range(len(self))]


def label(molecules: Sequence[Molecule | gto.Mole], level: Level,
          conv_tol: float = CONV_TOL) -> Labels:
  """Converged PySCF references for conformers of one molecule (same atoms, same order).

  Args:
    molecules: the conformers, in the frame the labels should be in (canonicalise first with
      `frame.to_canonical` to evaluate a model).
    level: QPT's level of theory (PySCF computes in float64 whatever its dtype).
    conv_tol: PySCF's energy tolerance, Hartree.
  """
  molecules = _molecules(molecules)
  if not molecules:
    raise InputError("no conformers to label")
  check_conv_tol(conv_tol)
  first = molecules[0]
  for k, m in enumerate(molecules):
    if not np.array_equal(m.atomic_numbers, first.atomic_numbers) or m.charge != first.charge:
      raise InputError(f"conformer {k} has other atoms or charge than conformer 0")
  level = level.with_dtype("float64")
  results = []
  for m in molecules:
    mf = converge(pyscf_rks(m.to_pyscf(level.basis), level, conv_tol))
    density = mf.make_rdm1()
    results.append((mf.get_fock(dm=density), density, mf.mo_energy, mf.mo_coeff, mf.mo_occ,
                    mf.e_tot, mf.cycles, mf.converged))
  columns = [np.array(c) for c in zip(*results)]
  return Labels(level, float(conv_tol), np.array(first.atomic_numbers), first.charge,
                np.stack([m.positions for m in molecules]), *columns)


def restart_cycles(labels: Labels, i: int, dm0: np.ndarray) -> tuple[int, bool]:
  """(cycles, converged) of PySCF for conformer i at the labels' level of theory, from `dm0`."""
  mol = labels.molecule(i).to_pyscf(labels.level.basis)
  mf = converge(pyscf_rks(mol, labels.level, labels.conv_tol), np.asarray(dm0, np.float64))
  return int(mf.cycles), bool(mf.converged)


def scf_seconds(labels: Labels, i: int) -> float:
  """Wall time (s) of PySCF's full SCF of conformer i from its MINAO guess, setup (integrals,
  grid) included: what one label costs."""
  start = time.perf_counter()
  converge(pyscf_rks(labels.molecule(i).to_pyscf(labels.level.basis), labels.level,
                     labels.conv_tol))
  return time.perf_counter() - start


# ---- label files ------------------------------------------------------------------------------


def save_labels(labels: Labels, path: str | os.PathLike) -> None:
  """Writes `labels` to an .npz file (no pickles: strings are stored as arrays)."""
  fields = {f.name: np.asarray(getattr(labels, f.name)) for f in dataclasses.fields(Labels)
            if f.name != "level"}
  fields.update({k: np.asarray(getattr(labels.level, k)) for k in _LEVEL_FIELDS})
  with written_whole(path) as temporary, open(temporary, "wb") as f:
    np.savez(f, format=_LABEL_FORMAT, **fields)


def load_labels(path: str | os.PathLike) -> Labels:
  """The labels `save_labels` wrote to `path` (InputError if it is not such a file)."""
  try:
    with np.load(path, allow_pickle=False) as data:
      if "format" not in data or int(data["format"]) != _LABEL_FORMAT:
        raise InputError(f"{path}: not a QPT label file of format {_LABEL_FORMAT}")
      fields = {f.name: data[f.name] for f in dataclasses.fields(Labels) if f.name != "level"}
      level = Level(str(data["basis"]), str(data["xc"]), int(data["grid_level"]), str(data["eri"]),
                    "float64")
  except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:  # the last: a truncated copy
    raise InputError(f"{path}: not a readable QPT label file ({e})") from None
  fields.update(conv_tol=float(fields["conv_tol"]), charge=int(fields["charge"]))
  return Labels(level=level, **fields)


def label_cached(path: str | os.PathLike, molecules: Sequence[Molecule | gto.Mole], level: Level,
                 conv_tol: float = CONV_TOL) -> tuple[Labels, bool]:
  """`label`, reusing `path` if it holds the same level of theory and geometries.

  Returns (labels, reused). A file for anything else is relabelled and overwritten. A `path`
  that cannot be written is an InputError before any label is computed (labels take minutes).
  """
  check_writable(path)  # conv_tol is `label`'s to check, also before PySCF runs
  molecules = _molecules(molecules)
  if os.path.exists(path):
    try:
      old = load_labels(path)
    except InputError:
      old = None  # unreadable or an old format: relabel
    if old is not None and _same(old, level, float(conv_tol), molecules):
      return old, True
  labels = label(molecules, level, conv_tol)
  save_labels(labels, path)
  return labels, False


def check_conv_tol(conv_tol: float) -> None:
  """InputError unless `conv_tol` (Hartree) is a positive finite number: PySCF would take a
  negative one and never converge (its gradient tolerance is √conv_tol: NaN)."""
  if not (isinstance(conv_tol, numbers.Real) and math.isfinite(conv_tol) and conv_tol > 0):
    raise InputError(f"conv_tol={conv_tol!r}: must be a positive number of Hartree")


def _molecules(molecules: Sequence[Molecule | gto.Mole]) -> list[Molecule]:
  return [Molecule.from_pyscf(m) if isinstance(m, gto.Mole) else m for m in molecules]


def _same(labels: Labels, level: Level, conv_tol: float, molecules: Sequence[Molecule]) -> bool:
  if not labels.level.same_theory(level) or labels.conv_tol != conv_tol:
    return False
  if len(labels) != len(molecules):
    return False
  return all(np.array_equal(m.atomic_numbers, labels.atomic_numbers) and m.charge == labels.charge
             and np.allclose(m.positions, p, rtol=0, atol=1e-10)
             for m, p in zip(molecules, labels.positions))
