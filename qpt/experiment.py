"""One experiment as a config describes it: conformer sources → training run → evaluation.

  config ──▶ conformer sources (train / validation / test, disjoint)
         ──▶ train: ProblemStream ──▶ jitted step ──▶ checkpoints, metrics.jsonl, validation
         ──▶ final evaluation on held-out conformers against PySCF (float64) ──▶ eval.json

`run(config)` is what experiments/md17.py calls: mode=train trains (resuming from the workdir's
latest checkpoint if there is one) and ends with the final evaluation; mode=eval only evaluates
the workdir's (or `init_from`'s) latest parameters.

The pieces a run is assembled from are public, so tools and benchmarks reuse them instead of
wiring their own: `level`, `make_network`, `make_trainer` (optimizer and compiled step),
`make_stream`, `sources`, `labelled_sets`, `score`, `read_metrics`; `qpt.run_config` loads and checks configs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import types
from typing import Callable

import haiku as hk
import jax
import numpy as np
import optax

from qpt import backends, checkpoint, conformers, data, evaluate, frame, labels, metrics_log
from qpt import model, molecule_sets, molecules, plot, run_config
from qpt.build import build_problem, grow_alike, max_shape
from qpt.errors import InputError, Stopped, TrainingError, make_directory
from qpt.files import one_run_at_a_time, written_whole
from qpt.level import Level
from qpt.molecule import Molecule
from qpt.train import (LABELLED_LOSSES, TrainState, conformer_loss, init_state, make_optimizer,
                       make_train_step)

# Each conformer set is its own sampler stream, so they never share a conformer.
VALIDATION_SEED_OFFSET = 500_009
HELD_OUT_SEED_OFFSET = 1_000_003
HOT_SEED_OFFSET = 1_500_007  # the test conformers drawn at eval.hot_temperature
EVALUATION_TIMEOUT_MS = 24 * 3600 * 1000  # how long other processes wait for process 0's final one


def run(config, progress: bool = True) -> dict | None:
  """Entry point of experiments/md17.py. Returns the final evaluation's metrics (if it ran)."""
  if config.mode == "eval":
    return evaluate_checkpoint(config)
  return train(config, progress)


# ---- conformer sources --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sources:
  """Disjoint conformer sources (index → Molecule): training, validation, test, and (thermal runs
  with eval.hot_temperature > 0) test conformers drawn hotter than training, for generalisation."""

  train: Callable[[int], Molecule]
  validation: Callable[[int], Molecule]
  test: Callable[[int], Molecule]
  hot: Callable[[int], Molecule] | None = None
  trained_on: run_config.TrainedOn | None = None  # the training molecules' elements and charges


def sources(config, workdir: str) -> Sources:
  """Thermal samples around the built-in geometry, the frames of an MD17 file's splits, or (with
  data.molecule_set) thermal samples of a molecule set's train molecules, with its unseen
  validation and test molecules held out."""
  if config.data.molecule_set:
    return _molecule_set_sources(config)
  if config.data.md17_file:
    trajectory = conformers.load_md17(config.data.md17_file)
    sizes = {k: int(config.data.md17_split[k]) for k in ("train", "validation", "test")}
    for key, n in (("validation", config.eval.n_validation), ("test", config.eval.n_conformers)):
      if n > sizes[key]:
        raise InputError(f"eval asks for {n} {key} conformers; data.md17_split.{key} has "
                         f"{sizes[key]}")
    indices = conformers.split(len(trajectory), sizes, seed=config.data.split_seed)
    frames = {k: conformers.FrameSampler(trajectory, indices[k], seed=config.seed) for k in sizes}
    return Sources(frames["train"], frames["validation"], frames["test"],
                   trained_on=run_config.TrainedOn(  # MD17's frames are neutral
                       tuple(sorted(set(trajectory.atomic_numbers.tolist()))), (0,)))
  cache = os.path.join(workdir, "cache")  # the Hessian, computed once per workdir
  thermal = lambda offset, kelvin=config.data.temperature: conformers.ThermalSampler(
      molecules.get(config.molecule), kelvin, seed=config.seed + offset, cache_dir=cache)
  hot = config.eval.hot_temperature
  return Sources(thermal(0), thermal(VALIDATION_SEED_OFFSET), thermal(HELD_OUT_SEED_OFFSET),
                 thermal(HOT_SEED_OFFSET, hot) if hot else None,
                 trained_on=run_config.TrainedOn.of([molecules.get(config.molecule)]))


