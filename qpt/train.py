"""Label-free training: the DFT energy of the predicted Hamiltonian is the loss.

  conformer stream ──▶ batch of DFTProblems ──▶ H_θ = H_init + W_θ ──▶ E[D_k(H_θ)] ──▶ ∇θ ──▶ AdamW

One jitted step (params, optimizer state, batch → new state, metrics) donates its state. A step
whose loss or gradient is not finite leaves the state unchanged and is counted; after
`train.max_bad_steps` in a row training stops with a message — a checkpoint never holds a NaN.
Every energy written to metrics.jsonl is assembled on the host in float64 (reference + ΔE).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from typing import Any, Callable

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from qpt import checkpoint, conformers as conformers_lib, data, dft, evaluate, frame
from qpt import model as model_lib, plot
from qpt import molecules
from qpt.errors import InputError, TrainingError
from qpt.problem import DFTProblem

LOSSES = ("energy", "self_consistency")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
  """Everything a step changes. `step` counts attempted steps (skipped ones included)."""

  params: hk.Params
  opt_state: optax.OptState
  step: jax.Array


def make_optimizer(train_config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Global-norm clip → AdamW with linear warm-up and cosine decay to 1% of the peak."""
  steps = max(int(train_config.steps), int(train_config.warmup_steps) + 1)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train_config.learning_rate,
      warmup_steps=train_config.warmup_steps, decay_steps=steps,
      end_value=0.01 * train_config.learning_rate)
  tx = optax.chain(optax.clip_by_global_norm(train_config.clip_norm),
                   optax.adamw(schedule, weight_decay=train_config.weight_decay))
  return tx, schedule


def conformer_loss(loss: str, iterations: int, mixing) -> Callable:
  """(model, params, problem) → scalar loss for one conformer, in the problem's dtype.

  energy:           E[D_k(H_θ)] − E_ref (Hartree): the QPT loss (label-free).
  self_consistency: ‖H_θ − F[D(H_θ)]‖² / n_ao (Hartree²): label-free, as in Zhang et al. 2024.
  """
  if loss not in LOSSES:
    raise InputError(f"loss={loss!r}: choose one of {', '.join(LOSSES)}")
  mixing = dft.mixing_schedule(iterations, mixing)  # a wrong length fails here, not in jit

  def fn(model, params, problem: DFTProblem) -> jax.Array:
    h = model_lib.hamiltonian(model, params, problem)
    if loss == "energy":
      return dft.loss_energy_delta(problem, h, iterations, mixing)
    residual = h - dft.fock(problem, dft.density_matrix(problem, h))
    mask = problem.ao_mask[:, None] * problem.ao_mask[None, :]
    return jnp.sum((residual * mask) ** 2) / jnp.sum(problem.ao_mask)

  return fn


