"""tools/scf.py: one SCF of a charged built-in molecule, against PySCF's RKS of the same ion."""

from pyscf import dft

import qpt
from tests.processes import load_tool


def test_a_charged_built_in_molecule_matches_pyscfs_ion():
  """--molecule water --charge -2 (10 → 12 electrons; an SCF PySCF converges at STO-3G): the
  tool's float64 energy is PySCF's for the dianion, not neutral water's."""
  tool = load_tool("scf")
  args = tool.parse_args(["--molecule", "water", "--charge", "-2", "--basis", "sto-3g",
                          "--xc", "lda,vwn", "--grid-level", "1", "--dtype", "float64", "--json"])
  out = tool.run(args)
  mf = dft.RKS(qpt.molecules.get("water", charge=-2).to_pyscf("sto-3g"))
  mf.xc, mf.grids.level, mf.conv_tol, mf.verbose = "lda,vwn", 1, 1e-11, 0
  reference = mf.kernel()
  assert mf.converged and out["converged"] and out["charge"] == -2
  assert abs(out["energy"] - reference) < 1e-6, (out["energy"], reference)
  assert "water (charge -2) sto-3g" in tool.summary(out)
