"""DFTProblem: size buckets, inert padding, the float64 reference energy in a float32 pytree."""

import jax
import numpy as np
import pytest

import qpt
from qpt import integrals, problem as problem_lib


def test_buckets_are_monotone_and_tight():
  sizes = [problem_lib.bucket(n, 4) for n in range(1, 2000)]
  assert all(s >= n and s % 4 == 0 for n, s in zip(range(1, 2000), sizes))
  assert sizes == sorted(sizes)
  assert all(s <= 1.125 * n + 4 for n, s in zip(range(1, 2000), sizes))
  assert len(set(sizes)) < 80  # few distinct programs to compile


def test_conformers_share_shapes():
  mol = qpt.molecules.get("water")
  moved = mol.with_positions(mol.positions * 1.03)
  shapes = {qpt.dft.build_problem(m, basis="sto-3g", xc="pbe", grid_level=1).shapes
            for m in (mol, moved)}
  assert len(shapes) == 1


def test_padding_is_inert():
  mol = qpt.molecules.get("water").to_pyscf("sto-3g")
  host = integrals.compute(mol, "pbe", grid_level=1)
  p = problem_lib.pad(host, "pbe", "float64", xc_chunk=1024)
  n, g = mol.nao, len(host.weights)
  n_pad = p.shapes[0]
  assert n_pad > n and p.shapes[1] % 1024 == 0
  np.testing.assert_array_equal(p.overlap[n:, n:], np.eye(n_pad - n))
  np.testing.assert_array_equal(p.orthogonalizer[n:, n:], np.eye(n_pad - n))
  for a in (p.overlap, p.orthogonalizer, p.orthogonalizer_inv, p.density_ref, p.hcore,
            p.density_ref_orth, p.fock_ref_nonxc_orth):
    assert not a[n:, :n].any() and not a[:n, n:].any()
  assert not p.ao_orth[..., n:].any() and not p.ao_orth[:, g:].any() and not p.weights[g:].any()
  assert not p.eri_orth[:, n:].any() and not p.eri_orth[..., n:].any()
  assert not p.occupation[n:].any() and p.ao_mask.sum() == n


def test_reference_energy_survives_float32():
  mol = qpt.molecules.get("water").to_pyscf("sto-3g")
  host = integrals.compute(mol, "pbe", grid_level=1)
  p = problem_lib.pad(host, "pbe", "float32", xc_chunk=1024)
  assert p.energy_ref.dtype == np.float32
  assert abs(problem_lib.reference_energy(p) - host.energy_ref) < 1e-11
  batch = jax.tree.map(lambda *a: np.stack(a), p, p)  # problems stack into batches
  np.testing.assert_allclose(problem_lib.reference_energy(batch), [host.energy_ref] * 2, atol=1e-11)


def test_pad_to_smaller_than_problem_is_an_error():
  with pytest.raises(qpt.InputError, match="smaller than the problem"):
    qpt.dft.build_problem(qpt.molecules.get("water"), basis="sto-3g", pad_to=(4, 4096, 16, 4))


def test_orbital_labels_are_pyscfs():
  mol = qpt.molecules.get("water").to_pyscf("def2-svp")
  p = problem_lib.pad(integrals.compute(mol, "pbe", grid_level=1), "pbe", "float32", 1024)
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
