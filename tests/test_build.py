"""The host builder: size buckets, inert padding, growing, the float64 reference energy in a float32
pytree, PySCF's orbital order."""

import jax
import numpy as np
import pytest

import qpt
from qpt import build, integrals
from qpt.problem import reference_energy

PBE_STO3G = qpt.Level(basis="sto-3g", xc="pbe", grid_level=1)


def test_buckets_are_monotone_and_tight():
  sizes = [build.bucket(n, 4) for n in range(1, 2000)]
  assert all(s >= n and s % 4 == 0 for n, s in zip(range(1, 2000), sizes))
  assert sizes == sorted(sizes)
  assert all(s <= 1.125 * n + 4 for n, s in zip(range(1, 2000), sizes))
  assert len(set(sizes)) < 80  # few distinct programs to compile


def test_conformers_share_shapes():
  mol = qpt.molecules.get("water")
  moved = mol.with_positions(mol.positions * 1.03)
  shapes = {qpt.build_problem(m, basis="sto-3g", xc="pbe", grid_level=1).shapes
            for m in (mol, moved)}
  assert len(shapes) == 1


def test_padding_is_inert():
  water = qpt.molecules.get("water")
  host = integrals.compute(water.to_pyscf("sto-3g"), PBE_STO3G)
  p = qpt.build_problem(water, PBE_STO3G.with_dtype("float64"), xc_chunk=1024)
  n, g = len(host.occupation), len(host.weights)
  n_pad = p.shapes[0]
  assert n_pad > n and p.shapes[1] % 1024 == 0
  np.testing.assert_array_equal(p.overlap[n:, n:], np.eye(n_pad - n))
  np.testing.assert_array_equal(p.orthogonalizer[n:, n:], np.eye(n_pad - n))
  for a in (p.overlap, p.orthogonalizer, p.orthogonalizer_inv, p.density_ref, p.hcore,
            p.density_ref_orth, p.fock_ref_nonxc_orth, p.exchange_ref_orth):
    assert not a[n:, :n].any() and not a[:n, n:].any()
  assert not p.ao_orth[:, n:].any() and not p.ao_orth[..., g:].any() and not p.weights[g:].any()
  assert not p.exc_ref[g:].any()
  assert not p.eri_orth[:, n:].any() and not p.eri_orth[..., n:].any()
  n_occ = water.to_pyscf("sto-3g").nelectron // 2
  assert p.shapes[4] >= n_occ and not p.occupation[n_occ:].any() and p.ao_mask.sum() == n
  np.testing.assert_array_equal(p.occupation[:n_occ], 2.0)
  np.testing.assert_array_equal(p.weights[:g], host.weights)  # float64: exactly the host's


def test_orthonormal_fields_are_the_plain_transforms():
  """φ X and Xᵀ B_P X, formed with triangular BLAS products, against plain float64 matmuls."""
  water = qpt.molecules.get("water")
  level = qpt.Level(basis="def2-svp", xc="pbe", grid_level=1, eri="df", dtype="float64")
  host = integrals.compute(water.to_pyscf("def2-svp"), level)
  p = qpt.build_problem(water, level)
  x = host.orthogonalizer
  (n_aux, n, _), g = host.eri_factor.shape, len(host.weights)
  np.testing.assert_allclose(p.ao_orth[:, :n, :g], np.swapaxes(host.ao @ x, 1, 2), rtol=0,
                             atol=1e-13)
  np.testing.assert_allclose(p.eri_orth[:n_aux, :n, :n], x.T @ host.eri_factor @ x, rtol=0,
                             atol=1e-13)


def test_reference_energy_survives_float32():
  water = qpt.molecules.get("water")
  host = integrals.compute(water.to_pyscf("sto-3g"), PBE_STO3G)
  p = qpt.build_problem(water, PBE_STO3G, xc_chunk=1024)
  assert p.energy_ref.dtype == np.float32
  assert abs(reference_energy(p) - host.energy_ref) < 1e-11
  batch = jax.tree.map(lambda *a: np.stack(a), p, p)  # problems stack into batches
  np.testing.assert_allclose(reference_energy(batch), [host.energy_ref] * 2, atol=1e-11)