def _trained_on(config, workdir: str, conformer_sources: Sources,
                resuming: bool) -> run_config.TrainedOn | None:
  """What the model will have trained on: the training molecules, and what the run it resumes
  recorded (the run it was fine-tuned from included) or else the run it is fine-tuned from
  (init_from). None where that run did not record it (it predates the record): nobody knows."""
  if resuming:
    before = run_config.trained_on(workdir)
  elif config.init_from:
    before = run_config.trained_on(
        os.path.dirname(checkpoint.locate(config.init_from, "init_from")[0]))
  else:
    return conformer_sources.trained_on
  return None if before is None else conformer_sources.trained_on | before


def molecule_split(config) -> dict[str, list[Molecule]]:
  """data.molecule_set read, limited by size, without the built-ins (data.exclude_builtins) and
  split by molecule: {"train", "validation", "test"} → molecules."""
  d = config.data
  limit = molecule_sets.SizeLimit(d.max_heavy_atoms, d.max_electrons, d.max_n_ao, config.basis)
  found = molecule_sets.read(d.molecule_set, limit)
  if d.exclude_builtins:
    found = molecule_sets.without_builtins(found)
    if not found:
      raise InputError(f"data.molecule_set={d.molecule_set!r}: only built-in molecules within "
                       f"{limit}")
  return molecule_sets.split_by_molecule(found, tuple(d.split_fractions), d.split_seed)


def _molecule_set_sources(config) -> Sources:
  split = molecule_split(config)
  per = config.eval.per_molecule
  for key, n in (("validation", config.eval.n_validation), ("test", config.eval.n_conformers)):
    if n > per * len(split[key]):
      raise InputError(f"eval asks for {n} {key} conformers; the {key} split has "
                       f"{len(split[key])} molecules × eval.per_molecule={per}")
  held_out = lambda key, offset, kelvin=config.data.temperature: molecule_sets.HeldOutMolecules(
      split[key], per, kelvin, seed=config.seed + offset)
  hot = config.eval.hot_temperature
  return Sources(molecule_sets.MoleculeSetSampler(split["train"], config.data.temperature,
                                                  config.seed),
                 held_out("validation", VALIDATION_SEED_OFFSET),
                 held_out("test", HELD_OUT_SEED_OFFSET),
                 held_out("test", HOT_SEED_OFFSET, hot) if hot else None,
                 trained_on=run_config.TrainedOn.of(split["train"]))


@dataclasses.dataclass(frozen=True)
class LabelledSet:
  """One molecule's labelled conformers: PySCF references, and their DFT problems — kept (`kept`)
  or built when scored: at the evaluation grid a problem is ~0.2 GB for a 5-heavy-atom molecule,
  so a molecule set's 40 test conformers are never all held at once."""

  name: str
  reference: labels.Labels
  dtype: str
  kept: list | None = None

  def problems(self, min_shape=None) -> list:
    """The conformers' problems, padded alike and at least to `min_shape`."""
    return grow_alike(self.kept or evaluate.problems_for(self.reference, self.dtype), min_shape)


def labelled_sets(config, source: Callable[[int], Molecule], n: int, path: str,
                  keep: bool = False) -> list[LabelledSet]:
  """The first n conformers of `source` in their canonical frames, labelled by PySCF, one set per
  molecule (a thermal or MD17 source has one; a molecule set's held-out source several).

  Labels are cached in `path` for one molecule, in `path` without ".npz" / <name>.npz for several
  (reused while geometries and level of theory match). `keep`: build the problems now and keep
  them, all padded to one shape (a validation set, scored again and again).
  """
  groups: dict[str, list[Molecule]] = {}
  for i in range(n):
    molecule = frame.canonical_molecule(source(i))
    groups.setdefault(molecule.name, []).append(molecule)
  several = len(groups) > 1
  sets = []
  for name, members in groups.items():
    file = os.path.join(path.removesuffix(".npz"), f"{name}.npz") if several else path
    os.makedirs(os.path.dirname(file), exist_ok=True)
    reference, _ = labels.label_cached(file, members, level(config))
    sets.append(LabelledSet(name, reference, config.dtype,
                            evaluate.problems_for(reference, config.dtype) if keep else None))
  if keep:
    shape = max_shape(*(p.shapes for s in sets for p in s.kept))
    sets = [dataclasses.replace(s, kept=s.problems(shape)) for s in sets]
  return sets


