"""The QPT model: parameter budget, exact symmetries, padding, transfer, and a first gradient.

Problems are STO-3G / LDA / grid level 1, built in the canonical frame and padded to one common
shape (`shape()`), so the network compiles once for all of them; a deliberately bigger shape tests
padding. "Trained-like" parameters (output scale 1) make W O(1 Ha), so that the symmetry tolerances
(1e-5..1e-4 Ha, float32) are tight relative to W itself.
"""

import dataclasses
import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import qpt
from qpt import frame, model as qm
from qpt.build import bucket
from tests import jitted

CONFIG = qm.model_config("tiny", d_model=32, n_layers=2, n_heads=4)
MODEL = qm.make_model(CONFIG)
TARGETS = {"tiny": 5e6, "small": 20e6, "base": 80e6, "medium": 302e6}
BASIS, XC, GRID_LEVEL = "sto-3g", "lda,vwn", 1
CHUNK = 4096  # grid points per XC chunk (the default)


def build(molecule: qpt.Molecule, pad_to=None) -> qpt.dft.DFTProblem:
  return qpt.build_problem(molecule, basis=BASIS, xc=XC, grid_level=GRID_LEVEL, pad_to=pad_to)


@functools.cache
def canonical(name: str) -> qpt.Molecule:
  return frame.to_canonical(qpt.molecules.get(name))[0]


@functools.cache
def shape() -> tuple[int, ...]:
  """One padded shape that holds every test problem (ethanol with room for a rotated grid)."""
  n_ao, n_grid, n_aux, n_atoms, n_occ, *basis = build(canonical("ethanol")).shapes
  return n_ao, n_grid + CHUNK, bucket(n_aux + 16, 16), n_atoms, n_occ, *basis


@functools.cache
def problem(name: str) -> qpt.dft.DFTProblem:
  return build(canonical(name), shape())


@functools.cache
def params() -> hk.Params:
  """Initial parameters, from water."""
  return jax.jit(MODEL.init)(jax.random.key(0), problem("water"))


def with_unit_output_scale(parameters: hk.Params) -> hk.Params:
  """`parameters` with W's output scale raised to 1: W is O(1 Ha), so symmetry tests bite."""
  return hk.data_structures.map(
      lambda module, name, v: (jnp.full_like(v, -np.log(CONFIG.output_scale))
                               if name == "output_log_scale" else v), parameters)


@functools.cache
def trained_like_params() -> hk.Params:
  """Initial parameters with W's output scale raised to 1 (`with_unit_output_scale`)."""
  return with_unit_output_scale(params())


# Compiled separately, so a new padded shape or a batch recompiles the network only.
fock_of_minao = lambda p: jitted.fock(p, p.density_ref)
apply = jax.jit(MODEL.apply)


def predict(parameters: hk.Params, p: qpt.dft.DFTProblem) -> tuple[jax.Array, jax.Array]:
  """(H_init, W), both (n, n) Hartree."""
  h_init = fock_of_minao(p)
  return h_init, apply(parameters, p, h_init)


def energy_and_gradient(model: hk.Transformed, parameters: hk.Params, p: qpt.dft.DFTProblem):
  """E[D(H_θ)] − E_ref (Hartree) and its gradient w.r.t. θ, one jitted program. The problem is an
  argument: closed over, its arrays would be the program's constants, which XLA folds slowly."""
  loss = lambda q, p: qpt.dft.loss_energy_delta(p, qm.hamiltonian(model, q, p))
  return jax.jit(jax.value_and_grad(loss))(parameters, p)


def real_ao(p: qpt.dft.DFTProblem) -> int:
  return int(np.asarray(p.ao_mask).sum())


# ---- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", list(TARGETS))
def test_parameter_count_of_each_size_is_on_target(size):
  h_init = jnp.zeros(problem("water").overlap.shape, jnp.float32)
  shapes = jax.eval_shape(qm.make_model(qm.model_config(size)).init, jax.random.key(0),
                          problem("water"), h_init)  # abstract: medium is never materialised
  count = qm.parameter_count(shapes)
  assert 0.75 * TARGETS[size] <= count <= 1.25 * TARGETS[size], f"{size}: {count:,}"
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))


