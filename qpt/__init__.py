"""QPT: label-free training of neural Kohn–Sham Hamiltonians through a float32-stable DFT in JAX.

  molecule ──▶ host integrals (PySCF) ──▶ DFTProblem (padded) ──▶ energy / SCF on device ◀── model H
"""

from qpt import dft, molecules
from qpt.checkpoint import load_params
from qpt.errors import InputError
from qpt.evaluate import predict, to_pyscf_dm0
from qpt.molecule import Molecule

__all__ = ["InputError", "Molecule", "dft", "load_params", "molecules", "predict", "to_pyscf_dm0"]
