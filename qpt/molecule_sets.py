"""Molecule sets for pre-training: QM9 and folders of .xyz files, size limits, a split by molecule.

Readers (each returns a list of equilibrium `Molecule`s; a QM9 molecule is named by QM9's own id,
`dsgdb9nsd_NNNNNN`, whichever copy of the data it came from, any other by its file name):
  * `read_qm9pack()`: QM9 as its author ships it on the package index (`qm9pack`: CSV files of
    B3LYP/6-31G(2df,p) geometries in Å). Read with the standard library, without importing
    qm9pack itself (which needs pandas); all 130,831 rows take ~6 s, the size limit is applied to
    the stoichiometry column before any geometry is parsed.
  * `read_xyz_set(path)`: a folder or tarball of QM9's original `dsgdb9nsd_*.xyz` files (atoms
    with a fifth column, frequencies, SMILES and InChI after them, Mathematica exponents `*^`), or
    a folder of ordinary `.xyz` files.
  * `read(source)`: either, by name (`"qm9"`) or path.

Everything unreadable is a one-line `InputError` naming the file (and line).

`split_by_molecule` cuts a set into train / validation / test by molecule (seeded), so no test
molecule is ever trained on; `without_builtins` removes the built-in MD17 molecules (matched by
their bond graph, `graph_key`), so fine-tuning on one of them measures transfer, not recall.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import re
import tarfile
from typing import Iterable, Sequence

import numpy as np

from qpt import molecules as builtin
from qpt.conformers import DEFAULT_TEMPERATURE, ThermalSampler, bond_graph
from qpt.errors import InputError
from qpt.model_hessian import model_hessian
from qpt.molecule import Molecule

QM9_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")  # qm9pack's data, in index order
QM9_PREFIX = "dsgdb9nsd_"
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)  # QH9-stable-id: a random 80/10/10 split by molecule


# ---- size limits --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SizeLimit:
  """Which molecules a run can afford. 0 means no limit.

  Attributes:
    max_heavy_atoms: atoms other than hydrogen.
    max_electrons: electrons of the neutral molecule.
    max_n_ao: atomic orbitals in `basis` (the n_ao of the DFT problem before padding).
    basis: the basis `max_n_ao` counts in.
  """

  max_heavy_atoms: int = 0
  max_electrons: int = 0
  max_n_ao: int = 0
  basis: str = "def2-svp"

  def __post_init__(self):
    for field in ("max_heavy_atoms", "max_electrons", "max_n_ao"):
      value = getattr(self, field)
      if int(value) != value or value < 0:
        raise InputError(f"{field}={value}: must be a non-negative integer (0: no limit)")

  def admits(self, atomic_numbers: Sequence[int]) -> bool:
    z = np.asarray(atomic_numbers)
    return ((not self.max_heavy_atoms or int((z > 1).sum()) <= self.max_heavy_atoms)
            and (not self.max_electrons or int(z.sum()) <= self.max_electrons)
            and (not self.max_n_ao or sum(_n_ao(self.basis, int(k)) for k in z) <= self.max_n_ao))

  def __str__(self) -> str:
    limits = [f"{f}={getattr(self, f)}" for f in ("max_heavy_atoms", "max_electrons", "max_n_ao")
              if getattr(self, f)]
    if self.max_n_ao:
      limits[-1] += f" ({self.basis})"
    return ", ".join(limits) or "no size limit"


@functools.cache
def _n_ao(basis: str, z: int) -> int:
  """Spherical AOs of one atom of element z in `basis` (one-line error if the basis lacks it)."""
  # An anion when z is odd: a closed shell, which Molecule requires; the basis does not care.
  atom = Molecule([z], [[0.0, 0.0, 0.0]], charge=-(z % 2), name=f"basis {basis!r}")
  return atom.to_pyscf(basis).nao_nr()


def limited(molecules: Iterable[Molecule], limit: SizeLimit, what: str) -> list[Molecule]:
  """The molecules `limit` admits; an InputError naming `what` and the limit if none is left."""
  kept = [m for m in molecules if limit.admits(m.atomic_numbers)]
  if not kept:
    raise InputError(f"{what}: no molecule within {limit}")
  return kept


# ---- readers ------------------------------------------------------------------------------------


def read(source: str, limit: SizeLimit = SizeLimit()) -> list[Molecule]:
  """The molecules of `source` within `limit`: "qm9" (qm9pack's CSV files), a folder of CSV files
  in qm9pack's layout, or a folder / tarball of .xyz files (`read_xyz_set`)."""
  if source.strip().lower() == "qm9":
    return read_qm9pack(limit=limit)
  if os.path.isdir(source) and any(os.path.exists(os.path.join(source, f)) for f in QM9_FILES):
    return read_qm9pack(source, limit)
  return read_xyz_set(source, limit)


def read_qm9pack(directory: str | os.PathLike | None = None,
                 limit: SizeLimit = SizeLimit()) -> list[Molecule]:
  """QM9 from qm9pack's CSV files (the installed package's data unless `directory` is given).

  Only the files present are read (a fixture may hold one); rows outside `limit` are skipped
  before their geometry is parsed.
  """
  if directory is None:
    # Found, not imported: qm9pack's __init__ imports pandas, which QPT does not need.
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
      raise InputError("QM9 needs the qm9pack package (pip install --no-deps qm9pack); it is in "
                       "requirements.lock, so `make test` or `make run` installs it")
    directory = os.path.join(spec.submodule_search_locations[0], "data")
  paths = [os.path.join(os.fspath(directory), f) for f in QM9_FILES]
  paths = [p for p in paths if os.path.exists(p)]
  if not paths:
    raise InputError(f"{directory}: no QM9 CSV file ({', '.join(QM9_FILES)})")
  out = []
  for path in paths:
    out += _read_qm9_csv(path, limit)
  return limited(out, limit, os.fspath(directory))


_QM9_COLUMNS = ("XYZ_file", "Stoichiometry", "Elements", "XYZ_Ang")
_STOICHIOMETRY_Z = (1, 6, 7, 8, 9)  # qm9pack's Stoichiometry column counts H, C, N, O, F
_BARE_POINT = re.compile(r"\.(?=[],\s])")


def _read_qm9_csv(path: str, limit: SizeLimit) -> list[Molecule]:
  name = os.path.basename(path)
  out = []
  try:
    with open(path, newline="") as f:
      rows = csv.DictReader(f)
      missing = [c for c in _QM9_COLUMNS if c not in (rows.fieldnames or ())]
      if missing:
        raise InputError(f"{name}: not a qm9pack CSV file: no column {', '.join(missing)}")
      for line, row in enumerate(rows, start=2):
        try:
          z = np.repeat(_STOICHIOMETRY_Z, json.loads(row["Stoichiometry"]))
        except (ValueError, TypeError):
          raise InputError(f"{name}: line {line} is not a QM9 row (Stoichiometry)") from None
        if not limit.admits(z):
          continue
        try:
          symbols = json.loads(row["Elements"].replace("'", '"'))
          # qm9pack writes whole numbers as "1." (not JSON): "1.0" before parsing.
          xyz = np.array(json.loads(_BARE_POINT.sub(".0", row["XYZ_Ang"])), dtype=np.float64)
        except (ValueError, TypeError, AttributeError):
          raise InputError(f"{name}: line {line} is not a QM9 row (Elements, XYZ_Ang)") from None
        out.append(Molecule(symbols, xyz, name=row["XYZ_file"].removesuffix(".xyz")))
  except OSError as e:
    raise InputError(f"{path}: cannot read ({e.strerror})") from None
  except (UnicodeDecodeError, csv.Error) as e:
    raise InputError(f"{name}: not a CSV file ({e})") from None
  return out


def read_xyz_set(path: str | os.PathLike, limit: SizeLimit = SizeLimit()) -> list[Molecule]:
  """Every .xyz file of a folder or a tarball (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz), sorted by
  name. Files named dsgdb9nsd_*.xyz are read as QM9 wrote them; others as ordinary xyz files."""
  path = os.fspath(path)
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if n.endswith(".xyz"))
    texts = ((n, lambda n=n: _read_text(os.path.join(path, n))) for n in names)
    out = _parse_all(texts)
  elif os.path.isfile(path):
    try:
      with tarfile.open(path) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xyz")),
                         key=lambda m: m.name)
        texts = ((os.path.basename(m.name),
                  lambda m=m: tar.extractfile(m).read().decode("utf-8", "replace")) for m in members)
        out = _parse_all(texts)
    except (tarfile.TarError, EOFError, OSError) as e:
      reason = str(e).splitlines()[0].rstrip(":")  # tarfile lists every method it tried
      raise InputError(f"{path}: not a folder or a readable tarball of .xyz files "
                       f"({reason})") from None
  else:
    raise InputError(f"{path}: no such folder or file")
  if not out:
    raise InputError(f"{path}: holds no .xyz file")
  return limited(out, limit, path)