def test_parameters_from_water_run_unchanged_on_ethanol():
  def abstract(p):
    return jax.eval_shape(MODEL.init, jax.random.key(0), p, jnp.zeros(p.overlap.shape))
  small = build(canonical("water"))  # its own, smaller padded shape
  assert small.shapes[0] < problem("ethanol").shapes[0]
  assert jax.tree.map(lambda s: s.shape, abstract(small)) == jax.tree.map(
      lambda s: s.shape, abstract(problem("ethanol")))
  _, w = predict(params(), problem("ethanol"))
  assert np.all(np.isfinite(w)) and np.abs(w).max() > 0


def test_batches_of_problems_vmap():
  names = ["water", "ethanol"]
  singles = [predict(trained_like_params(), problem(name)) for name in names]
  batch = jax.tree.map(lambda *a: jnp.stack(a), *[problem(name) for name in names])
  h_init = jnp.stack([h for h, _ in singles])
  w_batch = jax.jit(jax.vmap(MODEL.apply, in_axes=(None, 0, 0)))(trained_like_params(), batch,
                                                                  h_init)
  for k, (_, w) in enumerate(singles):
    np.testing.assert_allclose(w_batch[k], w, atol=1e-5)


def test_elements_beyond_krypton_are_an_input_error():
  z = np.array(problem("water").atomic_numbers)
  z[0] = 53
  iodine = dataclasses.replace(problem("water"), atomic_numbers=z)
  with pytest.raises(qpt.InputError, match=r"Z=53"):
    qm.hamiltonian(MODEL, params(), iodine)


# ---- symmetries --------------------------------------------------------------------------------


def test_w_is_symmetric_and_blind_to_padding():
  p = problem("water")
  n = real_ao(p)
  _, w = map(np.asarray, predict(trained_like_params(), p))
  np.testing.assert_array_equal(w, w.T)
  assert not w[n:].any() and not w[:, n:].any()
  n_ao, n_grid, n_aux, n_atoms, n_occ, n_cart, n_atom_prim, n_atom_cart = p.shapes
  bigger = build(canonical("water"), (n_ao + 9, n_grid + CHUNK, n_aux + 16, n_atoms + 3, n_occ,
                                      n_cart + 4, n_atom_prim + 8, n_atom_cart + 4))
  # H_init's own padding invariance is the DFT's business (tests/test_dft_gradients.py);
  # reuse it here.
  h_init_bigger = np.zeros(bigger.overlap.shape, np.float32)
  h_init_bigger[:n_ao, :n_ao] = fock_of_minao(p)
  w_bigger = np.asarray(apply(trained_like_params(), bigger, h_init_bigger))
  assert np.abs(w).max() > 0.1  # O(1 Ha): the tolerance below is a real test
  np.testing.assert_allclose(w_bigger[:n, :n], w[:n, :n], atol=1e-5)
  assert not w_bigger[n:].any()


def ao_permutation(labels: np.ndarray, labels_permuted: np.ndarray, atom_map) -> np.ndarray:
  """index (n_real,): AO k of the permuted molecule is AO index[k] of the original."""
  where = {tuple(row): k for k, row in enumerate(labels.tolist()) if row[0] >= 0}
  return np.array([where[(atom_map[a], s, l, m)]
                   for a, s, l, m in labels_permuted.tolist() if a >= 0])


