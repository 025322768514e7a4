"""AO values evaluated on the device (`qpt.ao_values`) against PySCF's `eval_ao`, and the energy of
a problem built with `ao_on_device` against the host's AO values and PySCF's SCF."""

import dataclasses

import jax
import numpy as np
import pytest
from pyscf import dft as pyscf_dft

import qpt
from qpt import ao_values, integrals, labels, xc_quadrature
from tests import jitted, pyscf_reference as ref


def molecule_named(name: str) -> qpt.Molecule:
  """A built-in molecule, or "oxygen": one O atom (closed shell, 8 electrons), whose cc-pV5Z
  has h functions at a fraction of water's integrals."""
  return qpt.Molecule(["O"], [[0.0, 0.0, 0.0]]) if name == "oxygen" else qpt.molecules.get(name)


def pyscf_ao(molecule: str, basis: str, problem) -> tuple[np.ndarray, np.ndarray]:
  """(4, g, n_ao) PySCF's AO values and gradients, float64, on the problem's own points, and X."""
  mol = molecule_named(molecule).to_pyscf(basis)
  grids = labels.pyscf_rks(mol, problem.level, density_ref=np.asarray(
      problem.density_ref)[:mol.nao, :mol.nao]).grids
  x = integrals.orthogonalizer_of(mol.intor_symmetric("int1e_ovlp"))
  return pyscf_dft.numint.NumInt().eval_ao(mol, grids.coords, deriv=1), x


@pytest.mark.parametrize("molecule, basis", [
    ("water", "def2-qzvp"),  # s..g
    ("oxygen", "cc-pv5z"),  # h: the highest l of PySCF's bases
    ("ethanol", "def2-tzvp"),  # f on C and O, several atoms of each element
])
def test_values_and_gradients_match_pyscf(molecule, basis):
  """Float64: φ X equal to PySCF's to 1e-12 of each function's largest value, padded points and
  AOs exactly 0. Float32: the Cartesian values, taken to PySCF's real-spherical AOs in float64,
  within 1e-6 of each AO's largest (what float32 φ X adds is cond(S)'s business: the energy
  tests below and docs/numerics.md §2)."""
  build = lambda dtype: qpt.build_problem(molecule_named(molecule), basis=basis, xc="pbe",
                                          grid_level=0, dtype=dtype, xc_chunk=2048,
                                          eri="df", ao_on_device=True)  # DF: cheaper ERIs
  problem = build("float64")
  ao, x = pyscf_ao(molecule, basis, problem)
  g, n = ao.shape[1:]
  device = np.swapaxes(jax.jit(ao_values.orthonormal_all)(problem), 1, 2)  # (c, g, n)
  scale = lambda a: np.abs(a).max(axis=1, keepdims=True)  # per component and function
  assert np.max(np.abs(device[:, :g, :n] - ao @ x) / scale(ao @ x)) < 1e-12
  assert not device[:, g:].any() and not device[:, :, n:].any()

  problem = build("float32")
  cartesian = jax.jit(ao_values.cartesian, static_argnums=2)(problem, 0, problem.weights.shape[0])
  to_sph = integrals.cartesian_basis(molecule_named(molecule).to_pyscf(basis)).cart_to_sph
  spherical = np.stack([np.asarray(c, np.float64)[:len(to_sph)].T @ to_sph for c in cartesian])
  assert np.max(np.abs(spherical[:, :g] - ao) / scale(ao)) < 1e-6


def test_orbitals_path_and_held_values_give_the_host_energy_and_gradient():
  """ψ = φ_cart (T Y) chunk by chunk (k = 0) and the held φ X (k = 1, the SCF) give, in float64,
  the total energies and gradients of the host's AO values, though the device sums the whole
  E_xc where the host's problem sums E_xc[ρ] − E_xc[ρ0]."""
  water = qpt.molecules.get("ethanol")
  host = qpt.build_problem(water, basis="6-31g*", xc="b3lyp5", grid_level=1, dtype="float64")
  device = qpt.build_problem(water, basis="6-31g*", xc="b3lyp5", grid_level=1, dtype="float64",
                             ao_on_device=True)
  assert device.ao_orth is None and host.ao_orth is not None
  assert not np.asarray(device.exc_ref).any() and np.asarray(host.exc_ref).any()
  h = np.asarray(jitted.initial_fock(host))
  np.testing.assert_allclose(jitted.initial_fock(device), h, atol=1e-11)
  h = h + 0.01 * np.eye(len(h))  # away from the reference density's own Fock matrix
  value_and_grad = jax.jit(jax.value_and_grad(qpt.dft.loss_energy_delta, argnums=1),
                           static_argnums=2)
  for k in (0, 1):
    (e_host, g_host), (e_device, g_device) = (value_and_grad(p, h, k) for p in (host, device))
    # The device's E_ref leaves E_xc[D0] out (no AO values on the host): the totals agree.
    total = lambda p, e: qpt.dft.reference_energy(p) + float(e)
    assert abs(total(host, e_host) - total(device, e_device)) < 1e-11
    np.testing.assert_allclose(g_device, g_host, atol=1e-10)
  assert abs(qpt.dft.scf(host).energy - qpt.dft.scf(device).energy) < 1e-10


