"""One experiment as a config describes it: conformer sources → training run → evaluation.

  config ──▶ conformer sources (train / validation / test, disjoint)
         ──▶ train: ProblemStream ──▶ jitted step ──▶ checkpoints, metrics.jsonl, validation
         ──▶ final evaluation on held-out conformers against PySCF (float64) ──▶ eval.json

`run(config)` is what experiments/md17.py calls: mode=train trains (resuming from the workdir's
latest checkpoint if there is one) and ends with the final evaluation; mode=eval only evaluates
the workdir's (or `init_from`'s) latest parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
from typing import Callable

import jax
import numpy as np

from qpt import backends, checkpoint, conformers, data, evaluate, frame, integrals
from qpt import model as model_lib
from qpt import metrics_log, molecules, plot, train as train_lib, xc as xc_lib
from qpt.errors import InputError, TrainingError
from qpt.molecule import Molecule
from qpt.problem import DTYPES, build_problem

MODES = ("train", "eval")
# Each conformer set is its own sampler stream, so they never share a conformer.
VALIDATION_SEED_OFFSET = 500_009
HELD_OUT_SEED_OFFSET = 1_000_003
# Fields that may differ when resuming: they change neither the trajectory nor its meaning.
# The device layout is among them: a checkpoint restores on any mesh (the trajectory then agrees
# to float32 rounding, bitwise only on the same devices).
RESUMABLE_CHANGES = ("workdir", "mode", "init_from", "train.steps", "log_every", "checkpoint.every",
                     "checkpoint.keep", "eval.every", "eval.n_conformers", "eval.n_validation",
                     "data.workers", "data.prefetch", "backend.name", "backend.cpu_devices",
                     "backend.emulate", "backend.coordinator_address", "backend.num_processes",
                     "backend.process_id", "mesh.data", "mesh.model")


def run(config, progress: bool = True) -> dict | None:
  """Entry point of experiments/md17.py. Returns the final evaluation's metrics (if it ran)."""
  if config.mode == "eval":
    return evaluate_checkpoint(config)
  return train(config, progress)


def check_config(config) -> None:
  """One-line InputError for a config that cannot run, before anything is computed or written."""
  if config.mode not in MODES:
    raise InputError(f"mode={config.mode!r}: choose one of {', '.join(MODES)}")
  train_lib.conformer_loss(config.loss, config.iterations, config.mixing)  # loss and mixing
  model_lib.model_config(config.model.size)
  xc_lib.functional(config.xc)
  if config.eri not in integrals.ERI_MODES:
    raise InputError(f"eri={config.eri!r}: choose one of {', '.join(integrals.ERI_MODES)}")
  if config.dtype not in DTYPES:
    raise InputError(f"dtype={config.dtype!r}: choose one of {', '.join(DTYPES)}")
  if not config.data.md17_file:
    molecules.get(config.molecule)
  for key in ("train.steps", "train.batch_size", "log_every", "checkpoint.every",
              "checkpoint.keep", "data.mol_repeats"):
    section, field = key.split(".") if "." in key else (None, key)
    value = (config[section] if section else config)[field]
    if value < 1:
      raise InputError(f"{key}={value}: must be at least 1")


# ---- conformer sources --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sources:
  """Three disjoint conformer sources (index → Molecule): training, validation, test."""

  train: Callable[[int], Molecule]
  validation: Callable[[int], Molecule]
  test: Callable[[int], Molecule]


def sources(config, workdir: str) -> Sources:
  """Thermal samples around the built-in geometry, or the frames of an MD17 file's splits."""
  if config.data.md17_file:
    trajectory = conformers.load_md17(config.data.md17_file)
    sizes = {k: int(config.data.md17_split[k]) for k in ("train", "validation", "test")}
    for key, n in (("validation", config.eval.n_validation), ("test", config.eval.n_conformers)):
      if n > sizes[key]:
        raise InputError(f"eval asks for {n} {key} conformers; data.md17_split.{key} has "
                         f"{sizes[key]}")
    indices = conformers.split(len(trajectory), sizes, seed=config.data.split_seed)
    frames = {k: conformers.FrameSampler(trajectory, indices[k], seed=config.seed) for k in sizes}
    return Sources(frames["train"], frames["validation"], frames["test"])
  cache = os.path.join(workdir, "cache")  # the Hessian, computed once per workdir
  thermal = lambda offset: conformers.ThermalSampler(
      molecules.get(config.molecule), config.data.temperature, seed=config.seed + offset,
      cache_dir=cache)
  return Sources(thermal(0), thermal(VALIDATION_SEED_OFFSET), thermal(HELD_OUT_SEED_OFFSET))


