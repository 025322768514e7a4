"""The canonical frame and the AO representation of rotations, against PySCF's integrals."""

import functools

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import qpt
from qpt import frame, integrals

SPECIAL_ROTATIONS = [  # Euler-angle edge cases: identity, pure z turns, β = π
    np.eye(3),
    Rotation.from_euler("z", 0.7).as_matrix(),
    Rotation.from_euler("x", np.pi).as_matrix(),
    Rotation.from_euler("y", np.pi / 2).as_matrix(),
]


def moved(molecule: qpt.Molecule, seed: int) -> tuple[qpt.Molecule, np.ndarray]:
  """A random rigid motion of `molecule`: positions @ Qᵀ + t. Returns it and Q (3, 3)."""
  rng = np.random.default_rng(seed)
  q = Rotation.random(random_state=seed).as_matrix()
  return molecule.with_positions(molecule.positions @ q.T + rng.normal(0.0, 3.0, 3)), q


def one_electron(molecule: qpt.Molecule, basis: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """S, Hcore (n, n) Hartree from PySCF, and our orbital labels (n, 4)."""
  mol = molecule.to_pyscf(basis)
  hcore = mol.intor_symmetric("int1e_kin") + mol.intor_symmetric("int1e_nuc")
  return mol.intor_symmetric("int1e_ovlp"), hcore, integrals.orbital_labels(mol)


@functools.cache
def molecule(name: str) -> qpt.Molecule:
  return qpt.molecules.get(name)


@pytest.mark.parametrize("name", ["water", "ethanol", "uracil"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rigid_motions_share_the_canonical_geometry(name, seed):
  mol = molecule(name)
  other, _ = moved(mol, seed)
  canonical, rotation, center = frame.to_canonical(mol)
  canonical_other, _, _ = frame.to_canonical(other)
  np.testing.assert_allclose(canonical_other.positions, canonical.positions, rtol=0, atol=1e-10)
  np.testing.assert_allclose((mol.positions - center) @ rotation, canonical.positions, atol=1e-12)
  # The canonical molecule is its own canonical frame.
  again, rotation_again, center_again = frame.to_canonical(canonical)
  np.testing.assert_allclose(again.positions, canonical.positions, atol=1e-10)
  np.testing.assert_allclose(rotation_again, np.eye(3), atol=1e-10)
  np.testing.assert_allclose(center_again, 0.0, atol=1e-10)


def symmetric(name: str) -> qpt.Molecule:
  """Exactly symmetric geometries (Å), whose second moments tie: a spherical top (Td, Oh), a
  prolate and an oblate symmetric top (C3v, planar D6h) and a linear molecule."""
  ring = np.arange(6) * np.pi / 3
  third = np.arange(3) * 2 * np.pi / 3
  circle = lambda radius, angles, z: np.c_[radius * np.cos(angles), radius * np.sin(angles),
                                           np.full(len(angles), z)]
  geometries = {
      "methane": ("CHHHH", 0.629 * np.array([[0, 0, 0], [1, 1, 1], [1, -1, -1], [-1, 1, -1],
                                             [-1, -1, 1]])),
      "sf6": ("SFFFFFF", 1.56 * np.array([[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0],
                                          [0, -1, 0], [0, 0, 1], [0, 0, -1]])),
      "ammonia": ("NHHH", np.concatenate([[[0, 0, 0.38]], circle(0.94, third, 0.0)])),
      "benzene": ("C" * 6 + "H" * 6, np.concatenate([circle(1.39, ring, 0.0),
                                                    circle(2.47, ring, 0.0)])),
      "co2": ("COO", [[0, 0, 0], [0, 0, 1.16], [0, 0, -1.16]]),
  }
  symbols, positions = geometries[name]
  return qpt.Molecule(list(symbols), positions, name=name)


@pytest.mark.parametrize("name", ["methane", "sf6", "ammonia", "benzene", "co2"])
def test_tied_second_moments_still_give_every_rigid_motion_one_frame(name):
  """Where second moments tie, the eigensolver's axes follow the lab orientation; the frame
  takes them from the atoms instead (each differed by up to 6 Bohr between rotated copies)."""
  mol = symmetric(name)
  canonical = frame.to_canonical(mol)[0]
  for seed in range(4):
    other = frame.to_canonical(moved(mol, seed)[0])[0]
    np.testing.assert_allclose(other.positions, canonical.positions, rtol=0, atol=1e-10)
  again, rotation_again, _ = frame.to_canonical(canonical)
  np.testing.assert_allclose(again.positions, canonical.positions, atol=1e-10)
  if name != "co2":  # a linear molecule's axes 1 and 2: any pair, a symmetry (frame.py)
    np.testing.assert_allclose(rotation_again, np.eye(3), atol=1e-10)
  if name in ("methane", "sf6"):  # all three tie: axis 0 points at the first furthest atom
    first = canonical.positions[1]
    np.testing.assert_allclose(first[1:], 0.0, atol=1e-10)
    assert first[0] > 0


def test_frame_is_deterministic_right_handed_and_ordered():
  mol = molecule("ethanol")
  rotation, center = frame.canonical_frame(mol.atomic_numbers, mol.positions)
  again = frame.canonical_frame(mol.atomic_numbers.copy(), mol.positions.copy())
  np.testing.assert_array_equal(again[0], rotation)
  np.testing.assert_array_equal(again[1], center)
  np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
  assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-12)
  z = mol.atomic_numbers
  np.testing.assert_allclose(center, z @ mol.positions / z.sum(), atol=1e-12)
  p = (mol.positions - center) @ rotation
  second = np.einsum("i,ij,ik->jk", z, p, p)
  np.testing.assert_allclose(second, np.diag(np.diag(second)), atol=1e-10)  # principal axes
  assert np.all(np.diff(np.diag(second)) < 0)  # largest spread first
  third = np.einsum("i,ij->j", z, p**3)
  assert third[0] > 0 and third[1] > 0


def test_padding_atoms_do_not_move_the_frame():
  mol = molecule("water")
  z = np.concatenate([mol.atomic_numbers, [0, 0]])
  r = np.concatenate([mol.positions, np.zeros((2, 3))])
  for a, b in zip(frame.canonical_frame(z, r), frame.canonical_frame(mol.atomic_numbers,
                                                                     mol.positions)):
    np.testing.assert_allclose(a, b, atol=1e-14)


def test_mirror_symmetric_axis_takes_the_first_furthest_atom():
  # Exactly symmetric water in the xy plane: the H–H axis has no third moment; the first H decides.
  mol = qpt.Molecule.from_bohr([8, 1, 1], [[0.0, 0.7, 0.0], [-1.4, -0.5, 0.0], [1.4, -0.5, 0.0]])
  rotation, _ = frame.canonical_frame(mol.atomic_numbers, mol.positions)
  canonical = frame.to_canonical(mol)[0].positions
  assert canonical[1, 0] > 0 and canonical[2, 0] < 0
  assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_p_blocks_are_the_rotation_itself():
  labels = np.array([(0, 0, 1, m) for m in range(3)] + [(-1, -1, -1, -1)])
  for q in SPECIAL_ROTATIONS + [Rotation.random(random_state=5).as_matrix()]:
    r_ao = frame.rotation_matrix_ao(labels, q)
    np.testing.assert_allclose(r_ao[:3, :3], q, atol=1e-12)
    assert r_ao[3, 3] == 1.0 and not r_ao[3, :3].any()


def test_improper_rotations_are_rejected():
  with pytest.raises(ValueError, match="proper rotation"):
    frame.rotation_matrix_ao(np.zeros((1, 4), int), -np.eye(3))


@pytest.mark.parametrize("name,basis", [("water", "def2-svp"), ("ethanol", "def2-svp"),
                                        ("water", "def2-tzvp")])  # p, d and (tzvp) f shells
def test_integrals_of_a_rotated_molecule_are_rotated_integrals(name, basis):
  mol = molecule(name)
  s, hcore, labels = one_electron(mol, basis)
  for k, q in enumerate(SPECIAL_ROTATIONS + [moved(mol, 7)[1]]):
    other = mol.with_positions(mol.positions @ q.T + [0.3, -1.2, 2.0])
    s_other, hcore_other, _ = one_electron(other, basis)
    r_ao = frame.rotation_matrix_ao(labels, q)
    np.testing.assert_allclose(r_ao @ r_ao.T, np.eye(len(labels)), atol=1e-12)
    np.testing.assert_allclose(s_other, r_ao @ s @ r_ao.T, atol=1e-10, err_msg=f"rotation {k}")
    np.testing.assert_allclose(hcore_other, r_ao @ hcore @ r_ao.T, atol=1e-10,
                               err_msg=f"rotation {k}")


def test_canonical_integrals_map_back_to_the_lab():
  mol = molecule("ethanol")
  canonical, rotation, _ = frame.to_canonical(mol)
  s_lab, hcore_lab, labels = one_electron(mol, "def2-svp")
  s_can, hcore_can, _ = one_electron(canonical, "def2-svp")
  np.testing.assert_allclose(frame.ao_matrix_to_lab(s_can, labels, rotation), s_lab, atol=1e-10)
  np.testing.assert_allclose(frame.ao_matrix_to_lab(hcore_can, labels, rotation), hcore_lab,
                             atol=1e-10)
