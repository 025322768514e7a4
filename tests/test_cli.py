"""The command-line tools' shared molecule arguments (`qpt.cli`): --xyz FILE | --molecule NAME,
with --charge applied to either."""

import argparse

import pytest

import qpt
from qpt import cli


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