def test_pad_to_with_four_sizes_keeps_its_own_n_occ_and_basis_sizes():
  water = qpt.molecules.get("water")
  own = qpt.build_problem(water, PBE_STO3G, xc_chunk=1024)
  four = qpt.build_problem(water, PBE_STO3G, xc_chunk=1024, pad_to=own.shapes[:4])
  assert four.shapes == own.shapes


def test_pad_to_of_seven_sizes_drops_the_old_primitive_count():
  """A stream's shape from before the basis came in per-atom blocks (…, n_cart, n_prim): its
  n_prim counted all primitives, so it is dropped and the per-atom sizes are the problem's own."""
  water = qpt.molecules.get("water")
  own = qpt.build_problem(water, PBE_STO3G, xc_chunk=1024)
  old = own.shapes[:6] + (64,)
  assert qpt.build_problem(water, PBE_STO3G, xc_chunk=1024, pad_to=old).shapes == own.shapes


def test_pad_to_smaller_than_problem_is_an_error():
  with pytest.raises(qpt.InputError, match="smaller than the problem"):
    qpt.build_problem(qpt.molecules.get("water"), basis="sto-3g", pad_to=(4, 4096, 16, 4))


@pytest.mark.parametrize("ao_on_device", [False, True])
def test_grow_and_min_shape_pad_exactly_like_pad_to(ao_on_device):
  water = qpt.molecules.get("water")
  options = dict(xc_chunk=1024, ao_on_device=ao_on_device)
  small = qpt.build_problem(water, PBE_STO3G, **options)
  big_shape = tuple(s + d for s, d in zip(small.shapes, (4, 2048, 16, 4, 4, 4, 8, 4)))
  direct = qpt.build_problem(water, PBE_STO3G, pad_to=big_shape, **options)
  at_least = qpt.build_problem(water, PBE_STO3G, min_shape=big_shape[:1] + (0,) * 7, **options)
  assert (direct.ao_orth is None) == ao_on_device
  assert direct.shapes == big_shape and at_least.shapes == big_shape[:1] + small.shapes[1:]
  for other in (build.grow(small, big_shape), build.grow(at_least, big_shape)):
    leaves, tree = jax.tree.flatten(other)
    direct_leaves, direct_tree = jax.tree.flatten(direct)
    assert tree == direct_tree
    for x, y in zip(leaves, direct_leaves):
      assert x.dtype == y.dtype
      np.testing.assert_array_equal(x, y)


def test_orbital_labels_are_pyscfs():
  water = qpt.molecules.get("water")
  mol = water.to_pyscf("def2-svp")
  p = qpt.build_problem(water, qpt.Level("def2-svp", "pbe", 1), xc_chunk=1024)
  n = mol.nao
  labels = np.asarray(p.orbital_labels)
  # PySCF's labels: '0 O 2px', '1 H 1s', ...; ours count shells per (atom, l) from 0.
  for (atom, shell, l, m), text in zip(labels[:n], mol.ao_labels()):
    fields = text.split()
    assert int(fields[0]) == atom
    assert "spdfg"[l] in fields[2]
  assert (labels[n:] == -1).all()
  assert [tuple(x) for x in labels[3:9]] == [(0, 0, 1, 0), (0, 0, 1, 1), (0, 0, 1, 2),
                                            (0, 1, 1, 0), (0, 1, 1, 1), (0, 1, 1, 2)]
  np.testing.assert_array_equal(np.asarray(p.atomic_numbers)[:3], [8, 1, 1])
  assert not np.asarray(p.atomic_numbers)[3:].any()
  np.testing.assert_allclose(np.asarray(p.positions)[:3], mol.atom_coords(), rtol=1e-6)