def test_float32_scf_with_ao_on_device_matches_pyscf():
  """Float32 with AO values made on the device: the SCF energy within 10 µHa of PySCF's float64 on
  uracil/def2-SVP (cond S ≈ 5e3, where a float32 X P Xᵀ was 59 µHa off; docs/numerics.md §2),
  wherever the SCF stops: forced to 12, 16, 20 and 24 iterations, at float32's floor of the
  commutator, the energies agree within 1.5 µHa (measured −4.0 … −4.6 µHa against PySCF). They
  spread over −3.6 … +11.7 µHa before the float32 rounding of P's core diagonal was subtracted
  and E_xc[D0] moved into E_ref (`eigen.projector`, `xc_quadrature.with_xc_reference`;
  numerics §4c).

  The density itself: made idempotent in float64 (McWeeny), PySCF's own energy of it is PySCF's
  SCF energy within 0.1 µHa (measured < 0.01)."""
  problem = qpt.build_problem(qpt.molecules.get("uracil"), basis="def2-svp", xc="b3lyp5",
                              eri="df", grid_level=1, ao_on_device=True)
  result = qpt.dft.scf(problem)
  assert result.converged
  mf = ref.rks("uracil", "def2-svp", "b3lyp5", eri="df", grid_level=1)
  assert abs(result.energy - mf.e_tot) < 1e-5
  stopped = [qpt.dft.scf(problem, commutator_tol=1e-9, max_iterations=n).energy
             for n in (12, 16, 20, 24)]
  assert max(stopped) - min(stopped) < 1.5e-6
  assert max(abs(e - mf.e_tot) for e in stopped) < 1e-5

  s = mf.get_ovlp()
  half = 0.5 * result.density[:len(s), :len(s)]  # idempotent in the S metric: Q S Q = Q
  for _ in range(3):
    qs = half @ s
    half = 3.0 * qs @ half - 2.0 * qs @ qs @ half
  assert 0.0 <= mf.energy_tot(dm=2.0 * half) - mf.e_tot < 1e-7


def test_xc_reference_on_the_device_is_the_hosts():
  """`xc_quadrature.with_xc_reference` of a float64 problem built with `ao_on_device`: e(ρ0) on
  every point and E_ref as the host computes them from its own AO values with libxc (to 1e-10); a
  problem that has them is returned unchanged."""
  water = qpt.molecules.get("water")
  kwargs = dict(basis="def2-svp", xc="b3lyp5", grid_level=1, dtype="float64")
  host = qpt.build_problem(water, **kwargs)
  device = xc_quadrature.with_xc_reference(qpt.build_problem(water, ao_on_device=True, **kwargs))
  np.testing.assert_allclose(device.exc_ref, host.exc_ref, rtol=0, atol=1e-10)
  assert abs(qpt.dft.reference_energy(device) - qpt.dft.reference_energy(host)) < 1e-10
  assert xc_quadrature.with_xc_reference(device) is device


def test_ao_on_device_must_be_a_bool():
  with pytest.raises(qpt.InputError, match="ao_on_device='yes'"):
    qpt.build_problem(qpt.molecules.get("water"), basis="sto-3g", ao_on_device="yes")


def test_a_problem_without_ao_values_is_a_fifth_of_the_bytes():
  """What a worker ships: the grid's points and the basis instead of φ X on every point
  (ethanol/def2-SVP at grid level 3: 139 → 22 MB)."""
  ethanol = qpt.molecules.get("ethanol")
  host = qpt.build_problem(ethanol, basis="def2-svp")
  device = qpt.build_problem(ethanol, basis="def2-svp", ao_on_device=True)
  size = lambda p: sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(p))
  assert size(device) < 0.25 * size(host)
  assert dataclasses.replace(device, ao_orth=host.ao_orth).shapes == host.shapes