def test_permuting_atoms_permutes_the_hamiltonian():
  mol = canonical("ethanol")
  order = np.random.default_rng(0).permutation(mol.n_atoms)  # new atom i is old atom order[i]
  shuffled = qpt.Molecule.from_bohr(mol.atomic_numbers[order], mol.positions[order])
  p, q = problem("ethanol"), build(shuffled, shape())
  index = ao_permutation(np.asarray(p.orbital_labels), np.asarray(q.orbital_labels), order)
  assert sorted(index) == list(range(real_ao(p)))
  h_init, w = predict(trained_like_params(), p)
  h_init_q, w_q = predict(trained_like_params(), q)
  n = len(index)
  np.testing.assert_allclose(np.asarray(w_q)[:n, :n], np.asarray(w)[np.ix_(index, index)],
                             atol=1e-4)
  np.testing.assert_allclose(np.asarray(h_init_q)[:n, :n],
                             np.asarray(h_init)[np.ix_(index, index)], atol=1e-4)


# Methane with exact Td symmetry: its second moments tie in all three axes (frame.py's ties).
TETRAHEDRON = np.array([[0, 0, 0], [1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
METHANE = qpt.Molecule(["C", "H", "H", "H", "H"], 0.629 * TETRAHEDRON, name="methane")


@pytest.mark.parametrize("name", ["ethanol", "methane"])
def test_rotations_act_through_the_canonical_frame(name):
  mol = METHANE if name == "methane" else qpt.molecules.get(name)
  q_lab = Rotation.random(random_state=3).as_matrix()
  moved = mol.with_positions(mol.positions @ q_lab.T + np.array([1.0, -2.0, 0.5]))
  (can, rotation, _), (can_moved, rotation_moved, _) = map(frame.to_canonical, (mol, moved))
  p, p_moved = build(can, shape()), build(can_moved, shape())
  h_init, w = map(np.asarray, predict(trained_like_params(), p))
  h_init_moved, w_moved = map(np.asarray, predict(trained_like_params(), p_moved))
  np.testing.assert_allclose(w_moved, w, atol=1e-4)  # same canonical input, same prediction
  # In the lab frame, the moved molecule's H is the rotated H of the original.
  labels, n = np.asarray(p.orbital_labels), real_ao(p)
  h_lab = frame.ao_matrix_to_lab(h_init + w, labels, rotation)[:n, :n]
  h_lab_moved = frame.ao_matrix_to_lab(h_init_moved + w_moved, labels, rotation_moved)[:n, :n]
  r_ao = frame.rotation_matrix_ao(labels[:n], q_lab)
  np.testing.assert_allclose(h_lab_moved, r_ao @ h_lab @ r_ao.T, atol=1e-4)
  # Without the frame the network is not equivariant: fed the lab geometry, W changes.
  w_lab = np.asarray(predict(trained_like_params(), build(mol, shape()))[1])
  w_lab_rotated = np.asarray(predict(trained_like_params(), build(moved, shape()))[1])
  assert np.abs(w_lab_rotated[:n, :n] - r_ao @ w_lab[:n, :n] @ r_ao.T).max() > 1e-2


# ---- the untrained model and its gradient --------------------------------------------------------


def test_untrained_model_predicts_h_init_and_has_a_useful_gradient():
  p = problem("water")
  h_init, w = predict(params(), p)
  assert np.linalg.norm(w) < 1e-2 * np.linalg.norm(h_init)
  value, grads = energy_and_gradient(MODEL, params(), p)
  # Within chemical accuracy (1.6 mHa) of the MINAO-Fock energy: training starts from H_init.
  assert abs(value - jitted.loss_energy_delta(p, h_init)) < 1.6e-3
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(g)), path
    assert np.abs(g).max() > 0, path  # every parameter is connected to the energy


def test_remat_keeps_the_parameters_and_checkpoints_each_block():
  remat = qm.make_model(dataclasses.replace(CONFIG, remat=True))
  p, h_init = problem("water"), jnp.zeros(problem("water").overlap.shape, jnp.float32)
  shapes = jax.eval_shape(remat.init, jax.random.key(0), p, h_init)
  assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(jnp.shape, params())
  traced = lambda model: str(jax.make_jaxpr(model.apply)(params(), p, h_init))  # never compiled
  assert "remat" in traced(remat) and "remat" not in traced(MODEL)  # jax.checkpoint's primitive


def test_plain_output_scale_is_the_same_model_at_init_with_the_chain_rules_gradient():
  plain = qm.make_model(dataclasses.replace(CONFIG, log_output_scale=False))
  p = problem("water")
  plain_params = jax.jit(plain.init)(jax.random.key(0), p)
  assert set(plain_params["~"]) == {"output_scale", "readout_pair"}
  assert qm.config_from_params(plain_params).log_output_scale is False
  assert qm.config_from_params(params()).log_output_scale is True
  for module, weights in params().items():  # everything but the scale's parameter is shared
    for name, value in weights.items():
      if name != "output_log_scale":
        np.testing.assert_array_equal(plain_params[module][name], value)
  h_init = fock_of_minao(p)
  np.testing.assert_array_equal(jax.jit(plain.apply)(plain_params, p, h_init),
                                predict(params(), p)[1])

  # θ = log(s / s0): at θ = 0, d/dθ = s0 · d/ds
  log_scale = energy_and_gradient(MODEL, params(), p)[1]["~"]["output_log_scale"]
  scale = energy_and_gradient(plain, plain_params, p)[1]["~"]["output_scale"]
  np.testing.assert_allclose(log_scale, CONFIG.output_scale * scale, rtol=1e-4)


# ---- the readout's per-pair weights (pair_rank) --------------------------------------------------


def test_per_pair_readout_keeps_the_symmetries_and_learns():
  """pair_rank > 0 adds Σ_k f_k(i, j) ⟨u_ik, v_jk⟩ / √r to W: W stays symmetric bit for bit, zero
  on padding, permuted with the atoms; every new weight gets a gradient; the rank is read back
  from the parameters; and W's pair term really depends on the pair (not one weight per feature)."""
  pair_model = qm.make_model(dataclasses.replace(CONFIG, pair_rank=4))
  p, q = problem("water"), problem("ethanol")
  init = jax.jit(pair_model.init)(jax.random.key(0), p)
  assert qm.config_from_params(init).pair_rank == 4
  assert qm.config_from_params(params()).pair_rank == 0
  assert np.shape(init["readout_pair_query"]["w"]) == (CONFIG.d_model, 4 * qm.N_PAIR_FEATURES)
  trained_like = with_unit_output_scale(init)
  pair_apply = jax.jit(pair_model.apply)
  w = np.asarray(pair_apply(trained_like, q, fock_of_minao(q)))
  n = real_ao(q)
  np.testing.assert_array_equal(w, w.T)
  assert not w[n:].any() and np.abs(w).max() > 0.1
  # Permuted atoms: the per-pair weights follow their orbitals.
  mol = canonical("ethanol")
  order = np.random.default_rng(1).permutation(mol.n_atoms)
  shuffled = build(qpt.Molecule.from_bohr(mol.atomic_numbers[order], mol.positions[order]), shape())
  index = ao_permutation(np.asarray(q.orbital_labels), np.asarray(shuffled.orbital_labels), order)
  w_shuffled = np.asarray(pair_apply(trained_like, shuffled, fock_of_minao(shuffled)))
  np.testing.assert_allclose(w_shuffled[:n, :n], w[np.ix_(index, index)], atol=1e-4)
  # The pair term differs from the one-weight-per-feature model's with the same other weights.
  plain = {m: v for m, v in trained_like.items() if not m.startswith("readout_pair_")}
  assert np.abs(w - np.asarray(apply(plain, q, fock_of_minao(q)))).max() > 1e-2
  grads = energy_and_gradient(pair_model, init, p)[1]
  for module in ("readout_pair_query", "readout_pair_key"):
    assert np.abs(grads[module]["w"]).max() > 0 and np.all(np.isfinite(grads[module]["w"]))
  with pytest.raises(qpt.InputError, match="pair_rank"):
    qm.model_config("tiny", pair_rank=-1)
