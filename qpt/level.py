"""The level of theory: everything that decides what E[D(H)] means, in one validated value.

A `Level` travels with every problem, label file, stream and config, so "which energy is this?"
has one answer. It is validated once, here, when it is made; the rest of QPT trusts it.

  Level(basis="def2-svp", xc="b3lyp5", grid_level=3, eri="dense", dtype="float32")

Device-side code may read it (a `DFTProblem` carries one), so this module imports nothing
host-side: whether a basis set defines every element of a molecule is checked where the molecule
meets the basis (`Molecule.to_pyscf`).
"""

from __future__ import annotations

import dataclasses

from qpt import xc
from qpt.errors import InputError

ERI_MODES = ("dense", "df")  # exact integrals (Cholesky-factored) | density fitting (JK-fit basis)
DTYPES = ("float32", "float64")  # device precision; float64 is for reference runs
GRID_LEVELS = range(10)  # PySCF's grid levels 0..9
XC_NAMES = xc.NAMES  # functionals, as PySCF names them

# What a model learns to predict H for: at another basis or functional it is out of its domain
# (water's def2-SVP model scored in STO-3G: 4,470 µHa instead of 1.3). The grid, the repulsion
# integrals and the dtype only approximate the same energy, and may differ.
LEARNT_FOR = ("basis", "xc")


@dataclasses.dataclass(frozen=True)
class Level:
  """A level of theory and the device precision it is computed in.

  Attributes:
    basis: basis set name as PySCF spells it ("def2-svp", "sto-3g", "6-31g"), lower case.
    xc: functional, normalised as `qpt.xc.functional` names it ("lda,vwn", "pbe", "b3lyp5", "b3lyp").
    grid_level: PySCF grid level of the XC quadrature (0..9).
    eri: "dense" (exact integrals, Cholesky-factored) or "df" (density fitting, JK-fit basis).
    dtype: device precision, "float32" or "float64".
  """

  basis: str = "def2-svp"
  xc: str = "b3lyp5"
  grid_level: int = 3
  eri: str = "dense"
  dtype: str = "float32"

  def __post_init__(self):
    if not isinstance(self.basis, str) or not self.basis.strip():
      raise InputError(f"basis={self.basis!r}: name a basis set, e.g. def2-svp")
    object.__setattr__(self, "basis", self.basis.strip().lower())
    object.__setattr__(self, "xc", xc.functional(self.xc).name)
    try:
      grid_level = int(self.grid_level)
    except (TypeError, ValueError):
      grid_level = -1
    if grid_level not in GRID_LEVELS or grid_level != self.grid_level:
      raise InputError(f"grid_level={self.grid_level!r}: PySCF grid levels are 0..9")
    object.__setattr__(self, "grid_level", grid_level)
    if self.eri not in ERI_MODES:
      raise InputError(f"eri={self.eri!r}: choose one of {', '.join(ERI_MODES)}")
    if self.dtype not in DTYPES:
      raise InputError(f"dtype={self.dtype!r}: choose one of {', '.join(DTYPES)}")

  @classmethod
  def from_config(cls, config, stream: bool = False) -> Level:
    """The level a run's config names (its fields basis, xc, grid_level, eri, dtype): what the
    run is evaluated at. stream=True: what its training stream builds at — the same, on the grid
    of `data.grid_level` (−1: grid_level) with the repulsion integrals of `data.eri` ("": eri).
    A training grid is never finer than the evaluation's: a larger data.grid_level means
    grid_level.
    """
    level = cls(**{f.name: config[f.name] for f in dataclasses.fields(cls)})
    if not stream:
      return level
    grid = config.data.get("grid_level", -1)
    if grid == -1:
      grid = level.grid_level
    elif grid in GRID_LEVELS:
      grid = min(grid, level.grid_level)
    try:  # an invalid value is Level's one-line error, prefixed with data.
      return dataclasses.replace(level, grid_level=grid, eri=config.data.get("eri", "") or level.eri)
    except InputError as e:
      raise InputError(f"data.{e}") from None

  @property
  def functional(self) -> xc.Functional:
    return xc.functional(self.xc)

  def with_dtype(self, dtype: str) -> Level:
    """The same theory computed in another precision."""
    return dataclasses.replace(self, dtype=dtype)

  def same_theory(self, other: Level) -> bool:
    """Whether `other` defines the same energy (the device precision aside)."""
    return self.with_dtype(other.dtype) == other

  def __str__(self) -> str:
    return f"{self.xc}/{self.basis}, grid {self.grid_level}, eri={self.eri}, {self.dtype}"
