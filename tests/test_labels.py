"""PySCF labels: converged MINAO runs at the level asked for, cached in label files."""

import os

import numpy as np
import pytest
from pyscf import dft, lib

import qpt
from qpt import labels
from tests.processes import load_tool
from tests.water_labels import BASIS, GRID_LEVEL, XC, problems, reference


@pytest.fixture(autouse=True, scope="module")
def one_pyscf_thread():
  """PySCF on one thread: these problems are tiny, and OpenMP threads spinning against XLA's (and
  other jobs') cost ~10× on 2 cores."""
  with lib.with_omp_threads(1):
    yield


def test_labels_are_converged_minao_runs():
  assert len(reference()) == 2 and reference().converged.all()
  assert (reference().cycles > 2).all()
  n_occ = 5  # water: 10 electrons
  np.testing.assert_allclose(np.einsum("cij,cji->c", reference().density,
                                       [p.overlap[:7, :7] for p in problems()]), 2 * n_occ,
                             atol=1e-5)
  for f, d, p in zip(reference().fock, reference().density, problems()):  # self-consistent: FDS = SDF
    fds = f @ d @ np.asarray(p.overlap, np.float64)[:7, :7]
    assert np.abs(fds - fds.T).max() < 1e-4


@pytest.mark.parametrize("name, grid_level", [("water", 0), ("water", 3), ("ethanol", 1),
                                              ("uracil", 2)])
def test_the_grid_grouping_is_pyscfs_permutation(name, grid_level):
  """`labels.group_grids` (installed in PySCF's place) against PySCF's own `arg_group_grids`, on
  a real grid and on points scattered far outside the boxes (clipped on every side)."""
  mol = qpt.molecules.get(name).to_pyscf("def2-svp")
  grid = dft.gen_grid.Grids(mol)
  grid.level = grid_level
  grid.build(sort_grids=False)
  far = np.random.default_rng(0).uniform(-40.0, 40.0, (5000, 3))
  for coords in (grid.coords, far, np.concatenate([far, grid.coords, far])):
    assert np.array_equal(labels.group_grids(mol, coords), labels._pyscf_group_grids(mol, coords))
  assert dft.gen_grid.arg_group_grids is labels.group_grids


def test_a_restart_from_the_minao_density_is_the_labels_own_run():
  """What the evaluation's MINAO baseline relies on to read its SCF cycles from the labels:
  PySCF restarted from the problem's MINAO density (the device's float32 copy) takes the label
  run's cycles and ends at its energy, conformer by conformer."""
  for i, p in enumerate(problems()):
    d0 = np.asarray(p.density_ref, np.float64)[:7, :7]
    cycles, converged = labels.restart_cycles(reference(), i, d0)
    assert converged and cycles == reference().cycles[i]
    restarted = labels.converge(labels.pyscf_rks(reference().molecule(i).to_pyscf(BASIS),
                                                 reference().level, reference().conv_tol), d0)
    assert restarted.e_tot == pytest.approx(reference().energy[i], abs=1e-8)


def test_label_files_are_reused(tmp_path, monkeypatch, capsys):
  runs = []
  converge = labels.converge
  monkeypatch.setattr(labels, "converge", lambda mf, dm0=None: runs.append(1) or converge(mf, dm0))
  tool = load_tool("label")
  out = str(tmp_path / "water.npz")
  argv = ["--molecule", "water", "--basis", BASIS, "--xc", XC, "--grid-level", str(GRID_LEVEL),
          "--n", "1", "--seed", "0", "--out", out, "--json"]
  assert tool.main(argv) == 0 and len(runs) == 1
  assert tool.main(argv) == 0 and len(runs) == 1  # cached: PySCF did not run
  # The same conformer from a positions file (Å) is the same geometry: reused too.
  positions = tool.gaussian_conformers(qpt.molecules.get("water"), 1, seed=0)
  np.save(tmp_path / "positions.npy", positions)
  assert tool.main(argv + ["--positions", str(tmp_path / "positions.npy")]) == 0
  assert len(runs) == 1 and '"reused": true' in capsys.readouterr().out.splitlines()[-1]
  assert tool.main(argv + ["--seed", "1"]) == 0 and len(runs) == 2  # new geometry
  assert tool.main(argv + ["--grid-level", "0"]) == 0 and len(runs) == 3  # new level of theory
  stored = labels.load_labels(out)
  assert stored.level == qpt.Level(BASIS, XC, 0, dtype="float64")
  assert stored.positions.shape == (1, 3, 3)
  np.testing.assert_allclose(stored.positions[0] * qpt.molecule.BOHR, positions[0], atol=1e-12)
  assert tool.main(["--molecule", "water", "--positions", str(tmp_path / "nothing.npy"),
                    "--out", out]) == 2
  # A copy cut short (an interrupted transfer) is not a label file: labelled again, not a
  # zipfile.BadZipFile.
  with open(out, "rb") as f:
    head = f.read(2000)
  with open(out, "wb") as f:
    f.write(head)
  with pytest.raises(qpt.InputError, match="not a readable QPT label file"):
    labels.load_labels(out)
  assert tool.main(argv) == 0 and len(runs) == 4
  # An --out without ".npz": numpy's savez added one to the temporary name, and the rename then
  # failed with a traceback after PySCF's work. Now the file is the name given, and read back.
  bare = str(tmp_path / "water_labels")
  assert tool.main([*argv[:-3], "--out", bare, "--json"]) == 0 and len(runs) == 5
  assert os.listdir(tmp_path).count("water_labels") == 1
  assert labels.load_labels(bare).level == qpt.Level(BASIS, XC, GRID_LEVEL, dtype="float64")


@pytest.mark.parametrize("make, words", [
    (lambda path: np.savez(path, positions=np.zeros((1, 3, 3))), "an .npz archive; give one .npy"),
    (lambda path: open(path, "wb").write(b"PK\x03\x04 cut short"), "cannot read"),
], ids=["npz", "truncated"])
def test_positions_that_are_not_one_array_are_one_line(tmp_path, capsys, make, words):
  """Both used to end in a traceback (AttributeError, zipfile.BadZipFile)."""
  path = tmp_path / "positions.npz"
  make(path)
  argv = ["--molecule", "water", "--positions", str(path), "--out", str(tmp_path / "w.npz")]
  assert load_tool("label").main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert words in err and "\n" not in err


@pytest.mark.parametrize("extra, words", [
    (["--displacement", "-0.1"], "--displacement -0.1: must be ≥ 0 Å"),
    (["--conv-tol", "-1"], "conv_tol=-1.0: must be a positive number of Hartree"),
    (["--out", "/nonexistent-dir/water.npz"], "/nonexistent-dir/water.npz: cannot write there"),
], ids=["displacement", "conv_tol", "out"])
def test_label_tool_refuses_bad_input_in_one_line_before_pyscf_runs(monkeypatch, capsys, tmp_path,
                                                                    extra, words):
  """Each of these used to run PySCF first: a NumPy ValueError, 50 never-converging SCFs (PySCF
  takes a negative tolerance), or a FileNotFoundError after every label was computed."""
  monkeypatch.setattr(labels, "converge", lambda *a, **k: pytest.fail("PySCF ran"))
  argv = ["--molecule", "water", "--basis", BASIS, "--n", "1", "--out", str(tmp_path / "w.npz")]
  assert load_tool("label").main(argv + extra) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith(f"error: {words}") and "\n" not in err
