"""Two displaced water conformers labelled by PySCF in their canonical frames, shared by the
label, evaluation and inference tests.

Water in STO-3G on grid level 1 with LDA keeps PySCF (which dominates the time) cheap; the two
conformers share one padded shape, so each jitted function compiles once.
"""

import functools
import importlib.util
import os

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
