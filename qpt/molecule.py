"""A molecule: atomic numbers, positions in Bohr, total charge.

Ångström appears only at this boundary (xyz files, `Molecule(symbols,
positions_angstrom)`, `.positions_angstrom`); everything inside QPT works in
Bohr. Validation happens here, once, so the rest of the code can trust its input:
every problem is reported as a one-line `qpt.InputError` naming the atom or field.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import re
import warnings
from typing import Iterable, Sequence

import numpy as np
from pyscf import gto
from pyscf.data import elements
from pyscf.data.nist import BOHR  # Å per Bohr

from qpt.errors import InputError

MIN_DISTANCE_ANGSTROM = 0.1  # closer than this is a typo, not chemistry
# Wider than this is a unit mistake, not a molecule. QPT's float32 energy of a water whose O sits
# 1,000 Å from its H2 matches PySCF's to 5 µHa; at 10⁸ Å even float64 is 0.17 Ha off, at 10²⁰ Å
# the grids overflow (docs/numerics.md §5).
MAX_SPAN_ANGSTROM = 1000.0
_MAX_Z = 86  # H..Rn: elements with standard Gaussian basis sets
_LAST_ELEMENT = 118  # Og


@functools.lru_cache(maxsize=None)
def _has_core_potential(basis: str, symbol: str) -> bool:
  """Whether PySCF's `basis` pairs element `symbol` with an effective core potential (read once)."""
  return bool(gto.basis.load_ecp(basis, symbol))


@functools.lru_cache(maxsize=None)
def _defines(basis: str, symbol: str) -> bool:
  """Whether PySCF loads `basis` (a name or a file) for element `symbol`."""
  try:
    with warnings.catch_warnings():  # PySCF's advice to install basis-set-exchange
      warnings.simplefilter("ignore")
      gto.basis.load(basis, symbol)
  except Exception:  # PySCF raises BasisNotFoundError, KeyError or RuntimeError by case
    return False
  return True


def _atomic_number(symbol: str, where: str) -> int:
  """'C', 'c', 'Cl', '6' → atomic number; anything else is an InputError."""
  text = str(symbol).strip()
  if text.isdigit():
    z = int(text)
  else:
    try:  # PySCF's table: 0 for ghost-like 'X…', KeyError for other unknown letters
      z = elements.charge(text.capitalize()) if text.isalpha() else 0
    except KeyError:
      z = 0
  if _MAX_Z < z <= _LAST_ELEMENT:  # a real element, but no standard basis set has it
    raise InputError(f"{where}: element {symbol!r} (Z = {z}) is past Rn (Z = {_MAX_Z}), the last "
                     f"with standard Gaussian basis sets")
  if not 1 <= z <= _MAX_Z:
    raise InputError(f"{where}: unknown element {symbol!r}")
  return z


def _whole_charge(charge, name: str) -> int:
  """`charge` as an int, or an InputError: a charge of 0.5 must not round silently to 0."""
  try:
    whole = int(charge)
    is_whole = whole == charge and not isinstance(charge, bool)
  except (TypeError, ValueError, OverflowError):
    is_whole = False
  if not is_whole:
    raise InputError(f"{name}: charge {charge!r} is not a whole number of elementary charges")
  return whole


