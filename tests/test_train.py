"""The train step: the energy loss falls, a non-finite step is a no-op, energies are float64."""

import functools

import jax
import numpy as np
import ml_collections
import pytest

import qpt
from experiments.configs import md17
from qpt import backends, labels, model as model_lib, train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def train_config(**overrides):
  c = ml_collections.ConfigDict(dict(steps=20, learning_rate=3e-3, warmup_steps=2,
                                     weight_decay=0.0, clip_norm=1.0))
  c.update(overrides)
  return c


@functools.cache
def water_batch():
  """Two water conformers (STO-3G, coarse grid), padded alike and stacked: a training batch."""
  mol = qpt.molecules.get("water")
  conformers = [mol, mol.with_positions(mol.positions * 1.02)]
  problems = [qpt.build_problem(m, basis="sto-3g", xc="b3lyp5", grid_level=1) for m in conformers]
  assert problems[0].shapes == problems[1].shapes
  return jax.tree.map(lambda *a: np.stack(a), *problems)


@functools.cache
def water_fock_labels():
  """PySCF's converged Fock matrices of `water_batch`'s conformers, zero-padded: (2, n, n)."""
  mol = qpt.molecules.get("water")
  conformers = [mol, mol.with_positions(mol.positions * 1.02)]
  reference = labels.label(conformers, qpt.Level("sto-3g", "b3lyp5", 1))
  n = water_batch().overlap.shape[-1]
  out = np.zeros((2, n, n), np.float32)
  out[:, :7, :7] = reference.fock
  return out


@functools.cache
def tiny_model():
  return model_lib.make_model(model_lib.model_config("tiny", d_model=32, n_layers=1, n_heads=2))


@functools.cache
def backend():
  """This process's devices (one CPU) as the default config's backend."""
  return backends.create(md17.get_config("water"))


@functools.cache
def compiled_step(loss="energy", iterations=1):
  """One compiled train step per loss, shared by the tests (compiling dominates their time)."""
  tx, schedule = train.make_optimizer(train_config())
  step = train.make_train_step(tiny_model(), tx, train.conformer_loss(loss, iterations, 0.0),
                               schedule, backend())
  return tx, step


@pytest.mark.parametrize("loss", ["energy", "self_consistency", "supervised"])
def test_loss_falls(loss):
  tx, step = compiled_step(loss)
  state = train.init_state(tiny_model(), tx, 0, water_batch(), backend())
  fock = water_fock_labels() if loss in train.LABELLED_LOSSES else None
  losses = []
  for _ in range(8):
    state, metrics = step(state, water_batch(), fock)
    assert bool(metrics["finite"])
    losses.append(float(np.mean(metrics["per_conformer"])))
  assert losses[-1] < losses[0]
  assert int(state.step) == 8


def test_non_finite_step_leaves_state_unchanged():
  tx, step = compiled_step()
  state = train.init_state(tiny_model(), tx, 0, water_batch(), backend())
  state, _ = step(state, water_batch(), None)
  before = jax.tree.map(np.array, (state.params, state.opt_state))
  poisoned = water_batch()
  poisoned = poisoned.__class__(**{**{f: getattr(poisoned, f) for f in poisoned.__dataclass_fields__},
                                   "fock_ref_nonxc_orth": poisoned.fock_ref_nonxc_orth * np.nan})
  state, metrics = step(state, poisoned, None)
  assert not bool(metrics["finite"])
  after = jax.tree.map(np.array, (state.params, state.opt_state))
  assert all(np.array_equal(a, b, equal_nan=True)
             for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
  assert int(state.step) == 2  # counted, though skipped


def test_batch_energies_are_float64_totals():
  batch = water_batch()
  model = tiny_model()
  params = jax.jit(model.init)(jax.random.key(0), jax.tree.map(lambda a: a[0], batch))
  deltas = [float(train.conformer_loss("energy", 0, 0.0)(model, params,
                                                          jax.tree.map(lambda a: a[i], batch), None))
            for i in range(2)]
  energies = train.batch_energies(batch.energy_ref, np.array(deltas, np.float32))
  assert energies.dtype == np.float64
  # At init H ≈ H_init: the energy is close to E[D(H_init)], within the first SCF step's reach.
  assert np.all(np.abs(energies - (-75.3)) < 0.2)


def test_warmup_then_decay():
  _, schedule = train.make_optimizer(train_config(steps=100, warmup_steps=10))
  assert float(schedule(0)) == 0.0 and float(schedule(10)) == pytest.approx(3e-3)
  assert float(schedule(100)) == pytest.approx(3e-5)


def test_supervised_loss_is_the_mean_squared_error_to_the_label():
  batch, fock = water_batch(), water_fock_labels()
  model = tiny_model()
  first = jax.tree.map(lambda a: a[0], batch)
  params = jax.jit(model.init)(jax.random.key(0), first)
  loss = train.conformer_loss("supervised", 0, 0.0)(model, params, first, fock[0])
  h = np.asarray(model_lib.hamiltonian(model, params, first), np.float64)[:7, :7]
  expected = np.mean((h - fock[0][:7, :7]) ** 2)  # real 7×7 block only: padding is masked out
  assert expected > 1e-6  # H_init is not the answer
  assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_unknown_loss_is_an_input_error():
  with pytest.raises(qpt.InputError, match="loss='mse'"):
    train.conformer_loss("mse", 0, 0.0)
