"""QPT: label-free training of neural Kohn–Sham Hamiltonians through a float32-stable DFT in JAX.

  molecule ──▶ host integrals (PySCF) ──▶ DFTProblem (padded) ──▶ energy / SCF on device ◀── model H
"""

from qpt import dft, molecules
from qpt.errors import InputError
from qpt.molecule import Molecule

__all__ = ["InputError", "Molecule", "dft", "molecules"]