def make_train_step(model: hk.Transformed, tx: optax.GradientTransformation,
                    loss_fn: Callable, schedule: optax.Schedule) -> Callable:
  """The jitted step: (state, batch) → (state, metrics); batch is a stacked DFTProblem."""

  def step(state: TrainState, batch: DFTProblem):
    def batch_loss(params):
      per_conformer = jax.vmap(lambda p: loss_fn(model, params, p))(batch)
      return jnp.mean(per_conformer), per_conformer

    (loss, per_conformer), grads = jax.value_and_grad(batch_loss, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # A non-finite gradient must not reach the optimizer's moments: feed zeros, then keep the old
    # state whole (params and moments) by selecting, so a bad step is a no-op.
    safe_grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    updates, opt_state = tx.update(safe_grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = TrainState(keep(params, state.params), keep(opt_state, state.opt_state),
                           state.step + 1)
    metrics = dict(per_conformer=per_conformer, grad_norm=grad_norm, finite=finite,
                   lr=schedule(state.step))
    return new_state, metrics

  return jax.jit(step, donate_argnums=0)


def init_state(model: hk.Transformed, tx: optax.GradientTransformation, seed: int,
               example: DFTProblem, params: hk.Params | None = None) -> TrainState:
  """Fresh parameters (or the given ones, for fine-tuning) and a fresh optimizer state."""
  if params is None:
    single = jax.tree.map(lambda a: a[0], example)
    params = jax.jit(model.init)(jax.random.key(seed), single)
  return TrainState(params, tx.init(params), jnp.asarray(0, jnp.int32))


def batch_energies(batch: DFTProblem, per_conformer: Any) -> np.ndarray:
  """Per-conformer total energies (Hartree, float64): host reference + device ΔE."""
  from qpt.problem import reference_energy
  return np.atleast_1d(reference_energy(batch)) + np.asarray(per_conformer, np.float64)



# ---- the training run --------------------------------------------------------------------------

# Fields that may differ when resuming: they change neither the trajectory nor its meaning.
RESUMABLE_CHANGES = ("workdir", "mode", "init_from", "train.steps", "log_every", "checkpoint.every",
                     "checkpoint.keep", "eval.every", "eval.n_conformers", "data.workers",
                     "data.prefetch")


def run(config, progress: bool = True) -> None:
  """Entry point of experiments/md17.py: trains (mode=train) as `config` says."""
  if config.mode != "train":
    raise InputError(f"mode={config.mode!r}: this build supports mode=train only")
  train(config, progress)


def train(config, progress: bool = True) -> TrainState:
  """Trains, checkpointing as it goes; re-running the same config resumes from the last checkpoint."""
  workdir = os.path.abspath(config.workdir)
  os.makedirs(workdir, exist_ok=True)
  flat = _flatten(config.to_dict())
  saver = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.keep)
  resume_step = saver.latest_step()
  stream_state = None
  if resume_step is not None:
    meta = saver.meta(resume_step)
    _check_resumable(meta["config"], flat)
    stream_state = meta["stream"]
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(dict(config=flat, versions=_versions()), f, indent=1)

  model = model_lib.make_model(model_lib.model_config(config.model.size, remat=config.model.remat))
  tx, schedule = make_optimizer(config.train)
  loss_fn = conformer_loss(config.loss, config.iterations, config.mixing)
  step_fn = make_train_step(model, tx, loss_fn, schedule)
  sampler = conformers_lib.ThermalSampler(molecules.get(config.molecule), config.data.temperature,
                                          seed=config.seed, cache_dir=os.path.join(workdir, "cache"))
  level = data.Level(config.basis, config.xc, config.grid_level, config.eri, config.dtype)
  stream = data.ProblemStream(sampler, config.train.batch_size, level,
                              n_workers=config.data.workers, prefetch=config.data.prefetch,
                              mol_repeats=config.data.mol_repeats,
                              transform=frame.canonical_molecule, state=stream_state)
  with stream, _StopOnSignal() as stop:
    batch = next(stream)
    params = None
    if config.init_from and resume_step is None:
      like = jax.eval_shape(model.init, jax.random.key(0), jax.tree.map(lambda a: a[0], batch.problem))
      params = checkpoint.load_params(config.init_from, like)
    state = init_state(model, tx, config.seed, batch.problem, params)
    if resume_step is not None:
      state, _ = saver.restore(jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state))
    log = _Log(workdir, progress, config.train.steps)
    bad_in_a_row = 0
    for step in range(int(state.step), config.train.steps):
      batch = batch or next(stream)  # the first batch was already taken to size the model
      state, metrics = step_fn(state, batch.problem)
      finite = bool(metrics["finite"])
      bad_in_a_row = 0 if finite else bad_in_a_row + 1
      done = step + 1 == config.train.steps or stop.requested
      log.step(step + 1, batch, metrics, config.loss, finite,
               write=(step + 1) % config.log_every == 0 or done or not finite)
      batch = None
      if (step + 1) % config.checkpoint.every == 0 or done or bad_in_a_row >= config.train.max_bad_steps:
        saver.save(step + 1, state, dict(config=flat, stream=stream.state))
      if bad_in_a_row >= config.train.max_bad_steps:
        saver.wait()
        raise TrainingError(f"{bad_in_a_row} non-finite steps in a row (up to step {step + 1}); "
                            f"the last good state is checkpointed in {saver.directory}")
      if stop.requested:
        break
    saver.wait()
    log.close()
  plot.training_curves(workdir)
  if config.eval.n_conformers and not stop.requested:
    final_evaluation(config, model, state.params, workdir)
  return state


