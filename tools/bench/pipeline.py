"""throughput and inference: the training pipeline against PySCF labelling, and a trained
model's predictions against full PySCF SCFs."""

from __future__ import annotations

import argparse
import sys

import qpt
from .common import Command, comma_list, md17_config, stamp, timed


def throughput_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--molecule", default="ethanol", help="built-in molecule")
  parser.add_argument("--basis", default="def2-svp")
  parser.add_argument("--workers", default="2", help="comma list of host worker counts")
  parser.add_argument("--mol-repeats", default="1,4", help="comma list of steps per problem")
  parser.add_argument("--batch", type=int, default=2, help="global batch")
  parser.add_argument("--steps", type=int, default=40, help="training steps per measurement")
  parser.add_argument("--labels", type=int, default=4, help="conformers PySCF labels")
  parser.add_argument("--ao-on-device", action="store_true",
                      help="data.ao_on_device: workers ship the basis, the step makes AO values")


def throughput_run(args: argparse.Namespace) -> list[dict]:
  """`experiment.train` as md17.py runs it (thermal stream, workers, device step), timed from its
  metrics after a warm-up, against full PySCF SCFs (minao start) of the same stream's conformers."""
  import tempfile

  from qpt import experiment, frame, labels

  where = stamp()
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    config = md17_config(args.molecule)
    config.basis = args.basis
    train = experiment.sources(config, scratch).train
    molecules = [frame.canonical_molecule(train(i)) for i in range(args.labels)]
    _, label_seconds = timed(lambda: labels.label(molecules, experiment.level(config)))
  pyscf_rate = args.labels / label_seconds
  for workers in (int(w) for w in comma_list(args.workers)):
    for repeats in (int(r) for r in comma_list(args.mol_repeats)):
      with tempfile.TemporaryDirectory() as workdir:
        c = md17_config(args.molecule)
        c.workdir, c.basis, c.data.workers, c.data.mol_repeats = workdir, args.basis, workers, repeats
        c.train.batch_size, c.train.steps, c.log_every = args.batch, args.steps, 1
        c.eval.every, c.eval.n_conformers, c.checkpoint.every = 0, 0, args.steps
        c.data.ao_on_device = args.ao_on_device
        experiment.train(c, progress=False)
        records = experiment.read_metrics(workdir)
      first, last = records[len(records) // 4], records[-1]  # past compilation and pool start
      seen = lambda r: r["unique_conformers_per_s"] * r["seconds"]
      waited = lambda r: r["host_wait_fraction"] * r["seconds"]
      span = last["seconds"] - first["seconds"]
      rate = (seen(last) - seen(first)) / span
      rows.append(dict(molecule=args.molecule, basis=args.basis, workers=workers,
                       mol_repeats=repeats, batch=args.batch, ao_on_device=args.ao_on_device,
                       step_seconds=span / (last["step"] - first["step"]),
                       unique_conformers_per_s=rate,
                       host_wait_fraction=(waited(last) - waited(first)) / span,
                       pyscf_labels_per_s=pyscf_rate, ratio=rate / pyscf_rate,
                       **where))
      print(f"# workers {workers}, mol_repeats {repeats}: {rate:.3f} conformers/s",
            file=sys.stderr, flush=True)
  return rows


def throughput_plot(rows: list[dict], path: str) -> None:
  """Unique conformers/s of training per (workers, mol_repeats) beside PySCF's labels/s, with the
  ratio and the host-wait fraction written on each bar."""
  from .common import pyplot, save_figure
  plt = pyplot()
  figure, ax = plt.subplots(figsize=(max(7, 1.3 * len(rows)), 4.5))
  names = [f"{r['molecule']}, {r['workers']} workers\nmol_repeats {r['mol_repeats']}"
           + ("\nAO on device" if r.get("ao_on_device") else "") + f"\n{r['date'][:10]}"
           for r in rows]  # the date: appended rows of several code versions share the plot
  at = range(len(rows))
  bars = ax.bar([i - 0.2 for i in at], [r["unique_conformers_per_s"] for r in rows], 0.4,
                label="QPT training (unique conformers)")
  ax.bar([i + 0.2 for i in at], [r["pyscf_labels_per_s"] for r in rows], 0.4,
         label="PySCF labels (full SCF), same run")
  for bar, r in zip(bars, rows):
    ax.annotate(f"{r['ratio']:.2f}×\nhost wait {r['host_wait_fraction']:.2f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                fontsize=8)
  ax.set_xticks(list(at), names, fontsize=7)
  ax.set_yscale("log")  # molecules differ by 10× in rate
  ax.set_ylim(top=3 * max(r["unique_conformers_per_s"] for r in rows))
  ax.set(ylabel="unique conformers / s",
         title=f"{', '.join(dict.fromkeys(r['basis'] for r in rows))}: training vs labelling")
  ax.legend(fontsize=8)
  save_figure(figure, path)


THROUGHPUT = Command(
    help="training's unique conformers/s (workers + device) vs PySCF labels/s",
    add_arguments=throughput_arguments,
    run=throughput_run,
    columns=(("molecule", "molecule", "s"), ("basis", "basis", "s"), ("workers", "workers", "d"),
             ("repeats", "mol_repeats", "d"), ("step s", "step_seconds", ".2f"),
             ("conformers/s", "unique_conformers_per_s", ".3f"),
             ("host wait", "host_wait_fraction", ".2f"),
             ("pyscf labels/s", "pyscf_labels_per_s", ".3f"), ("ratio", "ratio", ".2f")),
    plot=throughput_plot,
)


# ---- inference: qpt.predict vs a full PySCF SCF, and SCF cycles from the prediction ----------------


def inference_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--workdir", default="", help="a trained run (its config.json and checkpoint)")
  parser.add_argument("--n", type=int, default=10, help="held-out conformers")
  parser.add_argument("--shrink", default=[], type=_factors,
                      help="λ values, e.g. 0.5,0.3,0.1: also PySCF's cycles from D* + λ (D(H_pred) − "
                           "D*), D* its converged density — a model with λ × this one's density "
                           "error (JSON keys cycles_error_x<λ>)")


def _factors(text: str) -> list[str]:
  """--shrink's λ values, as written (they name the JSON keys): numbers ≥ 0."""
  values = comma_list(text)
  for value in values:
    try:
      ok = float(value) >= 0
    except ValueError:
      ok = False
    if not ok:
      raise argparse.ArgumentTypeError(f"{value!r} is not a number ≥ 0")
  return values


def inference_run(args: argparse.Namespace) -> list[dict]:
  """Per held-out conformer of the run's test source, in the lab frame: qpt.predict (host problem
  build + device) vs PySCF's SCF from minao, and PySCF's cycles and time from the prediction."""
  from qpt import experiment, labels, run_config

  if not args.workdir:
    raise qpt.InputError("--workdir: name a trained run (e.g. workdir/water after `make run`)")
  config = run_config.saved(args.workdir)
  test = experiment.sources(config, args.workdir).test
  trained = qpt.load_model(args.workdir)
  theory = trained.level
  qpt.predict(trained, test(0))  # compile once; not an inference cost
  where = stamp()
  rows = []
  for i in range(args.n):
    molecule = test(i)
    prediction, predict_seconds = timed(lambda: qpt.predict(trained, molecule))
    mol = molecule.to_pyscf(theory.basis)
    minao, restart = labels.pyscf_rks(mol, theory), labels.pyscf_rks(mol, theory)
    _, scf_seconds = timed(lambda: labels.converge(minao))
    _, restart_seconds = timed(lambda: labels.converge(restart, qpt.to_pyscf_dm0(prediction)))
    converged = minao.make_rdm1()
    error = qpt.to_pyscf_dm0(prediction) - converged
    shrunk = {f"cycles_error_x{lam}": labels.converge(
        labels.pyscf_rks(mol, theory), converged + float(lam) * error).cycles
        for lam in args.shrink}
    rows.append(dict(molecule=config.molecule, conformer=i, basis=theory.basis,
                     predict_seconds=predict_seconds, pyscf_scf_seconds=scf_seconds,
                     ratio=predict_seconds / scf_seconds, cycles_minao=minao.cycles,
                     cycles_from_prediction=restart.cycles,
                     cycle_ratio=restart.cycles / minao.cycles,
                     scf_seconds_from_prediction=restart_seconds,
                     energy_error_uha=(prediction.energy - minao.e_tot) * 1e6,
                     **shrunk, **where))
  return rows


def inference_plot(rows: list[dict], path: str) -> None:
  """Per held-out conformer of each molecule: qpt.predict and PySCF's SCF from minao and from the
  prediction (seconds, left); PySCF's cycles from minao and from the prediction (right)."""
  from .common import pyplot, save_figure
  plt = pyplot()
  figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  for molecule, marker in zip(dict.fromkeys(r["molecule"] for r in rows), "os^vD"):
    mine = [r for r in rows if r["molecule"] == molecule]
    i = [r["conformer"] for r in mine]
    for color, (key, label) in enumerate((("predict_seconds", "qpt.predict"),
                                          ("pyscf_scf_seconds", "PySCF SCF from minao"),
                                          ("scf_seconds_from_prediction", "PySCF from the prediction"))):
      left.plot(i, [r[key] for r in mine], marker=marker, color=f"C{color}",
                label=f"{molecule}: {label}")
    for color, (key, label) in enumerate((("cycles_minao", "from minao"),
                                          ("cycles_from_prediction", "from the prediction"))):
      right.plot(i, [r[key] for r in mine], marker=marker, color=f"C{color}",
                 label=f"{molecule}: {label}")
  left.set(xlabel="held-out conformer", ylabel="seconds", ylim=(0, None), yscale="linear",
           title="time")
  right.set(xlabel="held-out conformer", ylabel="PySCF SCF cycles", ylim=(0, None),
            title="cycles to convergence")
  left.legend(fontsize=7)
  right.legend(fontsize=7)
  save_figure(figure, path)


INFERENCE = Command(
    help="qpt.predict vs a full PySCF SCF; SCF cycles from the predicted density vs minao",
    add_arguments=inference_arguments,
    run=inference_run,
    columns=(("molecule", "molecule", "s"), ("i", "conformer", "d"), ("basis", "basis", "s"),
             ("predict s", "predict_seconds", ".3f"), ("pyscf scf s", "pyscf_scf_seconds", ".3f"),
             ("ratio", "ratio", ".2f"), ("cycles minao", "cycles_minao", "d"),
             ("cycles from qpt", "cycles_from_prediction", "d"), ("cycle ratio", "cycle_ratio", ".2f"),
             ("ΔE µHa", "energy_error_uha", ".1f")),
    plot=inference_plot,
)