@dataclasses.dataclass(frozen=True, eq=False)
class Molecule:
  """A closed-shell molecule.

  Attributes:
    atomic_numbers: (n_atoms,) int.
    positions: (n_atoms, 3) Bohr.
    charge: total charge in units of e.
    name: optional label (file name or built-in name), used in messages.
  """

  atomic_numbers: np.ndarray
  positions: np.ndarray
  charge: int = 0
  name: str = "molecule"

  def __init__(self, symbols: Sequence[str | int], positions_angstrom, charge: int = 0,
               name: str = "molecule"):
    """Builds a molecule from element symbols (or atomic numbers) and positions in Å."""
    if isinstance(symbols, (str, bytes)) or not isinstance(symbols, Iterable):
      raise InputError(f"{name}: symbols {symbols!r} are not a list of elements")
    z = np.array([_atomic_number(s, f"{name}: atom {i + 1}") for i, s in enumerate(symbols)],
                 dtype=np.int64)
    if np.iscomplexobj(positions_angstrom):  # numpy would drop the imaginary part with a warning
      raise InputError(f"{name}: positions are complex numbers")
    try:
      xyz = np.asarray(positions_angstrom, dtype=np.float64)
    except (TypeError, ValueError):
      raise InputError(f"{name}: positions are not numbers") from None
    object.__setattr__(self, "atomic_numbers", z)
    object.__setattr__(self, "positions", xyz / BOHR)
    object.__setattr__(self, "charge", _whole_charge(charge, name))
    object.__setattr__(self, "name", name)
    self._validate(xyz)

  def _validate(self, xyz_angstrom: np.ndarray) -> None:
    n = len(self.atomic_numbers)
    if n == 0:
      raise InputError(f"{self.name}: no atoms")
    if xyz_angstrom.shape != (n, 3):
      raise InputError(f"{self.name}: positions have shape {xyz_angstrom.shape}, expected ({n}, 3)")
    bad = np.flatnonzero(~np.isfinite(xyz_angstrom).all(axis=1))
    if bad.size:
      raise InputError(f"{self.name}: atom {bad[0] + 1} ({self.symbols[bad[0]]}) has a non-finite coordinate")
    if n > 1:
      dist = np.linalg.norm(xyz_angstrom[:, None] - xyz_angstrom[None], axis=-1)
      i, j = np.unravel_index(np.argmax(dist), dist.shape)
      if dist[i, j] > MAX_SPAN_ANGSTROM:
        i, j = sorted((i, j))
        raise InputError(
            f"{self.name}: atoms {i + 1} ({self.symbols[i]}) and {j + 1} ({self.symbols[j]}) are "
            f"{dist[i, j]:.4g} Å apart (maximum {MAX_SPAN_ANGSTROM:g} Å): are the positions in Å?")
      dist[np.diag_indices(n)] = np.inf
      i, j = np.unravel_index(np.argmin(dist), dist.shape)
      if dist[i, j] < MIN_DISTANCE_ANGSTROM:
        i, j = sorted((i, j))
        raise InputError(
            f"{self.name}: atoms {i + 1} ({self.symbols[i]}) and {j + 1} ({self.symbols[j]}) are "
            f"{dist[i, j]:.3f} Å apart (minimum {MIN_DISTANCE_ANGSTROM} Å)")
    if self.n_electrons <= 0:
      raise InputError(f"{self.name}: charge {self.charge} leaves {self.n_electrons} electrons")
    if self.n_electrons % 2:
      raise InputError(
          f"{self.name}: {self.n_electrons} electrons (charge {self.charge}) is an odd count; "
          "only closed-shell restricted Kohn-Sham is supported")

  # ---- other constructors -------------------------------------------------------------------

  @classmethod
  def from_bohr(cls, atomic_numbers, positions_bohr, charge: int = 0,
                name: str = "molecule") -> Molecule:
    """From atomic numbers and positions in Bohr (the internal unit)."""
    # 8.0 is oxygen; 1.5 stays 1.5, so that it is reported rather than truncated to hydrogen
    whole = lambda z: int(z) if isinstance(z, numbers.Real) and float(z).is_integer() else z
    return cls([whole(z) for z in np.asarray(atomic_numbers).tolist()],
               np.asarray(positions_bohr, dtype=np.float64) * BOHR, charge, name)

  @classmethod
  def from_xyz_text(cls, text: str, charge: int | None = None, name: str = "xyz") -> Molecule:
    """From the text of an xyz file: a count line, a comment line, then `El x y z` in Å.

    The comment line may say `charge=…` and `multiplicity=…` (extended xyz's key=value pairs, as
    ASE writes them): the charge is the molecule's unless `charge` is given, which must then agree;
    a multiplicity other than 1 is refused (closed shells only). Without either, charge 0."""
    lines = text.removeprefix("\ufeff").strip("\n").splitlines()  # a Windows editor's BOM
    if not lines or not lines[0].strip():
      raise InputError(f"{name}: empty xyz")
    try:
      count = int(lines[0].split()[0])
    except ValueError:
      raise InputError(f"{name}: line 1 should be the atom count, got {lines[0].strip()!r}") from None
    atom_lines = [l for l in lines[2:] if l.strip()]
    if len(atom_lines) > count and lines[2 + count].strip().isdigit():
      raise InputError(f"{name}: a trajectory (line {count + 3} starts another frame); QPT reads "
                       "one molecule per xyz file")
    if len(atom_lines) != count:
      raise InputError(f"{name}: line 1 says {count} atoms but {len(atom_lines)} atom lines follow")
    symbols, xyz = [], []
    for k, line in enumerate(atom_lines):
      fields = line.split()
      if len(fields) < 4:
        raise InputError(f"{name}: line {k + 3} should be 'element x y z', got {line.strip()!r}")
      try:
        xyz.append([float(f) for f in fields[1:4]])
      except ValueError:
        raise InputError(f"{name}: line {k + 3} has a bad number: {line.strip()!r}") from None
      symbols.append(fields[0])
    return cls(symbols, xyz, _charge_of(lines[1] if len(lines) > 1 else "", charge, name), name)

  @classmethod
  def from_xyz(cls, path: str | os.PathLike, charge: int | None = None) -> Molecule:
    """From an xyz file (Å); its comment line may give the charge (`from_xyz_text`)."""
    name = os.path.basename(os.fspath(path))
    try:
      with open(path, encoding="utf-8") as f:  # whatever the locale says
        text = f.read()
    except OSError as e:
      raise InputError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
      raise InputError(f"{path}: not a text file, so not an xyz file") from None
    return cls.from_xyz_text(text, charge, name)

  @classmethod
  def from_pyscf(cls, mole: gto.Mole) -> Molecule:
    """From a `pyscf.gto.Mole` (its geometry and charge; the basis is chosen later)."""
    if mole.spin != 0:
      raise InputError(f"pyscf Mole has spin {mole.spin}; only closed-shell restricted Kohn-Sham "
                       "is supported")
    if mole.has_ecp():  # its atom_charges() are then Z less the core's: O would be read as C
      raise InputError(f"pyscf Mole uses an effective core potential for "
                       f"{', '.join(sorted(mole._ecp))}; QPT is all-electron only")
    charges = mole.atom_charges()
    if np.any(charges == 0):
      i = int(np.flatnonzero(charges == 0)[0])
      raise InputError(f"pyscf Mole: atom {i + 1} ({mole.atom_symbol(i)}) is a ghost atom (no "
                       "nucleus); QPT's atoms are real ones")
    if mole.natm and np.any(mole._atm[:, gto.NUC_MOD_OF] != gto.NUC_POINT):
      # PySCF's finite nuclei move water's B3LYP energy by ~12 µHa; QPT would silently ignore them
      raise InputError("pyscf Mole uses a finite nuclear model (nucmod); QPT's nuclei are points")
    # Its electrons, not `mole.charge`: a Mole given `nelectron` keeps charge 0 (an 8-electron
    # water was computed with 10).
    return cls.from_bohr(charges, mole.atom_coords(unit="Bohr"),
                         int(charges.sum()) - mole.nelectron, name="pyscf Mole")

  # ---- derived quantities -------------------------------------------------------------------

  @property
  def symbols(self) -> list[str]:
    return [elements.ELEMENTS[z] for z in self.atomic_numbers]

  @property
  def positions_angstrom(self) -> np.ndarray:
    """(n_atoms, 3) Å."""
    return self.positions * BOHR

  @property
  def n_atoms(self) -> int:
    return len(self.atomic_numbers)

  @property
  def n_electrons(self) -> int:
    return int(self.atomic_numbers.sum()) - self.charge

  def with_positions(self, positions_bohr) -> Molecule:
    """The same atoms at new positions (Bohr): a conformer."""
    return Molecule.from_bohr(self.atomic_numbers, positions_bohr, self.charge, self.name)

  def to_pyscf(self, basis: str) -> gto.Mole:
    """A built `pyscf.gto.Mole` in Bohr, with a one-line error if `basis` lacks an element."""
    for symbol in sorted(set(self.symbols)):
      if not _defines(basis, symbol):
        if not any(_defines(basis, s) for s in elements.ELEMENTS[1:_MAX_Z + 1]):  # a typo
          raise InputError(f"unknown basis set {basis!r}: PySCF has no basis of that name for any "
                           "element (and it is no basis file)")
        raise InputError(f"{self.name}: basis {basis!r} is not defined for element {symbol}")
      # def2-* from Rb on, lanl2dz, …: such a basis holds only the valence functions, meant for a
      # core potential. Used all-electron it gives a wrong energy without any warning.
      if _has_core_potential(basis, symbol):
        raise InputError(f"{self.name}: basis {basis!r} describes {symbol} with an effective core "
                         "potential; QPT is all-electron only: choose an all-electron basis")
    atoms = [(s, tuple(p)) for s, p in zip(self.symbols, self.positions)]
    mol = gto.M(atom=atoms, unit="Bohr", basis=basis, charge=self.charge, spin=0, verbose=0)
    if self.n_electrons // 2 > mol.nao:  # an anion too charged for its basis: nowhere to put them
      raise InputError(f"{self.name}: {self.n_electrons} electrons need {self.n_electrons // 2} "
                       f"orbitals, but basis {basis!r} has {mol.nao} for it")
    return mol

  def xyz_text(self) -> str:
    """The xyz file text of this molecule (Å)."""
    rows = [f"{s:2s} {x:14.8f} {y:14.8f} {z:14.8f}"
            for s, (x, y, z) in zip(self.symbols, self.positions_angstrom)]
    return "\n".join([str(self.n_atoms), self.name, *rows]) + "\n"

  def __repr__(self) -> str:
    formula = "".join(f"{s}{self.symbols.count(s) if self.symbols.count(s) > 1 else ''}"
                      for s in dict.fromkeys(self.symbols))
    return f"Molecule({self.name}: {formula}, charge={self.charge})"


