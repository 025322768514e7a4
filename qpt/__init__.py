"""QPT: label-free training of neural Kohn–Sham Hamiltonians through a float32-stable DFT in JAX.

  molecule ──▶ host integrals (PySCF) ──▶ DFTProblem (padded) ──▶ energy / SCF on device ◀── model H
  (molecule.py)  (integrals.py, build.py)   (problem.py)           (dft.py, xc.py)        (model.py)
"""

from qpt import basis_files, threads

threads.single_threaded_blas()  # before any JAX eigh can run beside numpy: see qpt/threads.py
basis_files.parse_once()  # PySCF re-parses basis files for every conformer otherwise

from qpt import dft, molecules  # noqa: E402
from qpt.build import build_problem  # noqa: E402
from qpt.checkpoint import load_params  # noqa: E402
from qpt.errors import InputError  # noqa: E402
from qpt.inference import TrainedModel, load_model, predict, to_pyscf_dm0  # noqa: E402
from qpt.level import Level  # noqa: E402
from qpt.molecule import Molecule  # noqa: E402

__all__ = ["InputError", "Level", "Molecule", "TrainedModel", "build_problem", "dft", "load_model",
           "load_params", "molecules", "predict", "to_pyscf_dm0"]
