"""The train step: the DFT energy of the predicted Hamiltonian is the loss.

  batch of DFTProblems ──▶ H_θ = H_init + W_θ ──▶ E[D_k(H_θ)] ──▶ ∇θ ──▶ clip ──▶ AdamW

One jitted step (params, optimizer state, batch → new state, metrics) donates its state. A step
whose loss or gradient is not finite leaves the state unchanged and reports it; the run
(`experiment.py`) counts such steps and stops after `train.max_bad_steps` in a row, so a checkpoint
never holds a NaN. Energies are reported as float64 totals assembled on the host (`batch_energies`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from qpt import dft
from qpt.errors import InputError
from qpt.model import hamiltonian
from qpt.problem import DFTProblem, reference_energy

LOSSES = ("energy", "self_consistency", "supervised")
LABELLED_LOSSES = ("supervised",)  # losses that need PySCF's Fock matrix for every conformer


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
  """Everything a step changes. `step` counts attempted steps (skipped ones included)."""

  params: hk.Params
  opt_state: optax.OptState
  step: jax.Array


def make_optimizer(train_config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Global-norm clip → AdamW with linear warm-up, the peak learning rate held until step
  `hold_fraction` × steps, then cosine decay to 1% of the peak at the last step. A field that
  cannot train (a learning rate that is not a positive number, …) is an InputError naming it."""
  for field, ok, need in (
      ("learning_rate", train_config.learning_rate > 0 and math.isfinite(train_config.learning_rate),
       "a positive finite number"),
      ("warmup_steps", train_config.warmup_steps >= 0, "≥ 0"),
      ("hold_fraction", 0 <= train_config.hold_fraction < 1, "≥ 0 and < 1"),
      ("weight_decay", train_config.weight_decay >= 0 and math.isfinite(train_config.weight_decay),
       "a finite number ≥ 0"),
      ("clip_norm", train_config.clip_norm > 0, "> 0 (inf: no clipping)")):
    if not ok:  # also NaN, which fails every comparison
      raise InputError(f"train.{field}={getattr(train_config, field)}: must be {need}")
  peak, warmup = train_config.learning_rate, int(train_config.warmup_steps)
  steps = max(int(train_config.steps), warmup + 1)
  hold = max(int(train_config.hold_fraction * steps), warmup)
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak),
       optax.cosine_decay_schedule(peak, steps - hold, alpha=0.01)], [warmup, hold])
  tx = optax.chain(clip_by_global_norm(train_config.clip_norm),
                   optax.adamw(schedule, weight_decay=train_config.weight_decay))
  return tx, schedule


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
  """optax.clip_by_global_norm (the same state, the same arithmetic), given the norm: `update`
  takes `grad_norm=`, which the backend sums in the same order on every layout. optax's own sums
  in XLA's order, which differs between a whole array and its shards, and a different last bit
  of the clipping factor moves every parameter (`qpt.backends.reduction`)."""

  def update(updates, state, params=None, *, grad_norm):
    del params

    def clip(t):
      return jax.lax.select(grad_norm < max_norm, t, (t / grad_norm.astype(t.dtype)) * max_norm)

    return jax.tree.map(clip, updates), state

  return optax.GradientTransformationExtraArgs(optax.init_empty_state, update)


def conformer_loss(loss: str, iterations: int, mixing,
                   self_consistency_weight: float = 0.0) -> Callable:
  """(problem, h, fock_label) → (loss, reported) for one conformer and the model's Hamiltonian
  h = H_θ (n, n) of it, in the problem's dtype: the scalar differentiated, and the value the run
  logs (ΔE for the energy loss).

  energy:           E[D_k(H_θ)] − E_ref (Hartree): the QPT loss (label-free), plus
                    self_consistency_weight × the self-consistency residual below (Hartree²,
                    weighted as Hartree; 0 = none). Reported: E[D_k(H_θ)] − E_ref alone.
  self_consistency: ‖H′_θ − F′[D(H_θ)]‖² / n_ao (Hartree²), orthonormal basis, the target held
                    constant (`dft.loss_self_consistency`): label-free, each step a damped Fock
                    iteration.
  supervised:       mean over real AO pairs of (H_θ − F_PySCF)² (Hartree²): fits labels, for
                    comparison runs; `fock_label` (n, n) is PySCF's converged Fock matrix.
  `fock_label` is ignored (and may be None) for the label-free losses.
  """
  if loss not in LOSSES:
    raise InputError(f"loss={loss!r}: choose one of {', '.join(LOSSES)}")
  mixing = dft.mixing_schedule(iterations, mixing)  # a wrong length fails here, not in jit
  weight = float(self_consistency_weight)
  if not weight >= 0.0:  # also NaN
    raise InputError(f"self_consistency_weight={self_consistency_weight}: must be ≥ 0")
  if weight and loss != "energy":
    raise InputError(f"self_consistency_weight={weight} is a term of loss='energy', not of "
                     f"loss={loss!r}")

  def fn(problem: DFTProblem, h: jax.Array, fock_label: jax.Array | None):
    if loss == "energy":
      energy = dft.loss_energy_delta(problem, h, iterations, mixing)
      if not weight:
        return energy, energy
      return energy + weight * dft.loss_self_consistency(problem, h), energy
    if loss == "self_consistency":
      residual = dft.loss_self_consistency(problem, h)
      return residual, residual
    mask = problem.ao_mask[:, None] * problem.ao_mask[None, :]
    squares = jnp.sum(((h - fock_label) * mask) ** 2) / jnp.sum(mask)
    return squares, squares

  return fn


