"""Molecule sets: QM9 from qm9pack's CSV and from its own xyz files (real rows), folders and
tarballs of .xyz, size limits, the split by molecule, and the conformer stream over a set."""

import csv
import os
import tarfile

import numpy as np
import pytest
from pyscf.data.nist import BOHR

import qpt
from qpt import conformers, data, molecule_sets as ms
from qpt.level import Level

DATA = os.path.join(os.path.dirname(__file__), "data")
QM9PACK = os.path.join(DATA, "qm9pack")  # 10 rows of qm9pack's qm9_part1.csv, verbatim
QM9_XYZ = os.path.join(DATA, "qm9_xyz")  # 3 of them in QM9's own xyz layout


def csv_rows():
  """The fixture's rows as qm9pack's own reader would see them: name → (elements, Å)."""
  with open(os.path.join(QM9PACK, "qm9_part1.csv"), newline="") as f:
    return {r["XYZ_file"][:-4]: (eval(r["Elements"]), np.array(eval(r["XYZ_Ang"])))
            for r in csv.DictReader(f)}


def test_qm9pack_rows_are_read_in_angstrom():
  molecules = ms.read_qm9pack(QM9PACK)
  rows = csv_rows()
  assert [m.name for m in molecules] == list(rows)  # file order, QM9's own names
  for m in molecules:
    symbols, xyz = rows[m.name]
    assert m.symbols == symbols
    np.testing.assert_allclose(m.positions * BOHR, xyz, rtol=0, atol=1e-12)


def test_qm9_xyz_files_folder_and_tarball_agree_with_the_csv(tmp_path):
  from_csv = {m.name: m for m in ms.read_qm9pack(QM9PACK)}
  tarball = tmp_path / "qm9.tar.bz2"
  with tarfile.open(tarball, "w:bz2") as tar:
    tar.add(QM9_XYZ, arcname="dsgdb9nsd")
  for source in (QM9_XYZ, str(tarball)):
    found = ms.read(source)
    assert [m.name for m in found] == ["dsgdb9nsd_000001", "dsgdb9nsd_000004", "dsgdb9nsd_000014"]
    for m in found:  # the `*^` exponent and the fifth column are QM9's; the atoms are the same
      np.testing.assert_array_equal(m.atomic_numbers, from_csv[m.name].atomic_numbers)
      np.testing.assert_allclose(m.positions, from_csv[m.name].positions, rtol=0, atol=1e-12)


def test_a_folder_of_ordinary_xyz_files(tmp_path):
  for name in ("water", "ethanol"):
    (tmp_path / f"{name}.xyz").write_text(qpt.molecules.get(name).xyz_text())
  (tmp_path / "notes.txt").write_text("not a molecule")
  found = ms.read(str(tmp_path))
  assert [m.name for m in found] == ["ethanol.xyz", "water.xyz"]  # as Molecule.from_xyz names
  np.testing.assert_allclose(found[1].positions, qpt.molecules.get("water").positions, atol=1e-7)


def test_the_installed_qm9pack_holds_all_of_qm9_with_these_rows():
  """The registry's qm9pack (a test dependency): its first rows are the fixture's, and the size
  limit is applied before geometries are parsed (all 130,831 rows: a few seconds)."""
  small = ms.read("qm9", ms.SizeLimit(max_heavy_atoms=2))
  assert len(small) == 3 + 5  # QM9's 1- and 2-heavy-atom molecules
  fixture = {m.name: m for m in ms.read_qm9pack(QM9PACK)}
  for m in small:
    if m.name in fixture:
      np.testing.assert_array_equal(m.positions, fixture[m.name].positions)


def test_size_limits_count_heavy_atoms_electrons_and_orbitals():
  found = ms.read_qm9pack(QM9PACK)
  by_name = lambda limit: [m.name[-2:] for m in ms.read_qm9pack(QM9PACK, limit)]
  assert by_name(ms.SizeLimit(max_heavy_atoms=1)) == ["01", "02", "03"]
  assert by_name(ms.SizeLimit(max_electrons=10)) == ["01", "02", "03"]
  # n_ao is PySCF's own count in the basis named.
  ethanol = next(m for m in found if m.name.endswith("14"))
  n_ao = ethanol.to_pyscf("def2-svp").nao_nr()
  assert "14" in by_name(ms.SizeLimit(max_n_ao=n_ao, basis="def2-svp"))
  assert "14" not in by_name(ms.SizeLimit(max_n_ao=n_ao - 1, basis="def2-svp"))


def test_graph_key_names_the_compound_not_the_geometry_or_atom_order():
  water, ethanol = qpt.molecules.get("water"), qpt.molecules.get("ethanol")
  qm9 = {m.name[-2:]: m for m in ms.read_qm9pack(QM9PACK)}
  assert ms.graph_key(qm9["03"]) == ms.graph_key(water)  # QM9's water is MD17's water
  assert ms.graph_key(qm9["14"]) == ms.graph_key(ethanol)
  assert ms.graph_key(qm9["15"]) != ms.graph_key(ethanol)  # dimethyl ether: same atoms
  hot = conformers.ThermalSampler(ethanol, 500.0, hess=np.load(
      os.path.join(DATA, "ethanol_rhf_sto3g_hessian.npy")))(3)
  order = np.random.default_rng(0).permutation(ethanol.n_atoms)
  shuffled = qpt.Molecule.from_bohr(hot.atomic_numbers[order], hot.positions[order])
  assert ms.graph_key(shuffled) == ms.graph_key(ethanol)
  kept = [m.name[-2:] for m in ms.without_builtins(qm9.values())]
  assert "03" not in kept and "14" not in kept and "15" in kept and len(kept) == 8