# Counts: summed over a molecule set's molecules, where every other score is averaged.
SUMMED = ("n_conformers", "scf_unconverged", "scf_unconverged_minao", "scf_cycles",
          "scf_cycles_minao")


def score(sets: list[LabelledSet], predict_h: Callable, config, **kwargs) -> dict:
  """`evaluate.evaluate` of each molecule's set. One molecule: its metrics. Several: the mean over
  molecules (each weighs the same) of every score, counts summed, plus n_molecules and
  per_molecule (name → that molecule's metrics).

  Molecules are scored one at a time, padded to the running maximum shape: with size buckets, a
  few compiled shapes serve them all. The refinement is timed against one full PySCF SCF of each
  of the first `evaluate.PYSCF_TIMINGS` molecules only: one per molecule would cost a full SCF
  per test molecule, as much as its label (docs/results.md §13)."""
  per, shape = {}, None
  for j, s in enumerate(sets):
    timings = dict(pyscf_timings=int(j < evaluate.PYSCF_TIMINGS)) if len(sets) > 1 else {}
    problems = s.problems(shape)
    shape = problems[0].shapes
    per[s.name] = evaluate.evaluate(predict_h, problems, s.reference, config.iterations,
                                    config.mixing, **kwargs, **timings)
    del problems
  if len(per) == 1:
    return next(iter(per.values()))
  first = next(iter(per.values()))
  out = {k: float(np.mean([m[k] for m in per.values() if k in m])) for k in first}
  out.update({k: sum(m[k] for m in per.values()) for k in SUMMED if k in first})
  out["refine_steps"] = first["refine_steps"]
  out.update(n_molecules=len(per), per_molecule=per)
  return out


# ---- the run's pieces ---------------------------------------------------------------------------


def level(config) -> Level:
  """The level of theory of a run (config fields basis, xc, grid_level, eri, dtype)."""
  return Level.from_config(config)


def make_network(config) -> hk.Transformed:
  """The QPT transformer (dm-haiku) a config describes."""
  return model.make_model(model.model_config(config.model.size, remat=config.model.remat,
                                             log_output_scale=config.model.log_output_scale,
                                             pair_rank=config.model.pair_rank))


@dataclasses.dataclass(frozen=True)
class Trainer:
  """What a config trains with: the network, the optimizer and the compiled train step.

  step: (state, problems, fock_labels) → (state, metrics), problems and labels placed by
    `backend.put_batch` (`train.make_train_step`).
  """

  network: hk.Transformed
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  step: Callable
  backend: backends.Backend
  seed: int

  def init_state(self, example, params: hk.Params | None = None) -> TrainState:
    """Fresh parameters (or `params`, fine-tuning) and optimizer state, on the backend's devices;
    `example` is one problem or a stacked batch."""
    return init_state(self.network, self.optimizer, self.seed, example, self.backend, params)

  def abstract_params(self, example) -> hk.Params:
    return abstract_params(self.network, example)


def abstract_params(network: hk.Transformed, example) -> hk.Params:
  """The parameters' shapes (they do not depend on `example`, which may be a batch)."""
  if np.ndim(example.ao_mask) == 2:
    example = jax.tree.map(lambda a: a[0], example)
  return jax.eval_shape(network.init, jax.random.key(0), example)


def make_trainer(config, backend: backends.Backend) -> Trainer:
  """The network, optimizer and compiled step of `config` on `backend`."""
  network = make_network(config)
  optimizer, schedule = make_optimizer(config.train)
  loss_fn = conformer_loss(config.loss, config.iterations, config.mixing,
                          config.self_consistency_weight)
  step = make_train_step(network, optimizer, loss_fn, schedule, backend)
  return Trainer(network, optimizer, schedule, step, backend, config.seed)


def make_stream(config, source: Callable[[int], Molecule], backend: backends.Backend,
                state: dict | None = None) -> data.ProblemStream:
  """The training stream of `config` over `source`: this process's share of every global batch,
  built by `data.workers` processes, in the canonical frame. Label-free losses train on the grid
  of `data.grid_level`; a labelled loss's problems and PySCF labels are at the run's own level."""
  labelled = config.loss in LABELLED_LOSSES  # labels stay at the level the run is judged at
  return data.ProblemStream(source, config.train.batch_size,
                            Level.from_config(config, stream=not labelled), fock_labels=labelled,
                            n_workers=config.data.workers, prefetch=config.data.prefetch,
                            mol_repeats=config.data.mol_repeats,
                            transform=frame.canonical_molecule,
                            process_index=backend.process_index,
                            process_count=backend.process_count,
                            pad_to=tuple(config.data.pad_to) or None,
                            agree_shape=backend.max_across_processes,
                            ao_on_device=config.data.ao_on_device, state=state)


