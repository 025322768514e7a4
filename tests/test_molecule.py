"""Molecules: units at the boundary, built-in geometries, and one-line errors for bad input."""

import numpy as np
import pytest
from pyscf import gto
from pyscf.data.nist import BOHR

import qpt

WATER_XYZ = """3
water
O 0.0 0.0 0.0
H 0.0 0.757 0.587
H 0.0 -0.757 0.587
"""


def test_angstrom_in_bohr_inside():
  mol = qpt.Molecule.from_xyz_text(WATER_XYZ)
  np.testing.assert_array_equal(mol.atomic_numbers, [8, 1, 1])
  np.testing.assert_allclose(mol.positions[1], np.array([0.0, 0.757, 0.587]) / BOHR, rtol=1e-15)
  np.testing.assert_allclose(mol.positions_angstrom[1], [0.0, 0.757, 0.587], rtol=1e-15)
  assert mol.n_electrons == 10


def test_constructors_agree(tmp_path):
  path = tmp_path / "water.xyz"
  path.write_text(WATER_XYZ)
  from_file = qpt.Molecule.from_xyz(path)
  from_symbols = qpt.Molecule(["O", "H", "H"], [[0, 0, 0], [0, 0.757, 0.587], [0, -0.757, 0.587]])
  mole = gto.M(atom="O 0 0 0; H 0 0.757 0.587; H 0 -0.757 0.587", basis="sto-3g")
  from_pyscf = qpt.Molecule.from_pyscf(mole)
  for other in (from_symbols, from_pyscf):
    np.testing.assert_array_equal(other.atomic_numbers, from_file.atomic_numbers)
    np.testing.assert_allclose(other.positions, from_file.positions, atol=1e-12)
  # And back: PySCF sees the same geometry and nuclear repulsion.
  np.testing.assert_allclose(from_file.to_pyscf("sto-3g").energy_nuc(), mole.energy_nuc(), rtol=1e-14)


def test_xyz_text_round_trip():
  mol = qpt.molecules.get("uracil")
  again = qpt.Molecule.from_xyz_text(mol.xyz_text())
  np.testing.assert_allclose(again.positions, mol.positions, atol=1e-7)


@pytest.mark.parametrize("name", qpt.molecules.names())
def test_builtin_geometries_are_sane(name):
  mol = qpt.molecules.get(name)
  assert mol.n_electrons % 2 == 0
  # Bonded neighbours: every atom has another within 1.6 Å, none closer than 0.9 Å.
  d = np.linalg.norm(mol.positions_angstrom[:, None] - mol.positions_angstrom[None], axis=-1)
  np.fill_diagonal(d, np.inf)
  assert 0.9 < d.min() and d.min(axis=1).max() < 1.6


def test_md17_molecules_are_built_in():
  for name in ["water", "ethanol", "malondialdehyde", "uracil", "aspirin", "benzene", "toluene",
               "naphthalene", "salicylic_acid"]:
    assert name in qpt.molecules.names()


@pytest.mark.parametrize("charge", [2, 2.0, np.int64(2), np.float32(2.0)])
def test_a_whole_charge_of_any_numeric_type_is_kept(charge):
  molecule = qpt.Molecule(["O", "H", "H"], [[0, 0, 0], [0, 0, 1], [0, 1, 0]], charge=charge)
  assert molecule.charge == 2 and type(molecule.charge) is int and molecule.n_electrons == 8