def test_the_split_is_by_molecule_disjoint_and_seeded():
  found = ms.read_qm9pack(QM9PACK)
  split = ms.split_by_molecule(found, (0.6, 0.2, 0.2), seed=3)
  names = {k: {m.name for m in v} for k, v in split.items()}
  assert [len(v) for v in names.values()] == [6, 2, 2]
  assert set.union(*names.values()) == {m.name for m in found}
  assert not (names["train"] & names["test"] or names["train"] & names["validation"]
              or names["validation"] & names["test"])
  again = ms.split_by_molecule(found, (0.6, 0.2, 0.2), seed=3)
  assert {k: [m.name for m in v] for k, v in again.items()} == {
      k: [m.name for m in v] for k, v in split.items()}
  other = ms.split_by_molecule(found, (0.6, 0.2, 0.2), seed=4)
  assert {m.name for m in other["test"]} != names["test"]


def test_the_stream_over_a_set_is_deterministic_and_resumes():
  """Conformer i is a pure function of (set, seed, i): a stream restored from its state yields the
  uninterrupted stream's next batches bit for bit, with several molecules (sizes) per batch."""
  found = [m for m in ms.read_qm9pack(QM9PACK) if m.name[-2:] in ("01", "03", "06", "08")]
  sampler = ms.MoleculeSetSampler(found, 500.0, seed=7)
  level = Level("sto-3g", "lda,vwn", 0)
  with data.ProblemStream(sampler, 2, level) as stream:
    batches = [next(stream) for _ in range(3)]
  with data.ProblemStream(ms.MoleculeSetSampler(found, 500.0, seed=7), 2, level) as first:
    next(first)
    state_after_one = first.state
  with data.ProblemStream(ms.MoleculeSetSampler(found, 500.0, seed=7), 2, level,
                          state=state_after_one) as resumed:
    for expected in batches[1:]:
      got = next(resumed)
      np.testing.assert_array_equal(got.indices, expected.indices)
      for a, b in zip(jax_leaves(got.problem), jax_leaves(expected.problem)):
        np.testing.assert_array_equal(a, b)
  molecules_seen = {sampler.molecule_index(i) for i in range(6)}
  assert len(molecules_seen) > 1
  for i in range(6):  # thermal, not the equilibrium geometry, bonds intact
    molecule = found[sampler.molecule_index(i)]
    x = sampler(i).positions
    assert 0 < np.abs(x - molecule.positions).max() and conformers.bonds_intact(molecule, x)


def jax_leaves(tree):
  import jax
  return [np.asarray(a) for a in jax.tree.leaves(tree)]


def test_held_out_molecules_start_at_equilibrium():
  found = ms.read_qm9pack(QM9PACK)[:3]
  held_out = ms.HeldOutMolecules(found, per_molecule=2, seed=1)
  assert len(held_out) == 6
  for i in range(6):
    m = held_out(i)
    assert m.name == found[i // 2].name
    assert np.array_equal(m.positions, found[i // 2].positions) == (i % 2 == 0)
  with pytest.raises(qpt.InputError, match="does not exist"):
    held_out(6)


@pytest.mark.parametrize("make, words", [
    (lambda p: p, ["holds no .xyz file"]),
    (lambda p: p / "missing", ["no such folder or file"]),
    (lambda p: (p / "bad.xyz").write_text("2\nx\nC 0 0 0\n") and p, ["bad.xyz", "says 2 atoms"]),
    (lambda p: (p / "xx.xyz").write_text("1\nx\nXx 0 0 0\n") and p, ["unknown element 'Xx'"]),
    (lambda p: (p / "dsgdb9nsd_000001.xyz").write_text("5\ngdb 1\nC 0 0\n") and p,
     ["dsgdb9nsd_000001.xyz", "not a QM9 xyz file"]),
    (lambda p: (p / "fake.tar").write_text("not a tarball") and p / "fake.tar",
     ["fake.tar", "not a folder or a readable tarball"]),
    (lambda p: (p / "qm9_part1.csv").write_text("a,b\n1,2\n") and p,
     ["qm9_part1.csv", "no column XYZ_file"]),
])
def test_unreadable_sets_are_one_line_errors_naming_the_file(tmp_path, make, words):
  with pytest.raises(qpt.InputError) as error:
    ms.read(str(make(tmp_path)))
  message = str(error.value)
  assert "\n" not in message and all(w in message for w in words), message


def test_a_limit_that_leaves_nothing_names_the_limit():
  with pytest.raises(qpt.InputError, match="no molecule within max_heavy_atoms=1, "
                                           r"max_n_ao=3 \(sto-3g\)"):
    ms.read_qm9pack(QM9PACK, ms.SizeLimit(max_heavy_atoms=1, max_n_ao=3, basis="sto-3g"))
  with pytest.raises(qpt.InputError, match="max_electrons=-1"):
    ms.SizeLimit(max_electrons=-1)
  with pytest.raises(qpt.InputError, match="unknown basis set 'no-such-basis'"):
    ms.read_qm9pack(QM9PACK, ms.SizeLimit(max_n_ao=10, basis="no-such-basis"))
