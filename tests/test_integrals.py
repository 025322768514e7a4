"""Host-side integrals against PySCF's own: ERI factors, grid, densities, reference energy."""

import numpy as np
import pytest
import pyscf.df
import pyscf.scf
from pyscf import dft, lib

import qpt
from qpt import integrals
from tests import pyscf_reference as ref


def water(basis="def2-svp"):
  return qpt.molecules.get("water").to_pyscf(basis)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_cholesky_factor_reproduces_every_integral(dtype):
  mol = water()
  dm = pyscf.scf.hf.init_guess_by_minao(mol)
  tol = integrals.CHOLESKY_TOL[dtype]
  b, (j, k) = integrals.repulsion(mol, "dense", dm, tol)
  eri = mol.intor("int2e").reshape(mol.nao**2, -1)
  b2 = b.reshape(len(b), -1)
  assert np.abs(b2.T @ b2 - eri).max() <= tol
  assert len(b) < mol.nao**2 // 2  # and it is much smaller than the 4-index tensor
  # J and K come from the exact integrals: within the factor's tolerance of contracting B.
  j_b, k_b = integrals.coulomb_exchange(b, dm)
  np.testing.assert_allclose(j, (eri @ dm.ravel()).reshape(dm.shape), atol=1e-12)
  np.testing.assert_allclose(j, j_b, atol=100 * tol)
  np.testing.assert_allclose(k, k_b, atol=100 * tol)
  # The Coulomb and exchange energies of the density stay well below a µHa.
  assert abs(np.vdot(dm, j_b - j)) < 1e-7 and abs(np.vdot(dm, k_b - k)) < 1e-7


def test_coulomb_and_exchange_of_any_symmetric_density():
  # Full rank and indefinite, unlike MINAO's: K through the eigen-decomposition must not assume it.
  mol = water()
  b, _ = integrals.repulsion(mol, "dense", np.eye(mol.nao), integrals.CHOLESKY_TOL["float64"])
  a = np.random.default_rng(1).standard_normal((mol.nao, mol.nao))
  dm = a + a.T
  eri = mol.intor("int2e")  # (ij|kl)
  j, k = integrals.coulomb_exchange(b, dm)
  np.testing.assert_allclose(j, np.einsum("ijkl,kl->ij", eri, dm), atol=1e-7)
  np.testing.assert_allclose(k, np.einsum("ikjl,kl->ij", eri, dm), atol=1e-7)


def test_pivoted_cholesky_of_a_low_rank_matrix():
  a = np.random.default_rng(0).standard_normal((5, 40))
  rows = integrals.pivoted_cholesky(a.T @ a, 1e-12)
  assert rows.shape == (5, 40)
  np.testing.assert_allclose(rows.T @ rows, a.T @ a, atol=1e-11)


def test_df_factor_is_pyscfs_density_fitting():
  mol = water()
  mf = dft.RKS(mol, xc="b3lyp5").density_fit(auxbasis=pyscf.df.make_auxbasis(mol))
  mf.with_df.build()
  dm = mf.get_init_guess(key="minao")
  j_ref, k_ref = mf.with_df.get_jk(dm)
  _, (j, k) = integrals.repulsion(mol, "df", dm)
  np.testing.assert_allclose(j, j_ref, atol=1e-10)
  np.testing.assert_allclose(k, k_ref, atol=1e-10)


def test_grid_and_density_are_pyscfs():
  mf = ref.rks("water", "def2-svp", "pbe")
  host = integrals.compute(mf.mol, qpt.Level(xc="pbe"))
  # Same pruned grid as the SCF PySCF ran (it prunes with the same MINAO density).
  np.testing.assert_array_equal(host.weights, mf.grids.weights)
  ao = mf._numint.eval_ao(mf.mol, mf.grids.coords, deriv=1)
  np.testing.assert_allclose(host.ao, ao, atol=1e-14)
  # e_xc(ρ0) per point sums to PySCF's own XC energy of the MINAO density (nr_rks).
  e_xc = mf._numint.nr_rks(mf.mol, mf.grids, "pbe", host.density_ref)[1]
  assert abs(np.dot(host.weights, host.exc_ref) - e_xc) < 1e-10
  lda = integrals.compute(mf.mol, qpt.Level(xc="lda,vwn"))
  assert lda.ao.shape == (1, *ao.shape[1:]) and lda.exc_ref.shape == (ao.shape[1],)


def test_reference_terms_are_pyscfs():
  mf = ref.rks("water", "def2-svp", "b3lyp5")
  host = integrals.compute(mf.mol, qpt.Level(xc="b3lyp5"))
  d0 = mf.get_init_guess(key="minao")
  np.testing.assert_allclose(host.density_ref, d0, atol=1e-14)
  assert abs(host.energy_ref - mf.energy_tot(d0)) < 1e-8
  # G0 + Vxc[D0] is PySCF's Fock matrix of the MINAO density.
  vxc = mf._numint.nr_rks(mf.mol, mf.grids, "b3lyp5", d0)[2]
  np.testing.assert_allclose(host.fock_ref_nonxc + vxc, mf.get_fock(dm=d0), atol=1e-8)
  np.testing.assert_allclose(host.exchange_ref, mf.get_k(dm=d0), atol=1e-8)
  # X orthonormalises the AO basis.
  x = host.orthogonalizer
  np.testing.assert_allclose(x.T @ host.overlap @ x, np.eye(mf.mol.nao), atol=1e-12)
  assert not np.tril(x, -1).any()  # exactly upper triangular: build.py's products rely on it
  assert host.occupation.sum() == mf.mol.nelectron
  assert host.energy_nuc == mf.mol.energy_nuc()


def test_unpacked_factors_are_symmetric():
  mol = water("sto-3g")
  b, _ = integrals.repulsion(mol, "df", np.eye(mol.nao))
  np.testing.assert_array_equal(b, b.transpose(0, 2, 1))
  assert np.array_equal(lib.unpack_tril(lib.pack_tril(b)), b)
