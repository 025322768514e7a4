"""Every matmul of the energy, its gradient, the SCF, the model, prediction, evaluation and the train
step is lowered at full float32 precision — also when the caller asks JAX for bfloat16 globally,
as a TPU's default would be. Checked on the lowered programs (no accelerator needed)."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qpt
from experiments.configs import md17
from qpt import backends, dft, evaluate, inference, model, train
from tests import jitted

LEVEL = qpt.Level("sto-3g", "b3lyp5", 0)  # a GGA hybrid: every term of the energy
NETWORK = model.make_model(model.model_config("tiny", d_model=32, n_layers=1, n_heads=2))


@functools.cache
def problem(ao_on_device: bool = False):
  """Water; with ao_on_device, the program also evaluates the AO values (`qpt.ao_values`)."""
  return qpt.build_problem(qpt.molecules.get("water"), LEVEL, xc_chunk=1024,
                           ao_on_device=ao_on_device)


@functools.cache
def params():
  return jax.jit(NETWORK.init)(jax.random.key(0), problem())


def dots(lowered_text: str) -> list[str]:
  """The dot operations of a lowered (StableHLO) program, one line each."""
  return [line.strip() for line in lowered_text.splitlines()
          if re.search(r"stablehlo\.dot(_general)?\b", line)]


def not_full_precision(fn, *args) -> list[str]:
  """The dots of jit(fn)(*args) not at HIGHEST precision, lowered under a global bfloat16 default."""
  previous = jax.config.jax_default_matmul_precision
  jax.config.update("jax_default_matmul_precision", "bfloat16")
  try:
    text = jax.jit(fn).lower(*args).as_text()
  finally:
    jax.config.update("jax_default_matmul_precision", previous)
  found = dots(text)
  assert found, "the program has no dot at all: the check would prove nothing"
  return [line for line in found if "precision = [HIGHEST, HIGHEST]" not in line]


def test_the_check_sees_a_default_precision_dot():
  assert not_full_precision(lambda a: a @ a, jnp.ones((3, 3)))


@pytest.mark.parametrize("ao_on_device", [False, True])
@pytest.mark.parametrize("k, mixing", [(0, 0.0), (2, (0.5, 0.0))])
def test_loss_and_its_gradient(k, mixing, ao_on_device):
  loss = functools.partial(dft.loss_energy_delta, iterations=k, mixing=mixing)
  p = problem(ao_on_device)
  h = jitted.initial_fock(p)
  assert not_full_precision(jax.value_and_grad(loss, argnums=1), p, h) == []


@pytest.mark.parametrize("ao_on_device", [False, True])
def test_energy_fock_and_orbitals(ao_on_device):
  p = problem(ao_on_device)
  d = np.asarray(p.density_ref)
  for fn, args in ((dft.delta_energy, (p, d)), (dft.fock, (p, d)), (dft.orbitals, (p, d)),
                   (dft.initial_fock, (p,))):
    assert not_full_precision(fn, *args) == [], fn.__name__


@pytest.mark.parametrize("ao_on_device", [False, True])
def test_scf(ao_on_device):
  p = problem(ao_on_device)
  args = (p, p.density_ref_orth, jnp.float32(0), jnp.float32(1e-7), jnp.float32(1e-4),
          jnp.asarray(50))
  for extrapolate_last in (False, True):  # scf, refine
    loop = functools.partial(dft._scf_loop, diis_space=8, extrapolate_last=extrapolate_last)
    assert not_full_precision(loop, *args) == []


def test_model_prediction_and_evaluation():
  h = lambda params, p: model.hamiltonian(NETWORK, params, p)
  assert not_full_precision(h, params(), problem()) == []
  assert not_full_precision(jax.grad(lambda w, p: jnp.sum(h(w, p))), params(), problem()) == []
  assert not_full_precision(functools.partial(inference._predict_device, NETWORK), params(),
                            problem()) == []
  outputs = lambda p, h: evaluate._device_outputs(p, h, (0.5, 0.0))
  assert not_full_precision(outputs, problem(), jitted.initial_fock(problem())) == []


def test_train_step():
  backend = backends.create(md17.get_config("water"))
  optimizer, schedule = train.make_optimizer(md17.get_config("water").train)
  loss_fn = train.conformer_loss("energy", 1, 0.0)
  step = train.make_train_step(NETWORK, optimizer, loss_fn, schedule, backend)
  batch = jax.tree.map(lambda a: np.stack([a, a]), problem())
  state = train.init_state(NETWORK, optimizer, 0, batch, backend)
  assert not_full_precision(step, state, backend.put_batch(batch), None) == []