def _read_text(path: str) -> str:
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      return f.read()
  except OSError as e:
    raise InputError(f"{path}: cannot read ({e.strerror})") from None


def _parse_all(texts) -> list[Molecule]:
  """Parses (name, () → text) pairs (`limited` applies the size limit afterwards)."""
  return [_parse_qm9_xyz(text(), name) if name.startswith(QM9_PREFIX)
          else Molecule.from_xyz_text(text(), name=name) for name, text in texts]


def _parse_qm9_xyz(text: str, name: str) -> Molecule:
  """QM9's own xyz: count, a property line, `El x y z charge` (Å; `*^` exponents), then extras."""
  lines = text.splitlines()
  try:
    count = int(lines[0].split()[0])
    atoms = [line.replace("*^", "e").split() for line in lines[2:2 + count]]
    if len(atoms) != count or any(len(a) < 4 for a in atoms):
      raise ValueError
    xyz = [[float(v) for v in a[1:4]] for a in atoms]
  except (IndexError, ValueError):
    raise InputError(f"{name}: not a QM9 xyz file (count line, property line, then one "
                     "'element x y z charge' line per atom)") from None
  return Molecule([a[0] for a in atoms], xyz, name=name.removesuffix(".xyz"))


# ---- identity and splits ------------------------------------------------------------------------