def make_train_step(model: hk.Transformed, tx: optax.GradientTransformation,
                    loss_fn: Callable, schedule: optax.Schedule, backend) -> Callable:
  """The compiled step: (state, problems, fock_labels) → (state, metrics).

  `problems` is a stacked DFTProblem (global batch b leading, sharded by `backend.put_batch`);
  `fock_labels` (b, n, n) or None for the label-free losses. Each device differentiates the sum
  of its own conformers' losses; the backend sums the gradients over devices and divides by b
  (`Backend.data_parallel`), and gives their norm for the clip. metrics:
  per_conformer (b,) the loss's reported values (ΔE for the energy loss), energy_ref (b, 2) of
  the batch (for float64 totals on the host), grad_norm, finite, lr — all replicated.
  """

  def local_gradients(params, batch: DFTProblem, fock_labels):
    def total_loss(params):
      # Parameters are read through the backend's getter, which gathers sharded ones layer by
      # layer (FSDP). The backend maps the model and the loss over the conformers: batched where
      # that is safe and fastest, one at a time where the gradient must be summed in a fixed
      # order (`Backend.map_model`).
      hs = backend.map_model(
          lambda p, problem: hamiltonian(model, p, problem, backend.gather_parameter),
          params, batch)
      losses, reported = backend.map_conformers(loss_fn, batch, hs, fock_labels)
      return jnp.sum(losses), reported

    (_, per_conformer), grads = jax.value_and_grad(total_loss, has_aux=True)(params)
    return grads, per_conformer

  gradients = backend.data_parallel(local_gradients)

  def step(state: TrainState, batch: DFTProblem, fock_labels: jax.Array | None):
    grads, grad_norm, per_conformer = gradients(state.params, batch, fock_labels)
    loss = jnp.mean(per_conformer)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(_):
      updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_norm=grad_norm)
      return optax.apply_updates(state.params, updates), opt_state

    # A non-finite gradient must not reach the optimizer's moments: a bad step keeps the old state
    # whole (params and moments). A branch, not a select: the update is skipped, not computed and
    # discarded, and no extra pass over the state is made (they cost as much as Adam itself).
    params, opt_state = jax.lax.cond(finite, update, lambda _: (state.params, state.opt_state),
                                     None)
    new_state = TrainState(params, opt_state, state.step + 1)
    metrics = dict(per_conformer=per_conformer, energy_ref=batch.energy_ref, grad_norm=grad_norm,
                   finite=finite, lr=schedule(state.step))
    return new_state, metrics

  return backend.compile_step(step)


def init_state(model: hk.Transformed, tx: optax.GradientTransformation, seed: int,
               example: DFTProblem, backend, params: hk.Params | None = None) -> TrainState:
  """Fresh parameters (or the given ones, for fine-tuning) and a fresh optimizer state, laid out
  over the backend's devices as the state is (replicated, or sharded under FSDP). `example` is one
  problem or a stacked batch (host arrays)."""
  if params is None:
    if np.ndim(example.ao_mask) == 2:
      example = jax.tree.map(lambda a: a[0], example)
    # Initialised once, the same on every process and for every mesh, then placed.
    params = jax.tree.map(np.asarray, jax.jit(model.init)(jax.random.key(seed), example))
  params = backend.put_state(params)
  return TrainState(params, backend.make_state(tx.init, params), backend.put_state(np.int32(0)))


def batch_energies(energy_ref: np.ndarray, per_conformer: Any) -> np.ndarray:
  """Per-conformer total energies (Hartree, float64): E_ref (b, 2) as hi + lo, plus device ΔE."""
  return np.atleast_1d(reference_energy(energy_ref)) + np.asarray(per_conformer, np.float64)
