"""QPT: label-free training of neural Kohn–Sham Hamiltonians through a float32-stable DFT in JAX.

  molecule ──▶ host integrals (PySCF) ──▶ DFTProblem (padded) ──▶ energy / SCF on device ◀── model H
  (molecule.py)  (integrals.py, build.py)   (problem.py)           (dft.py, xc.py)        (model.py)
"""

from qpt import dft, molecules
from qpt.build import build_problem
from qpt.checkpoint import load_params
from qpt.errors import InputError
from qpt.inference import predict, to_pyscf_dm0
from qpt.level import Level
from qpt.molecule import Molecule

__all__ = ["InputError", "Level", "Molecule", "build_problem", "dft", "load_params", "molecules",
           "predict", "to_pyscf_dm0"]
