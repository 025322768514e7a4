"""economics: the paper's claim at laptop scale — wall time to held-out targets, label-free vs
labels + supervised training of the same model."""

from __future__ import annotations

import argparse
import os
import sys

import qpt
from .common import Command, comma_list, md17_config, stamp

# The three targets, and chemical accuracy (1 kcal/mol = 1594 µHa) as a coarser rung that
# shows how far each route got when the others are out of reach.
TARGETS = (("energy_mae_uha", 1594.0), ("energy_mae_uha", 300.0), ("energy_mae_uha", 100.0),
           ("eps_occ_mae_uha", 1000.0))
ROUTES = ("qpt", "self_consistency", "supervised")  # route → loss: qpt is the energy loss


def economics_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--molecules", default="water", help="comma list of built-in molecules")
  parser.add_argument("--routes", default=",".join(ROUTES), help="comma list of routes")
  parser.add_argument("--steps", type=int, default=1000, help="training steps per route")
  parser.add_argument("--eval-every", type=int, default=50, help="steps between evaluations")
  parser.add_argument("--held-out", type=int, default=50, help="held-out conformers (fixed set)")
  parser.add_argument("--supervised-repeats", type=int, default=1,
                      help="steps each labelled batch is used for in the supervised route")
  parser.add_argument("--workdir", default="", help="keep the runs here (default: temporary)")


def economics_run(args: argparse.Namespace) -> list[dict]:
  """Each route trains the same model on the same stream, scored on the same held-out set every
  --eval-every steps; a target's time is the training wall time (validation excluded) at the
  first evaluation that meets it. The supervised route's PySCF labels are computed by the
  stream's workers as it trains, so their cost is inside its wall time; n_labels counts them."""
  import tempfile

  from qpt import experiment

  routes = comma_list(args.routes)
  if any(r not in ROUTES for r in routes):
    raise qpt.InputError(f"--routes {args.routes}: choose from {', '.join(ROUTES)}")
  where = stamp()
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    root = args.workdir or scratch
    for name in comma_list(args.molecules):
      for route in routes:
        c = md17_config(name)
        c.workdir = os.path.join(root, f"{name}_{route}")
        c.loss = "energy" if route == "qpt" else route
        c.train.steps, c.eval.every, c.eval.n_validation = args.steps, args.eval_every, args.held_out
        # Both routes decay the rate from the warm-up, as the recorded rows did: water's held peak
        # was chosen for make run's 3,500 steps, not for this benchmark's --steps.
        c.train.hold_fraction = 0.0
        c.eval.n_conformers = 0
        if route == "supervised":
          c.data.mol_repeats = args.supervised_repeats
          # Labels are fitted faster with W's scale a plain scalar, as this route trained before
          # label-free runs moved to its log (docs/results.md §6): each route at its best.
          c.model.log_output_scale = False
        experiment.train(c, progress=False)
        scored = [r for r in experiment.read_metrics(c.workdir) if "val_energy_mae_uha" in r]
        curve = dict(step=[r["step"] for r in scored], seconds=[r["seconds"] for r in scored],
                     energy_mae_uha=[r["val_energy_mae_uha"] for r in scored],
                     eps_occ_mae_uha=[r["val_eps_occ_mae_uha"] for r in scored])
        for key, bound in TARGETS:
          hit = next((r for r in scored if r["val_" + key] <= bound), None)
          rows.append(dict(
              molecule=name, route=route, target=f"{key}<={bound:g}", reached=hit is not None,
              seconds=hit["seconds"] if hit else None, step=hit["step"] if hit else None,
              n_labels=(round(hit["unique_conformers_per_s"] * hit["seconds"])
                        if hit and route == "supervised" else 0),
              best=min(r["val_" + key] for r in scored), curve=curve, **where))
        print(f"# {name} {route}: best energy MAE {rows[-len(TARGETS)]['best']:.0f} µHa",
              file=sys.stderr, flush=True)
  for row in rows:  # time against the label-free QPT route to the same target
    qpt_row = next((r for r in rows if r["molecule"] == row["molecule"] and r["route"] == "qpt"
                    and r["target"] == row["target"]), None)
    both = qpt_row and qpt_row["reached"] and row["reached"]
    row["ratio"] = row["seconds"] / qpt_row["seconds"] if both else None
  return rows


def plot(rows: list[dict], path: str) -> None:
  """Held-out energy and ε MAE against training wall time, one line per molecule and route."""
  from .common import pyplot, save_figure
  plt = pyplot()
  figure, axes = plt.subplots(1, 2, figsize=(11, 4))
  routes = {(r["molecule"], r["route"]): r["curve"] for r in rows}  # every target row has it
  for (name, route), curve in routes.items():
    for ax, key in zip(axes, ("energy_mae_uha", "eps_occ_mae_uha")):
      ax.plot(curve["seconds"], curve[key], marker="o", ms=3, label=f"{name}: {route}")
  for ax, (title, bounds) in zip(axes, (("energy MAE of E[D(H)] (µHa)", (1594, 300, 100)),
                                        ("occupied ε MAE of F[D(H)] (µHa)", (1000,)))):
    for bound in bounds:
      ax.axhline(bound, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="training wall time (s), labels included", yscale="log", title=title)
    ax.legend(fontsize=8)
  save_figure(figure, path)


COMMAND = Command(
    help="wall time to held-out targets: label-free QPT vs labels + supervised (same model)",
    add_arguments=economics_arguments,
    run=economics_run,
    columns=(("molecule", "molecule", "s"), ("route", "route", "s"), ("target", "target", "s"),
             ("reached", "reached", ""), ("seconds", "seconds", ".0f"), ("step", "step", ""),
             ("n_labels", "n_labels", "d"), ("best", "best", ".0f"), ("ratio", "ratio", ".2f")),
    plot=plot,
)