@pytest.mark.parametrize("make, fragment", [
    (lambda: qpt.Molecule(["O", "Xx"], [[0, 0, 0], [0, 0, 1]]), "unknown element 'Xx'"),
    (lambda: qpt.Molecule(["O", "200"], [[0, 0, 0], [0, 0, 1]]), "unknown element '200'"),
    (lambda: qpt.Molecule(["O", "Q"], [[0, 0, 0], [0, 0, 1]]), "unknown element 'Q'"),
    (lambda: qpt.Molecule(["U", "O"], [[0, 0, 0], [0, 0, 1.8]]),
     "atom 1: element 'U' (Z = 92) is past Rn (Z = 86)"),
    (lambda: qpt.Molecule(["O", "H", "H"], [[0, 0, 0], [0, 0, np.nan], [0, 1, 0]]),
     "atom 2 (H) has a non-finite coordinate"),
    (lambda: qpt.Molecule(["O", "H", "H"], [[0, 0, 0], [0, 0, 0.05], [0, 1, 0]]),
     "atoms 1 (O) and 2 (H) are 0.050 Å apart"),
    (lambda: qpt.Molecule(["O", "H"], [[0, 0, 0], [0, 0, 1]]), "odd count; only closed-shell"),
    (lambda: qpt.Molecule(["O", "H", "H"], [[0, 0, 0], [0, 0, 1], [0, 1, 0]], charge=1),
     "odd count"),
    (lambda: qpt.Molecule(["O", "H", "H"], [[0, 0, 0], [0, 0, 1], [0, 1, 0]], charge=0.5),
     "charge 0.5 is not a whole number"),
    (lambda: qpt.Molecule(["O", "H", "H"], [[0, 0, 0], [0, 0, 1], [0, 1, 0]], charge="neutral"),
     "charge 'neutral' is not a whole number"),
    (lambda: qpt.Molecule.from_xyz_text("4\nc\nO 0 0 0\nH 0 0 1\nH 0 1 0\n"),
     "line 1 says 4 atoms but 3 atom lines follow"),
    (lambda: qpt.Molecule.from_xyz_text("3\nc\nO 0 0 0\nH 0 zero 1\nH 0 1 0\n"),
     "line 4 has a bad number"),
    (lambda: qpt.Molecule.from_xyz_text("three\nc\nO 0 0 0\n"), "line 1 should be the atom count"),
    (lambda: qpt.Molecule.from_xyz_text("1\na\nHe 0 0 0\n1\nb\nHe 0 0 1\n"),
     "a trajectory (line 4 starts another frame)"),  # was "1 atoms but 4 atom lines follow"
    (lambda: qpt.Molecule.from_xyz("/nonexistent/water.xyz"), "cannot read"),
    (lambda: qpt.Molecule(None, [[0, 0, 0]]), "symbols None are not a list of elements"),
    (lambda: qpt.Molecule(["O", "H", "H"], np.eye(3) + 0.5j), "positions are complex"),
    (lambda: qpt.Molecule.from_bohr([8, 1.5, 1], np.eye(3)), "atom 2: unknown element 1.5"),
    (lambda: qpt.molecules.get("caffeine"), "unknown built-in molecule 'caffeine'"),
    (lambda: qpt.Molecule(["I", "I"], [[0, 0, 0], [0, 0, 2.7]]).to_pyscf("6-31g"),
     "basis '6-31g' is not defined for element I"),
    # a misspelt name was "basis 'def2-svpp' is not defined for element H"
    (lambda: qpt.molecules.get("water").to_pyscf("def2-svpp"), "unknown basis set 'def2-svpp'"),
    (lambda: qpt.Molecule(["I", "I"], [[0, 0, 0], [0, 0, 2.7]]).to_pyscf("def2-svp"),
     "basis 'def2-svp' describes I with an effective core potential"),
    (lambda: qpt.Molecule.from_pyscf(gto.M(atom="O 0 0 0; H 0 0 1", spin=1)), "spin 1"),
    # predicted an energy for H³⁻ (4 electrons, 2 orbitals) in one orbital
    (lambda: qpt.Molecule(["H"], [[0, 0, 0]], charge=-3).to_pyscf("sto-3g"),
     "4 electrons need 2 orbitals, but basis 'sto-3g' has 1 for it"),
    # a ghost was "unknown element 0"; finite nuclei were silently taken as points
    (lambda: qpt.Molecule.from_pyscf(gto.M(atom="H 0 0 0; H 0 0 0.74; ghost-H 0 0 3")),
     "atom 3 (GHOST-H) is a ghost atom"),
    (lambda: qpt.Molecule.from_pyscf(gto.M(atom="H 0 0 0; H 0 0 0.74", nucmod="G")),
     "finite nuclear model"),
    # was "a finite nuclear model": PySCF marks an ECP atom's nucleus so, and its charge is 6
    (lambda: qpt.Molecule.from_pyscf(gto.M(atom="O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59",
                                           basis="def2-svp", ecp={"O": "crenbl"})),
     "pyscf Mole uses an effective core potential for O; QPT is all-electron only"),
])
def test_bad_input_is_one_line(make, fragment):
  with pytest.raises(qpt.InputError) as info:
    make()
  message = str(info.value)
  assert fragment in message
  assert "\n" not in message
  assert isinstance(info.value, ValueError)