# key=value pairs of an extended xyz comment line; a value may be "quoted".
_KEY_VALUE = re.compile(r'(\w+)=("[^"]*"|\S+)')


def _charge_of(comment: str, given: int | None, name: str) -> int:
  """The charge an xyz file's comment line says (`charge=-1`), checked against the one `given`;
  0 if neither says one. Read so that an anion's file is not computed as the neutral molecule
  (SO4 with charge=-2 has an even electron count either way: nothing else would catch it)."""
  pairs = {key.lower(): value.strip('"') for key, value in _KEY_VALUE.findall(comment)}

  def whole(key: str) -> int:
    try:
      value = float(pairs[key])
    except ValueError:
      value = math.nan
    if not value.is_integer():
      raise InputError(f"{name}: line 2 says {key}={pairs[key]}, not a whole number")
    return int(value)

  if "multiplicity" in pairs and whole("multiplicity") != 1:
    raise InputError(f"{name}: line 2 says multiplicity={pairs['multiplicity']}; only closed-shell "
                     "restricted Kohn-Sham (multiplicity 1) is supported")
  if "charge" not in pairs:
    return 0 if given is None else given
  said = whole("charge")
  if given is not None and given != said:
    raise InputError(f"{name}: line 2 says charge={said}, but charge {given} was given")
  return said