def graph_key(molecule: Molecule, rounds: int = 3) -> str:
  """A hash of the molecule's bond graph (elements and covalent bonds, not positions).

  Weisfeiler–Lehman refinement: each atom's label becomes its element plus the sorted labels of
  its bonded neighbours, `rounds` times; the key hashes the sorted final labels. Conformers and
  copies of one compound share a key; distinct compounds collide only for rare graph pairs WL
  cannot tell apart. Bonds are `conformers.bond_graph`'s.
  """
  z = molecule.atomic_numbers
  bonded = bond_graph(molecule)
  labels = [str(int(k)) for k in z]
  for _ in range(rounds):
    labels = [hashlib.sha256((labels[i] + "(" + ",".join(
        sorted(labels[j] for j in np.flatnonzero(bonded[i]))) + ")").encode()).hexdigest()[:16]
              for i in range(len(z))]
  return hashlib.sha256(",".join(sorted(labels)).encode()).hexdigest()[:16]


@functools.cache
def builtin_keys() -> frozenset[str]:
  """`graph_key`s of the built-in MD17 molecules."""
  return frozenset(graph_key(builtin.get(name)) for name in builtin.names())


def without_builtins(molecules: Iterable[Molecule]) -> list[Molecule]:
  """`molecules` minus every compound that is one of the built-in MD17 molecules."""
  return [m for m in molecules if graph_key(m) not in builtin_keys()]