def read_metrics(workdir: str) -> list[dict]:
  """The records of a run's metrics.jsonl (`metrics_log` says what each holds)."""
  return metrics_log.read(workdir)


# ---- training -----------------------------------------------------------------------------------


def train(config, progress: bool = True) -> dict | None:
  """Trains, checkpointing as it goes; re-running the same config resumes from the last checkpoint.

  Every process of a multi-process run calls this; process 0 writes metrics, plots and the
  evaluation, orbax coordinates the checkpoints. Returns the final evaluation's metrics, or None
  if it did not run here (eval.n_conformers = 0, or not process 0). SIGTERM or SIGINT stops it
  after the current step and a checkpoint, with `Stopped` (the run is not finished).
  """
  run_config.check(config)
  backend = backends.create(config)  # first: it must configure JAX before any device is used
  backend.check_batch_size(config.train.batch_size)
  workdir = os.path.abspath(config.workdir)
  make_directory(workdir)
  # Process 0 speaks for a multi-process run; the others share its workdir.
  with one_run_at_a_time(workdir) if backend.is_primary else contextlib.nullcontext():
    return _train(config, backend, workdir, progress)


def _train(config, backend: backends.Backend, workdir: str, progress: bool) -> dict | None:
  flat = run_config.flatten(config.to_dict())
  saver = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.keep,
                                  backend.max_across_processes)
  resume_step = saver.latest_step()
  stream_state = None
  if resume_step is not None:
    if resume_step > config.train.steps:  # it would be scored as if it were the shorter run
      raise InputError(f"workdir={workdir} holds a run at step {resume_step}, past "
                       f"train.steps={config.train.steps}: raise train.steps to go on, score it "
                       f"with mode=eval, or give another workdir")
    meta = saver.meta(resume_step)
    run_config.check_resumable(meta["config"], flat)
    stream_state = meta["stream"]
    if backend.is_primary:
      _say_if_the_schedule_moves(meta["config"], config, resume_step)
  elif config.init_from:  # fails now, not minutes of labels later
    manager_dir, _ = checkpoint.locate(config.init_from, "init_from")
    run_config.check_model_matches(os.path.dirname(manager_dir), flat)
  conformer_sources = sources(config, workdir)
  if backend.is_primary:
    trained_on = _trained_on(config, workdir, conformer_sources, resume_step is not None)
    run_config.record(workdir, config, backend.describe(), trained_on)

  trainer = make_trainer(config, backend)
  stream = make_stream(config, conformer_sources.train, backend, stream_state)
  with (stream, _StopOnSignal() as signals, metrics_log.StepWatch() as watch,
        backend.training_loop()):
    batch = next(stream)
    params = None
    if config.init_from and resume_step is None:
      params = checkpoint.load_params(config.init_from, trainer.abstract_params(batch.problem),
                                      "init_from")
    state = trainer.init_state(batch.problem, params)
    if resume_step is not None:
      state, _ = saver.restore(backend.abstract(state))
    validate = None  # after the checks above: its PySCF labels can take minutes
    if backend.is_primary and config.eval.every and config.eval.n_validation:
      validate = _validator(config, trainer.network, conformer_sources.validation, workdir)
    first_step = int(backend.to_host(state.step))
    log = metrics_log.MetricsLog(workdir, progress and backend.is_primary, config.train.steps,
                                 first_step, write=backend.is_primary)
    bad_in_a_row, stop = 0, 0
    for step in range(first_step, config.train.steps):
      batch = batch or next(stream)  # the first batch was already taken to size the model
      watch.started(step + 1)
      state, metrics = trainer.step(state, backend.put_batch(batch.problem),
                                    backend.put_batch(batch.fock_label))
      metrics = backend.to_host(metrics)
      watch.finished()
      finite = bool(metrics["finite"])
      bad_in_a_row = 0 if finite else bad_in_a_row + 1
      # Every process must leave the loop at the same step, or the others wait in a collective;
      # `stop` is the signal's number (0: none), the same on every process.
      stop = backend.max_across_processes((signals.signum,))[0]
      done = step + 1 == config.train.steps or stop
      extra = {}
      if config.eval.every and config.eval.n_validation and (step + 1) % config.eval.every == 0:
        with log.paused():  # validation is the observer's cost, not training's
          params = backend.to_host(state.params)  # every process: sharded params are gathered
          extra = validate(params) if validate else {}
          backend.barrier("validated")  # the others wait here, not in the next step's collective
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
  params = backend.to_host(state.params)  # every process: sharded params are gathered
  if backend.is_primary:
    plot.training_curves(workdir)
  if stop:  # every process: a scheduler reads each one's exit code
    raise Stopped(f"{signal.Signals(stop).name} at step {step + 1} of {config.train.steps}: "
                  f"checkpointed in {saver.directory}; run the same command again to resume", stop)

  def finish() -> dict | None:
    if config.eval.n_conformers:
      return final_evaluation(config, trainer.network, params, conformer_sources, workdir)
    print(_where_it_is(workdir))
    return None

  return _on_process_0(backend, finish)


