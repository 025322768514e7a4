"""The command-line tools' shared molecule arguments (`qpt.cli`): --xyz FILE | --molecule NAME,
with --charge applied to either."""

import argparse
import errno
import os

import pytest

import qpt
from qpt import cli
from tests.test_molecule import SULFATE


def parse(*argv):
  parser = argparse.ArgumentParser()
  cli.add_molecule_arguments(parser)
  return cli.molecule_from_arguments(parser.parse_args(argv))


@pytest.mark.parametrize("charge", [0, 2, -2])
def test_the_charge_reaches_a_built_in_molecule_and_an_xyz_file_alike(tmp_path, charge):
  """tools/scf.py --molecule water --charge 2 used to run neutral water (the charge was read only
  for --xyz): a silently wrong energy."""
  water = qpt.molecules.get("water")
  xyz = tmp_path / "water.xyz"
  xyz.write_text(water.xyz_text())
  for molecule in (parse("--molecule", "water", "--charge", str(charge)),
                   parse("--xyz", str(xyz), "--charge", str(charge))):
    assert molecule.charge == charge
    assert molecule.n_electrons == 10 - charge  # O + 2 H
    assert molecule.to_pyscf("sto-3g").nelectron == 10 - charge


def test_an_odd_electron_count_from_the_charge_is_one_input_error():
  with pytest.raises(qpt.InputError, match="water: 9 electrons \\(charge 1\\) is an odd count"):
    parse("--molecule", "water", "--charge", "1")


def test_a_value_starting_with_a_tilde_is_a_path_in_the_home_directory(tmp_path, monkeypatch):
  """The shell expands "--xyz ~/w.xyz" but leaves "--xyz=~/w.xyz" alone, which then named a
  directory "~" in the current one (an --out or --workdir made it)."""
  monkeypatch.setenv("HOME", str(tmp_path))
  parser = cli.OneLineParser()
  cli.add_molecule_arguments(parser)
  parser.add_argument("--out")
  args = parser.parse_args(["--xyz=~/w.xyz", "--out=~/runs/x"])
  assert (args.xyz, args.out) == (str(tmp_path / "w.xyz"), str(tmp_path / "runs" / "x"))
  assert parser.parse_args(["--molecule", "water"]).out is None


def test_an_xyz_files_own_charge_is_read_and_a_different_charge_flag_refused(tmp_path):
  """tools/scf.py --xyz anion.xyz ran the neutral molecule whatever the file's charge= said."""
  path = tmp_path / "sulfate.xyz"
  path.write_text(SULFATE)
  assert parse("--xyz", str(path)).charge == -2
  assert parse("--xyz", str(path), "--charge", "-2").charge == -2
  with pytest.raises(qpt.InputError, match="sulfate.xyz: line 2 says charge=-2, but charge 0"):
    parse("--xyz", str(path), "--charge", "0")
  assert parse("--molecule", "water").charge == 0


def test_a_write_the_machine_refuses_is_one_line_and_a_bug_still_a_traceback(capsys):
  """tools/label.py --out on a full disk raised from numpy's savez, after PySCF's work."""
  def full(args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "labels.npz")

  def missing(args):
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "QPT's own file")

  assert cli.run_and_print(full, argparse.Namespace(json=False), str) is None
  assert capsys.readouterr().err == "error: labels.npz: No space left on device\n"
  with pytest.raises(FileNotFoundError):
    cli.run_and_print(missing, argparse.Namespace(json=False), str)
