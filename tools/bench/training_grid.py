"""training-grid: what the optimum of a coarser training grid misses on the evaluation grid.

A model trained label-free on grid level L learns D(H) that minimises E on that grid. The
answer that loss rewards most is PySCF's density converged on level L, and what separates that
density from the evaluation level's own is the grid's error, which training does not remove. (A
model short of that optimum can land on either side of it: docs/results.md §1.) This scores it on
a molecule's held-out conformers (md17.py's test set, the conformers its final evaluation uses):
PySCF is converged on each training level, with the training stream's `data.eri`, and its density
is scored on the evaluation's grid as `eval.json` scores a model's — energy error of E[D],
occupied-ε MAE of F[D], PySCF's SCF cycles from D over its cycles from MINAO.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile

import numpy as np

import qpt
from qpt import experiment, labels
from .common import Command, comma_list, md17_config, stamp


def training_grid_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--molecules", default="water", help="comma list of built-in molecules")
  parser.add_argument("--levels", default="0,1,2", help="comma list of training grid levels")
  parser.add_argument("--n", type=int, default=10, help="held-out conformers per molecule")


def training_grid_run(args: argparse.Namespace) -> list[dict]:
  """One row per molecule × training level: its optimum's errors, over --n held-out conformers."""
  if args.n < 1:
    raise qpt.InputError(f"--n {args.n}: need at least 1 conformer")
  try:
    levels = [int(x) for x in comma_list(args.levels)]
  except ValueError:
    raise qpt.InputError(f"--levels {args.levels!r}: write grid levels, e.g. 0,1,2") from None
  where = stamp()
  rows = []
  for name in comma_list(args.molecules):
    config = md17_config(name)
    evaluation = experiment.level(config).with_dtype("float64")
    stream = qpt.Level.from_config(config, stream=True).with_dtype("float64")  # its data.eri too
    # Level's own check rejects a grid level PySCF does not have, before any SCF runs.
    trained = [dataclasses.replace(stream, grid_level=level) for level in levels]
    with tempfile.TemporaryDirectory() as cache:  # the sampler's Hessian, computed once
      test = experiment.sources(config, cache).test
      scores = np.array([_optimum_errors(test(i).to_pyscf(evaluation.basis), evaluation,
                                         trained)
                         for i in range(args.n)])  # (conformer, level, score)
    for level, per_conformer in zip(levels, scores.transpose(1, 0, 2)):
      energy, eps, ratio = per_conformer.T
      rows.append(dict(molecule=name, basis=evaluation.basis, xc=evaluation.xc,
                       eri=evaluation.eri, train_eri=stream.eri, train_grid_level=level,
                       eval_grid_level=evaluation.grid_level, n_conformers=args.n,
                       energy_mae_uha=float(np.mean(np.abs(energy))),
                       energy_max_uha=float(np.max(np.abs(energy))),
                       eps_occ_mae_uha=float(np.mean(eps)),
                       scf_cycle_ratio_per_conformer=float(np.mean(ratio)),
                       config_train_grid_level=int(config.data.grid_level), **where))
  return rows


def _optimum_errors(mol, evaluation: qpt.Level,
                    trained: list[qpt.Level]) -> list[tuple[float, ...]]:
  """Per training level: (E[D_L] − E* µHa, occupied-ε MAE of F[D_L] µHa, PySCF cycles from D_L
  over cycles from MINAO), all on the evaluation's grid, for PySCF's converged density D_L."""
  reference = labels.converge(labels.pyscf_rks(mol, evaluation))
  occupied = reference.mo_occ > 0
  out = []
  for level in trained:
    density = labels.converge(labels.pyscf_rks(mol, level)).make_rdm1()
    restart = labels.converge(labels.pyscf_rks(mol, evaluation), density)
    eps, _ = reference.eig(reference.get_fock(dm=density), reference.get_ovlp())
    out.append(((reference.energy_tot(density) - reference.e_tot) * 1e6,
                float(np.mean(np.abs(eps - reference.mo_energy)[occupied])) * 1e6,
                restart.cycles / reference.cycles))
  return out


def training_grid_plot(rows: list[dict], path: str) -> None:
  """Per molecule, against the training grid level: its optimum's energy error and occupied-ε MAE
  (left, log scale) and its SCF-cycle ratio (right)."""
  from .common import pyplot, save_figure
  plt = pyplot()
  figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
  for color, molecule in enumerate(dict.fromkeys(r["molecule"] for r in rows)):
    mine = sorted((r for r in rows if r["molecule"] == molecule),
                  key=lambda r: r["train_grid_level"])
    x = [r["train_grid_level"] for r in mine]
    visible = lambda v: max(v, 1e-3)  # on a log axis: the evaluation's own level scores 0
    left.plot(x, [visible(r["energy_mae_uha"]) for r in mine], "o-", color=f"C{color}",
              label=f"{molecule}: energy")
    left.plot(x, [visible(r["eps_occ_mae_uha"]) for r in mine], "s--", color=f"C{color}",
              label=f"{molecule}: occupied ε")
    right.plot(x, [r["scf_cycle_ratio_per_conformer"] for r in mine], "o-", color=f"C{color}",
               label=molecule)
  levels = sorted({r["train_grid_level"] for r in rows})
  left.set(xlabel="training grid level", xticks=levels, ylabel="µHa (evaluation grid)",
           yscale="log", title="error of the training grid's own SCF density")
  right.set(xlabel="training grid level", xticks=levels, ylabel="PySCF cycles from it / from MINAO",
            ylim=(0, 1.05), title="SCF-cycle ratio of that density")
  left.legend(fontsize=7)
  right.legend(fontsize=7)
  save_figure(figure, path)


COMMAND = Command(
    help="a training grid's optimum (PySCF's density on it), scored on the evaluation grid",
    add_arguments=training_grid_arguments,
    run=training_grid_run,
    columns=(("molecule", "molecule", "s"), ("train level", "train_grid_level", "d"),
             ("train eri", "train_eri", "s"),
             ("eval level", "eval_grid_level", "d"), ("n", "n_conformers", "d"),
             ("energy MAE µHa", "energy_mae_uha", ".2f"), ("max µHa", "energy_max_uha", ".2f"),
             ("occ ε MAE µHa", "eps_occ_mae_uha", ".1f"),
             ("SCF-cycle ratio", "scf_cycle_ratio_per_conformer", ".2f"),
             ("config's level", "config_train_grid_level", "d")),
    plot=training_grid_plot,
)
