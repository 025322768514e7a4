"""transfer: what pre-training buys — a built-in molecule fine-tuned from a pre-trained run (e.g.
experiments/qm9.py's) against the same config trained from scratch."""

from __future__ import annotations

import argparse
import os
import sys

import qpt
from .common import Command, md17_config, stamp

ROUTES = ("scratch", "finetuned")
# What fine-tuning must share with the pre-trained run, or its parameters would not fit (model,
# basis) or would have learnt another Hamiltonian (functional, evaluation grid, dtype, unrolled
# steps). How training's problems are made (`data.grid_level`, `data.eri`) stays the molecule's
# own, as `md17.py --config.init_from=…` fine-tunes: those set a step's cost and move the optimum
# by tens of µHa at most (docs/results.md §1, §10).
INHERITED = ("basis", "xc", "grid_level", "dtype", "iterations", "mixing")


def transfer_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--pretrained", required=True,
                      help="workdir of the pre-training run (e.g. experiments/qm9.py's)")
  parser.add_argument("--molecule", default="ethanol", help="built-in molecule to fine-tune on")
  parser.add_argument("--steps", type=int, default=300, help="training steps of each route")
  # The time to the target is only as exact as the validation grid: validating every 25 steps
  # placed ethanol's crossing (step 105) at step 125. Validation time is excluded from `seconds`.
  parser.add_argument("--eval-every", type=int, default=5, help="steps between validations")
  parser.add_argument("--held-out", type=int, default=10, help="validation conformers (one set)")
  parser.add_argument("--learning-rate", type=float, default=0.0,
                      help="peak learning rate of both runs (default: the molecule config's)")
  parser.add_argument("--workers", type=int, default=-1,
                      help="data.workers of both runs (default: the molecule config's)")
  parser.add_argument("--workdir", default="", help="keep the runs here (default: temporary)")


def transfer_config(molecule: str, pretrained: str):
  """The molecule's md17 config at the pre-trained run's level of theory and model."""
  from qpt import run_config
  saved = run_config.flatten(run_config.saved(pretrained).to_dict())
  c = md17_config(molecule)
  for key, value in saved.items():
    if key in INHERITED or key.startswith("model."):
      section, _, field = key.rpartition(".")
      node = c[section] if section else c
      node[field] = tuple(value) if isinstance(value, list) else value
  return c


def transfer_run(args: argparse.Namespace) -> list[dict]:
  """Both routes train the same config for --steps, scored on the same validation set every
  --eval-every steps. The target is the scratch run's final validation energy MAE of E[D(H)];
  each route's `seconds` is its training wall time (validation excluded) at its first validation
  at or below it, compilation included. `pretrain_seconds` is the pre-training run's own
  training wall time, reported beside the fine-tuned route's time, never hidden in it; `ratio` =
  finetuned / scratch seconds."""
  import tempfile

  from qpt import experiment

  pretrain = [r for r in experiment.read_metrics(args.pretrained) if "seconds" in r]
  if not pretrain:
    raise qpt.InputError(f"--pretrained {args.pretrained}: no metrics.jsonl of a training run")
  where = stamp()
  curves = {}
  with tempfile.TemporaryDirectory() as scratch:
    root = args.workdir or scratch
    for route in ROUTES:
      c = transfer_config(args.molecule, args.pretrained)
      c.workdir = os.path.join(root, f"{args.molecule}_{route}")
      c.init_from = args.pretrained if route == "finetuned" else ""
      c.train.steps, c.eval.every, c.eval.n_validation = args.steps, args.eval_every, args.held_out
      c.eval.n_conformers = 0
      if args.workers >= 0:
        c.data.workers = args.workers
      if args.learning_rate > 0:
        c.train.learning_rate = args.learning_rate
      _train_cold(c)
      scored = [r for r in experiment.read_metrics(c.workdir) if "val_energy_mae_uha" in r]
      curves[route] = dict(step=[r["step"] for r in scored], seconds=[r["seconds"] for r in scored],
                           energy_mae_uha=[r["val_energy_mae_uha"] for r in scored])
      print(f"# {args.molecule} {route}: final validation energy MAE "
            f"{scored[-1]['val_energy_mae_uha']:.0f} µHa", file=sys.stderr, flush=True)
  target = curves["scratch"]["energy_mae_uha"][-1]
  rows = []
  for route, curve in curves.items():
    hit = next((i for i, mae in enumerate(curve["energy_mae_uha"]) if mae <= target), None)
    rows.append(dict(
        molecule=args.molecule, route=route, target_energy_mae_uha=target, reached=hit is not None,
        seconds=curve["seconds"][hit] if hit is not None else None,
        step=curve["step"][hit] if hit is not None else None,
        pretrain_seconds=pretrain[-1]["seconds"] if route == "finetuned" else 0.0,
        pretrained=os.path.abspath(args.pretrained), final=curve["energy_mae_uha"][-1],
        curve=curve, **where))
  scratch_row, tuned = rows
  if tuned["reached"]:
    tuned["ratio"] = tuned["seconds"] / scratch_row["seconds"]
  return rows


def _train_cold(config) -> None:
  """experiment.train as a user's fresh process runs it, tracing and compiling its step itself:
  reusing the other route's compiled step (in memory, or from the compilation cache on disk that
  tools/benchmark.py keeps) started the second route ~5 s ahead on ethanol (2026-12-05)."""
  import jax

  from qpt import experiment

  cached = jax.config.jax_enable_compilation_cache
  jax.clear_caches()
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    experiment.train(config, progress=False)
  finally:
    jax.config.update("jax_enable_compilation_cache", cached)


def plot(rows: list[dict], path: str) -> None:
  """Validation energy MAE against training wall time, fine-tuned beside scratch, and the target."""
  from .common import pyplot, save_figure
  plt = pyplot()
  figure, ax = plt.subplots(figsize=(6, 4))
  for row in rows:
    ax.plot(row["curve"]["seconds"], row["curve"]["energy_mae_uha"], marker="o", ms=3,
            label=f"{row['molecule']}: {row['route']}")
  for target in {row["target_energy_mae_uha"] for row in rows}:
    ax.axhline(target, color="grey", lw=0.8, ls="--")
  ax.set(xlabel="training wall time (s), pre-training not included", yscale="log",
         ylabel="validation energy MAE of E[D(H)] (µHa)", title="fine-tuned vs from scratch")
  ax.legend(fontsize=8)
  save_figure(figure, path)


COMMAND = Command(
    help="fine-tuning from a pre-trained run against training from scratch (same config)",
    add_arguments=transfer_arguments,
    run=transfer_run,
    columns=(("molecule", "molecule", "s"), ("route", "route", "s"),
             ("target µHa", "target_energy_mae_uha", ".0f"), ("reached", "reached", ""),
             ("seconds", "seconds", ".0f"), ("step", "step", ""), ("final µHa", "final", ".0f"),
             ("pretrain s", "pretrain_seconds", ".0f"), ("ratio", "ratio", ".2f")),
    plot=plot,
)