def labelled_set(config, source: Callable[[int], Molecule], n: int, path: str):
  """The first n conformers of `source` in their canonical frames: (PySCF labels, problems).

  Labels are cached in `path` (reused while geometries and level of theory match).
  """
  canonical = [frame.canonical_molecule(source(i)) for i in range(n)]
  labels, _ = evaluate.label_cached(path, canonical, config.basis, config.xc, config.grid_level,
                                    config.eri)
  return labels, evaluate.build_problems(labels, config.dtype)


# ---- training -----------------------------------------------------------------------------------


def train(config, progress: bool = True) -> dict | None:
  """Trains, checkpointing as it goes; re-running the same config resumes from the last checkpoint.

  Every process of a multi-process run calls this; process 0 writes metrics, plots and the
  evaluation, orbax coordinates the checkpoints. Returns the final evaluation's metrics, or None
  if it did not run here (eval.n_conformers = 0, a signal stopped the run, or not process 0).
  """
  check_config(config)
  backend = backends.create(config)  # first: it must configure JAX before any device is used
  backend.check_batch_size(config.train.batch_size)
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
  if backend.is_primary:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(dict(config=flat, versions=_versions(), backend=backend.describe()), f, indent=1)

  model = _model(config)
  tx, schedule = train_lib.make_optimizer(config.train)
  loss_fn = train_lib.conformer_loss(config.loss, config.iterations, config.mixing)
  step_fn = train_lib.make_train_step(model, tx, loss_fn, schedule, backend)
  conformer_sources = sources(config, workdir)
  level = data.Level(config.basis, config.xc, config.grid_level, config.eri, config.dtype,
                     fock_labels=config.loss in train_lib.LABELLED_LOSSES)
  stream = data.ProblemStream(conformer_sources.train, config.train.batch_size, level,
                              n_workers=config.data.workers, prefetch=config.data.prefetch,
                              mol_repeats=config.data.mol_repeats,
                              transform=frame.canonical_molecule,
                              process_index=backend.process_index,
                              process_count=backend.process_count,
                              pad_to=tuple(config.data.pad_to) or None,
                              agree_shape=backend.max_across_processes, state=stream_state)
  validate = None
  if backend.is_primary and config.eval.every and config.eval.n_validation:
    validate = _validator(config, model, conformer_sources.validation, workdir)
  with stream, _StopOnSignal() as signals:
    batch = next(stream)
    params = None
    if config.init_from and resume_step is None:
      params = checkpoint.load_params(config.init_from, _abstract_params(model, batch.problem))
    state = train_lib.init_state(model, tx, config.seed, batch.problem, backend, params)
    if resume_step is not None:
      state, _ = saver.restore(backend.abstract(state))
    first_step = int(backend.to_host(state.step))
    log = metrics_log.MetricsLog(workdir, progress and backend.is_primary, config.train.steps,
                                 first_step, write=backend.is_primary)
    bad_in_a_row, stop = 0, False
    for step in range(first_step, config.train.steps):
      batch = batch or next(stream)  # the first batch was already taken to size the model
      state, metrics = step_fn(state, backend.put_batch(batch.problem),
                               backend.put_batch(batch.fock_label))
      metrics = backend.to_host(metrics)
      finite = bool(metrics["finite"])
      bad_in_a_row = 0 if finite else bad_in_a_row + 1
      # Every process must leave the loop at the same step, or the others wait in a collective.
      stop = bool(backend.max_across_processes((int(signals.requested),))[0])
      done = step + 1 == config.train.steps or stop
      extra = {}
      if validate and (step + 1) % config.eval.every == 0:
        with log.paused():  # validation is the observer's cost, not training's
          extra = validate(backend.to_host(state.params))
      log.step(step + 1, batch, metrics, config.loss, finite, extra,
               write=(step + 1) % config.log_every == 0 or done or not finite or bool(extra))
      batch = None
      if (step + 1) % config.checkpoint.every == 0 or done or bad_in_a_row >= config.train.max_bad_steps:
        saver.save(step + 1, state, dict(config=flat, stream=stream.state))
      if bad_in_a_row >= config.train.max_bad_steps:
        saver.wait()
        raise TrainingError(f"{bad_in_a_row} non-finite steps in a row (up to step {step + 1}); "
                            f"the last good state is checkpointed in {saver.directory}")
      if stop:
        break
    saver.wait()
    log.close()
  if not backend.is_primary:
    return None
  plot.training_curves(workdir)
  if config.eval.n_conformers and not stop:
    return final_evaluation(config, model, backend.to_host(state.params),
                            conformer_sources.test, workdir)
  return None