def _say_if_the_schedule_moves(saved_flat: dict, config, step: int) -> None:
  """One line when train.steps differs from the checkpointed run's: the learning-rate schedule is
  made for the new total, so the rate at the next step jumps (a finished water run extended from
  3,500 to 4,000 steps: 1.0e-5 → 2.2e-4), and the trajectory is not that of a run that had the new
  total from the start."""
  before = saved_flat.get("train.steps", config.train.steps)
  if before == config.train.steps:
    return
  old = make_optimizer(types.SimpleNamespace(**{**config.train.to_dict(), "steps": before}))[1]
  new = make_optimizer(config.train)[1]
  print(f"resuming at step {step} with train.steps {before} → {config.train.steps}: the learning "
        f"rate's schedule is made for {config.train.steps} steps ({float(old(step)):.2g} → "
        f"{float(new(step)):.2g} at step {step + 1})")


def _on_process_0(backend: backends.Backend, work: Callable[[], dict | None]) -> dict | None:
  """`work()` (a final evaluation) on process 0 only, while the other processes wait for it.

  They must wait: at exit, JAX's distributed shutdown gives a process that is late 5 minutes and
  then aborts every process — process 0 in the middle of an evaluation that takes longer (exit
  code 134, the evaluation lost; tests/backends/test_data_parallel.py shortens the timeout)."""
  try:
    return work() if backend.is_primary else None
  finally:
    backend.barrier("evaluated", EVALUATION_TIMEOUT_MS)


@functools.cache
def predictor(network: hk.Transformed) -> Callable:
  """Jitted (params, problem) → H, compiled once per network and padded shape."""
  return jax.jit(functools.partial(model.hamiltonian, network))


def _validator(config, network, source, workdir: str) -> Callable[[dict], dict]:
  """params → validation metrics (`val_*` keys) on a fixed labelled set; no PySCF runs per call."""
  sets = labelled_sets(config, source, config.eval.n_validation,
                       os.path.join(workdir, "validation_labels.npz"), keep=True)
  predict = predictor(network)

  def validate(params) -> dict:
    metrics = score(sets, lambda p: predict(params, p), config, baseline=False, scf_cycles=False)
    keys = ("energy_mae_uha", "energy_after_k_mae_uha", "eps_occ_mae_uha", "h_mae_fock_uha")
    return {f"val_{k}": metrics[k] for k in keys}

  return validate


# ---- evaluation ---------------------------------------------------------------------------------