HELD_OUT_SEED_OFFSET = 1_000_003  # evaluation conformers come from a stream training never reads


def final_evaluation(config, model, params, workdir: str) -> dict:
  """Scores the model on `eval.n_conformers` held-out conformers against PySCF (float64) labels.

  Labels are cached in workdir/labels.npz; results go to workdir/eval.json and are printed beside
  the MINAO baseline (H_init, no model).
  """
  sampler = conformers_lib.ThermalSampler(
      molecules.get(config.molecule), config.data.temperature,
      seed=config.seed + HELD_OUT_SEED_OFFSET, cache_dir=os.path.join(workdir, "cache"))
  held_out = [frame.canonical_molecule(sampler(i)) for i in range(config.eval.n_conformers)]
  labels, _ = evaluate.label_cached(os.path.join(workdir, "labels.npz"), held_out, config.basis,
                                    config.xc, config.grid_level, config.eri)
  problems = evaluate.build_problems(labels, config.dtype)
  predict_h = jax.jit(lambda p: model_lib.hamiltonian(model, params, p))
  metrics = evaluate.evaluate(predict_h, problems, labels, config.iterations, config.mixing)
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump(metrics, f, indent=1)
  print(f"held-out {config.molecule} ({metrics['n_conformers']} conformers): energy MAE of "
        f"E[D(H_pred)] {metrics['energy_mae_uha']:.0f} µHa (MINAO baseline "
        f"{metrics['energy_mae_uha_minao']:.0f}), SCF-cycle ratio {metrics['scf_cycle_ratio']:.2f} "
        f"(baseline {metrics['scf_cycle_ratio_minao']:.2f}); metrics {workdir}/metrics.jsonl, "
        f"eval {workdir}/eval.json, curves {workdir}/training_curves.png, "
        f"checkpoints {workdir}/checkpoints")
  return metrics


def _check_resumable(saved: dict, wanted: dict) -> None:
  for key in sorted(set(saved) | set(wanted)):
    if key in RESUMABLE_CHANGES or saved.get(key) == wanted.get(key):
      continue
    raise InputError(f"workdir holds a run with {key}={saved.get(key)!r}, this config has "
                     f"{wanted.get(key)!r}: use another workdir (or init_from to fine-tune)")


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
  return out


def _versions() -> dict:
  import importlib.metadata as md
  return {p: md.version(p) for p in ("jax", "jaxlib", "dm-haiku", "optax", "pyscf", "numpy",
                                     "ml-collections", "orbax-checkpoint")}


class _StopOnSignal:
  """SIGTERM/SIGINT ask the loop to stop after the current step (and checkpoint), not mid-write."""

  def __enter__(self):
    self.requested = False
    self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)


class _Log:
  """metrics.jsonl (one object per log step) and a one-line progress display on a terminal."""

  def __init__(self, workdir: str, progress: bool, total_steps: int):
    self._file = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self._progress = progress and sys.stdout.isatty()
    self._total = total_steps
    self._start = time.perf_counter()
    self._wait = 0.0
    self._conformers = 0
    self._skipped = 0

  def step(self, step: int, batch, metrics: dict, loss: str, finite: bool, write: bool) -> None:
    self._wait += batch.wait_seconds
    self._conformers += batch.new_conformers
    self._skipped += not finite
    if not (write or self._progress):
      return
    per_conformer = np.asarray(metrics["per_conformer"], np.float64)
    value = (float(np.mean(batch_energies(batch.problem, per_conformer))) if loss == "energy"
             else float(np.mean(per_conformer)))
    elapsed = time.perf_counter() - self._start
    record = dict(step=step, loss=value, grad_norm=float(metrics["grad_norm"]),
                  lr=float(metrics["lr"]), finite=finite, skipped_steps=self._skipped,
                  unique_conformers_per_s=self._conformers / elapsed,
                  host_wait_fraction=self._wait / elapsed, seconds=elapsed)
    if write:
      self._file.write(json.dumps(record) + "\n")
      self._file.flush()
    if self._progress:
      print(f"\rstep {step}/{self._total}  loss {value:.6f}  {elapsed:.0f} s", end="", flush=True)

  def close(self) -> None:
    if self._progress:
      print()
    self._file.close()