def _model(config):
  return model_lib.make_model(model_lib.model_config(config.model.size, remat=config.model.remat))


def _abstract_params(model, problem):
  """The parameter shapes of `model`; they do not depend on the problem (which may be a batch)."""
  if np.ndim(problem.ao_mask) == 2:
    problem = jax.tree.map(lambda a: a[0], problem)
  return jax.eval_shape(model.init, jax.random.key(0), problem)


@functools.cache
def _predictor(model):
  """Jitted (params, problem) → H, compiled once per model and padded shape."""
  return jax.jit(functools.partial(model_lib.hamiltonian, model))


def _validator(config, model, source, workdir: str) -> Callable[[dict], dict]:
  """params → validation metrics (`val_*` keys) on a fixed labelled set; no PySCF runs per call."""
  labels, problems = labelled_set(config, source, config.eval.n_validation,
                                  os.path.join(workdir, "validation_labels.npz"))
  predict = _predictor(model)

  def validate(params) -> dict:
    metrics = evaluate.evaluate(lambda p: predict(params, p), problems, labels, config.iterations,
                                config.mixing, baseline=False, scf_cycles=False)
    keys = ("energy_mae_uha", "energy_after_k_mae_uha", "eps_occ_mae_uha", "h_mae_fock_uha")
    return {f"val_{k}": metrics[k] for k in keys}

  return validate


# ---- evaluation ---------------------------------------------------------------------------------


def final_evaluation(config, model, params, source, workdir: str) -> dict:
  """Scores `params` on `eval.n_conformers` held-out conformers against PySCF (float64) labels.

  Labels are cached in workdir/labels.npz; results go to workdir/eval.json and are printed beside
  the MINAO baseline (H_init, no model).
  """
  labels, problems = labelled_set(config, source, config.eval.n_conformers,
                                  os.path.join(workdir, "labels.npz"))
  predict = _predictor(model)
  metrics = evaluate.evaluate(lambda p: predict(params, p), problems, labels, config.iterations,
                              config.mixing)
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump(metrics, f, indent=1)
  m = metrics
  print(f"held-out {config.molecule}, {m['n_conformers']} conformers (model | MINAO baseline):\n"
        f"  energy MAE of E[D(H_pred)], k = 0  {m['energy_mae_uha']:10.1f} | "
        f"{m['energy_mae_uha_minao']:10.1f} µHa\n"
        f"  occupied ε MAE of F[D(H_pred)]     {m['eps_occ_mae_uha']:10.1f} | "
        f"{m['eps_occ_mae_uha_minao']:10.1f} µHa\n"
        f"  SCF-cycle ratio (PySCF from D)     {m['scf_cycle_ratio']:10.2f} | "
        f"{m['scf_cycle_ratio_minao']:10.2f}\n"
        f"metrics {workdir}/metrics.jsonl, eval {workdir}/eval.json, "
        f"curves {workdir}/training_curves.png, checkpoints {workdir}/checkpoints")
  return metrics


def evaluate_checkpoint(config) -> dict:
  """mode=eval: the final evaluation of the latest parameters in `init_from` or else `workdir`."""
  check_config(config)
  workdir = os.path.abspath(config.workdir)
  source = config.init_from or workdir
  os.makedirs(workdir, exist_ok=True)
  model = _model(config)
  test = sources(config, workdir).test
  example = build_problem(frame.canonical_molecule(test(0)), config.basis, config.xc,
                          config.grid_level, config.eri, config.dtype)
  params = checkpoint.load_params(source, _abstract_params(model, example))
  return final_evaluation(config, model, params, test, workdir)


# ---- bookkeeping --------------------------------------------------------------------------------


def _check_resumable(saved: dict, wanted: dict) -> None:
  """One-line InputError naming the first field that differs from the checkpointed run's.

  A field the saved run did not have (added to QPT since) is accepted: new fields default to
  the behaviour from before they existed.
  """
  for key in sorted(set(saved) | set(wanted)):
    if key in RESUMABLE_CHANGES or key not in saved or saved[key] == wanted.get(key):
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