def split_by_molecule(molecules: Sequence[Molecule], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                      seed: int = 0) -> dict[str, list[Molecule]]:
  """Disjoint train / validation / test molecule lists (fractions of the set, seeded).

  One permutation of the set from `seed`; validation and test get round(fraction · n) molecules
  each (at least one), train the rest, so a molecule is in exactly one split.
  """
  if len(fractions) != 3 or min(fractions) < 0 or not 0.999 < sum(fractions) < 1.001:
    raise InputError(f"split fractions {tuple(fractions)}: need three non-negative numbers "
                     "(train, validation, test) summing to 1")
  n = len(molecules)
  n_val, n_test = (max(1, round(f * n)) for f in fractions[1:])
  if n - n_val - n_test < 1:
    raise InputError(f"{n} molecules cannot be split {tuple(fractions)}: fewer than 3, or no "
                     "molecule left to train on")
  order = np.random.default_rng([int(seed)]).permutation(n)
  pieces = np.split(order, [n - n_val - n_test, n - n_test])
  return {key: [molecules[i] for i in np.sort(idx)]
          for key, idx in zip(("train", "validation", "test"), pieces)}


# ---- conformers of a set ------------------------------------------------------------------------


class MoleculeSetSampler:
  """Thermal conformers of a set of molecules, as an endless conformer source: `sampler(i)`.

  Conformer i is molecule rng([seed, i, 1]).integers(len(set)) displaced as
  `conformers.ThermalSampler` displaces it (rng([seed, i])), in the normal modes of Lindh's model
  Hessian (`model_hessian`; an RHF Hessian per molecule would cost seconds to minutes each). So
  conformer i depends on (set, seed, i) only, and a stream over the set resumes like any other.
  """

  def __init__(self, molecules: Sequence[Molecule], temperature: float = DEFAULT_TEMPERATURE,
               seed: int = 0):
    if not molecules:
      raise InputError("a molecule set to sample needs at least one molecule")
    if int(seed) != seed or seed < 0:
      raise InputError(f"seed={seed}: must be a non-negative integer")
    self.molecules, self.temperature, self.seed = list(molecules), float(temperature), int(seed)
    self._samplers: dict[int, ThermalSampler] = {}

  def molecule_index(self, index: int) -> int:
    """Which molecule of the set conformer `index` is."""
    return int(np.random.default_rng([self.seed, int(index), 1]).integers(len(self.molecules)))

  def sampler(self, k: int) -> ThermalSampler:
    """Molecule k's thermal sampler (its model Hessian computed once, on first use)."""
    if k not in self._samplers:
      molecule = self.molecules[k]
      self._samplers[k] = ThermalSampler(molecule, self.temperature, self.seed,
                                         hess=model_hessian(molecule))
    return self._samplers[k]

  def __call__(self, index: int) -> Molecule:
    return self.sampler(self.molecule_index(index))(index)


class HeldOutMolecules:
  """A finite conformer source for scoring unseen molecules: conformer i is molecule i // per of
  the set, at its equilibrium geometry when i % per = 0, else a thermal conformer of it."""

  def __init__(self, molecules: Sequence[Molecule], per_molecule: int = 2,
               temperature: float = DEFAULT_TEMPERATURE, seed: int = 0):
    if per_molecule < 1:
      raise InputError(f"per_molecule={per_molecule}: need at least the equilibrium geometry")
    self.per_molecule = int(per_molecule)
    self._sampler = MoleculeSetSampler(molecules, temperature, seed)

  @property
  def molecules(self) -> list[Molecule]:
    return self._sampler.molecules

  def __len__(self) -> int:
    return len(self.molecules) * self.per_molecule

  def molecule_index(self, index: int) -> int:
    return int(index) // self.per_molecule

  def __call__(self, index: int) -> Molecule:
    if not 0 <= index < len(self):
      raise InputError(f"conformer {index} of {len(self)} held-out conformers does not exist")
    k, j = divmod(int(index), self.per_molecule)
    sampler = self._sampler.sampler(k)
    return sampler.molecule if j == 0 else sampler(index)