def test_an_xyz_file_saved_with_a_byte_order_mark_reads(tmp_path):
  """Windows editors start UTF-8 files with one; it read as the atom count '\ufeff3'."""
  path = tmp_path / "water.xyz"
  path.write_text("3\nwater\nO 0 0 0\nH 0 0 0.96\nH 0.93 0 -0.24\n", encoding="utf-8-sig")
  water = qpt.Molecule.from_xyz(path)
  assert water.symbols == ["O", "H", "H"] and water.positions_angstrom[1, 2] == 0.96


SULFATE = """5
Properties=species:S:1:pos:R:3 charge=-2 multiplicity=1 energy=-699.1
S 0.0 0.0 0.0
O 0.882 0.882 0.882
O -0.882 -0.882 0.882
O -0.882 0.882 -0.882
O 0.882 -0.882 -0.882
"""


def test_an_extended_xyz_comment_gives_the_charge(tmp_path):
  """Sulfate's file says charge=-2: read as neutral SO4 it has an even electron count too (48),
  so nothing else caught it and PySCF's energy came out for another molecule."""
  path = tmp_path / "sulfate.xyz"
  path.write_text(SULFATE)
  for molecule in (qpt.Molecule.from_xyz(path), qpt.Molecule.from_xyz_text(SULFATE, charge=-2)):
    assert molecule.charge == -2 and molecule.to_pyscf("sto-3g").nelectron == 50
  for text, charge, fragment in [
      (SULFATE, 0, "line 2 says charge=-2, but charge 0 was given"),
      (SULFATE.replace("multiplicity=1", "multiplicity=3"), None,
       "line 2 says multiplicity=3; only closed-shell"),
      (SULFATE.replace("charge=-2", 'charge="-1.5"'), None, "charge=-1.5, not a whole number"),
      (SULFATE.replace("charge=-2", "charge=minus"), None, "charge=minus, not a whole number")]:
    with pytest.raises(qpt.InputError, match=fragment):
      qpt.Molecule.from_xyz_text(text, charge=charge, name="sulfate")
  assert qpt.Molecule.from_xyz_text(SULFATE.replace(" charge=-2", ""), name="s").charge == 0
  assert qpt.Molecule.from_xyz_text(SULFATE.replace("=-2", "=-2.0"), name="s").charge == -2


def test_a_binary_file_is_not_an_xyz_file(tmp_path):
  path = tmp_path / "image.xyz"
  path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
  with pytest.raises(qpt.InputError, match="image.xyz: not a text file"):
    qpt.Molecule.from_xyz(path)


def test_a_pyscf_moles_electrons_decide_the_charge():
  """PySCF also takes the electron count itself (`mol.nelectron = 8`), which leaves mol.charge 0:
  such a water was read as neutral, 10 electrons."""
  mol = gto.M(atom="O 0 0 0; H 0 0.757 0.587; H 0 -0.757 0.587", basis="sto-3g")
  mol.nelectron = 8
  molecule = qpt.Molecule.from_pyscf(mol)
  assert (molecule.charge, molecule.n_electrons) == (2, 8)
  assert qpt.Molecule.from_pyscf(gto.M(atom="H 0 0 0; H 0 0 0.74", charge=-2)).charge == -2


def test_atomic_numbers_stored_as_floats_are_read_as_elements():
  """Datasets often store Z as floats; 8.0 is oxygen (1.5 is an error, above)."""
  positions = [[0, 0, 0.22], [0, 1.43, -0.89], [0, -1.43, -0.89]]
  water = qpt.Molecule.from_bohr(np.array([8.0, 1.0, 1.0]), positions)
  assert water.atomic_numbers.tolist() == [8, 1, 1] and water.symbols == ["O", "H", "H"]