def final_evaluation(config, network, params, conformer_sources: Sources, workdir: str) -> dict:
  """Scores `params` on `eval.n_conformers` held-out conformers against PySCF (float64) labels,
  and as many drawn at eval.hot_temperature (generalisation, under the key "T<kelvin>").

  Labels are cached in workdir/labels.npz (labels_T<kelvin>.npz); results go to
  workdir/eval.json and are printed beside the MINAO baseline (H_init, no model).
  """
  predict = predictor(network)

  def scores(source, labels_file):
    sets = labelled_sets(config, source, config.eval.n_conformers,
                         os.path.join(workdir, labels_file))
    return score(sets, lambda p: predict(params, p), config, refine_steps=config.eval.refine_steps)

  metrics = scores(conformer_sources.test, "labels.npz")
  hot_key = f"T{config.eval.hot_temperature:g}"
  if conformer_sources.hot is not None:
    metrics[hot_key] = scores(conformer_sources.hot, f"labels_{hot_key}.npz")
  with written_whole(os.path.join(workdir, "eval.json")) as temporary, open(temporary, "w") as f:
    json.dump({**metrics, "meaning": evaluate.MEANING}, f, indent=1)
  m, n = metrics, metrics["refine_steps"]
  refined = (f"  after {n} SCF steps on the device:  occupied ε {m['eps_occ_mae_uha_refined']:.1f} | "
             f"{m['eps_occ_mae_uha_refined_minao']:.1f} µHa, energy "
             f"{m['energy_mae_uha_refined']:.1f} | {m['energy_mae_uha_refined_minao']:.1f} µHa "
             f"({m['refine_time_ratio']:.2f} of a PySCF SCF's time)\n") if n else ""
  if "n_molecules" in m:
    what = (f"unseen molecules of {config.data.molecule_set} ({m['n_molecules']} molecules, "
            "mean over them)")
  elif config.data.md17_file:  # its molecule may be another than config.molecule, left unused
    what = f"frames of {os.path.basename(config.data.md17_file)}"
  else:
    what = config.molecule
  print(f"held-out {what}, {m['n_conformers']} conformers (model | MINAO baseline):\n"
        f"  energy MAE of E[D(H_pred)], k = 0  {m['energy_mae_uha']:10.1f} | "
        f"{m['energy_mae_uha_minao']:10.1f} µHa\n"
        f"  occupied ε MAE of F[D(H_pred)]     {m['eps_occ_mae_uha']:10.1f} | "
        f"{m['eps_occ_mae_uha_minao']:10.1f} µHa  (model + one Fock build)\n"
        f"  occupied ε MAE of H_pred itself    {m['eps_occ_raw_mae_uha']:10.1f} | "
        f"{m['eps_occ_raw_mae_uha_minao']:10.1f} µHa\n"
        f"  SCF-cycle ratio (PySCF from D)     {m['scf_cycle_ratio']:10.2f} | "
        f"{m['scf_cycle_ratio_minao']:10.2f}  (per conformer "
        f"{m['scf_cycle_ratio_per_conformer']:.2f}; {m['scf_cycles']} | "
        f"{m['scf_cycles_minao']} cycles in all)\n"
        f"{refined}"
        + (f"  at {config.eval.hot_temperature:g} K (trained at {config.data.temperature:g} K): "
           f"energy MAE {m[hot_key]['energy_mae_uha']:.1f} | "
           f"{m[hot_key]['energy_mae_uha_minao']:.1f} µHa, occupied ε "
           f"{m[hot_key]['eps_occ_mae_uha']:.1f} µHa\n" if hot_key in m else "")
        + _where_it_is(workdir, f"eval {workdir}/eval.json, "))
  return metrics


def _where_it_is(workdir: str, evaluation: str = "") -> str:
  """The line that ends a run's output: where its files are."""
  return (f"metrics {workdir}/metrics.jsonl, {evaluation}curves {workdir}/training_curves.png, "
          f"checkpoints {workdir}/checkpoints")


def evaluate_checkpoint(config) -> dict | None:
  """mode=eval: the final evaluation of the latest parameters in `init_from` or else `workdir`,
  on process 0 of a multi-process run (each process evaluated and wrote the same files); None on
  the others."""
  run_config.check(config)
  backend = backends.create(config)  # the device precision of the config, as in training
  workdir = os.path.abspath(config.workdir)
  make_directory(workdir)
  source, field = (config.init_from, "init_from") if config.init_from else (workdir, "workdir")
  manager_dir, _ = checkpoint.locate(source, field)
  flat = run_config.flatten(config.to_dict())
  run_config.check_model_matches(os.path.dirname(manager_dir), flat, field)
  run_config.check_level_matches(os.path.dirname(manager_dir), flat, field)
  network = make_network(config)
  conformer_sources = sources(config, workdir)
  example = build_problem(frame.canonical_molecule(conformer_sources.test(0)), level(config))
  params = checkpoint.load_params(source, abstract_params(network, example), field)
  return _on_process_0(
      backend, lambda: final_evaluation(config, network, params, conformer_sources, workdir))


# ---- bookkeeping --------------------------------------------------------------------------------


class _StopOnSignal:
  """SIGTERM/SIGINT ask the loop to stop after the current step (and checkpoint), not mid-write."""

  def __enter__(self):
    self.signum = 0  # the first signal's number
    self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = self.signum or signum

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
