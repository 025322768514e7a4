"""Built-in starting geometries: the MD17 molecules.

MMFF94 minima (Å) shipped as xyz files beside this module. They are starting
points for conformer sampling, not DFT equilibria.
"""

from importlib import resources

from qpt.errors import InputError
from qpt.molecule import Molecule


def names() -> list[str]:
  """The built-in molecule names, sorted."""
  return sorted(p.name[:-4] for p in resources.files(__name__).iterdir() if p.name.endswith(".xyz"))


def get(name: str, charge: int = 0) -> Molecule:
  """The built-in geometry called `name` (e.g. "uracil"), with total charge `charge` (e)."""
  key = name.strip().lower().replace("-", "_").replace(" ", "_")
  if key not in names():
    raise InputError(f"unknown built-in molecule {name!r}; choose one of {', '.join(names())}")
  text = (resources.files(__name__) / f"{key}.xyz").read_text()
  return Molecule.from_xyz_text(text, charge, name=key)
