"""scaling: cost against system size (n_ao, dense and DF) and against device count."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import jax
import numpy as np

import qpt
from .common import (BENCHMARK_SCRIPT, Command, comma_list, device_counts, md17_config,
                     median_seconds, stamp, timed)

# Molecule/basis pairs from 24 to 358 AOs. def2-SVP for the molecules' sizes, then def2-TZVP to
# pass 300 AOs (no built-in molecule has that many in def2-SVP).
SERIES = ("water/def2-svp,ethanol/def2-svp,malondialdehyde/def2-svp,uracil/def2-svp,"
          "naphthalene/def2-svp,aspirin/def2-svp,uracil/def2-tzvp,naphthalene/def2-tzvp")
DENSE_MAX_AO = 200  # the 4-fold ERI matrix PySCF hands the Cholesky: (n²/2)² × 8 B, 2 GB at 180


def scaling_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--series", default=SERIES,
                      help="comma list of molecule/basis for the n_ao series ('' skips it)")
  parser.add_argument("--eri", default="dense,df", help="comma list of ERI modes for the series")
  parser.add_argument("--dense-max-ao", type=int, default=DENSE_MAX_AO,
                      help="largest n_ao run with dense ERIs (memory grows as n_ao⁴)")
  parser.add_argument("--devices", default="1,2,4",
                      help="comma list of device counts ('' skips them)")
  parser.add_argument("--molecules", default="water,ethanol",
                      help="comma list of built-in molecules for the device counts")
  parser.add_argument("--basis", default="def2-svp", help="basis for the device counts")
  parser.add_argument("--batch", type=int, default=4, help="global batch (divisible by each count)")
  parser.add_argument("--repeats", type=int, default=3, help="timed calls (median)")
  parser.add_argument("--rounds", type=int, default=3,
                      help="fresh processes per device count, the counts alternated (median)")
  parser.add_argument("--timeout", type=float, default=1800,
                      help="seconds one n_ao case may take (build, compile, timings, PySCF)")
  parser.add_argument("--step-timeout", type=float, default=300,
                      help="seconds one device count may take (a hang is reported, not waited on)")
  parser.add_argument("--molecule", help=argparse.SUPPRESS)  # the child's one molecule
  parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)  # one count, here
  parser.add_argument("--case", help=argparse.SUPPRESS)  # the child's molecule/basis/eri


def scaling_run(args: argparse.Namespace) -> list[dict]:
  """Each measurement in a fresh process: fake CPU devices are fixed when JAX starts, and a fresh
  process's peak memory is the measured case's own."""
  if args.child:
    return [device_step(args)]
  if args.case:
    return [size_case(args)]
  series = [tuple(case.split("/")) for case in comma_list(args.series)] if args.series else []
  if any(len(case) != 2 for case in series):
    raise qpt.InputError(f"--series {args.series!r}: write molecule/basis pairs")
  counts = device_counts(args.devices, args.batch) if args.devices else []
  if args.rounds < 1:
    raise qpt.InputError(f"--rounds {args.rounds}: must be at least 1")
  eri_modes = comma_list(args.eri)
  where = stamp()
  rows = []
  for molecule, basis in series:
    n_ao = qpt.molecules.get(molecule).to_pyscf(basis).nao  # a missing basis fails here, early
    for eri in eri_modes:
      if eri == "dense" and n_ao > args.dense_max_ao:
        continue
      row = child(args, ["--case", f"{molecule}/{basis}/{eri}"], f"{molecule}/{basis} {eri}",
                  args.timeout)
      rows.append(dict(row or dict(molecule=molecule, basis=basis, eri=eri, n_ao=n_ao),
                       part="n_ao", **where))
  rows += [dict(fit, part="fit", **where) for fit in exponents(rows)]
  for molecule in comma_list(args.molecules) if counts else []:
    # Round after round of every count: the machine's pace drifts by tens of per cent within
    # minutes (docs/results.md §9), and alternating gives each count the same drift.
    runs = {n: [] for n in counts}
    for _ in range(args.rounds):
      for n in counts:
        if None in runs[n]:  # hung once: reported as hung, not waited on again
          continue
        runs[n].append(child(args, ["--child", str(n), "--molecule", molecule,
                                    "--batch", str(args.batch)],
                             f"{molecule}, {n} devices", args.step_timeout))
    for n in counts:
      row = median_round(runs[n])
      rows.append(dict(row or dict(devices=n, molecule=molecule, basis=args.basis, hung=True),
                       part="devices", **where))
  for row in rows:  # per conformer, against one device: the cost of sharding on this machine
    if row["part"] == "devices":
      one = next(r for r in rows if r["part"] == "devices" and r["molecule"] == row["molecule"])
      both = row.get("seconds_per_conformer") and one.get("seconds_per_conformer")
      row["ratio"] = row["seconds_per_conformer"] / one["seconds_per_conformer"] if both else None
  return rows


def child(args: argparse.Namespace, extra: list[str], what: str, timeout: float) -> dict | None:
  """One measurement in a fresh process; None if it did not finish within `timeout` seconds."""
  command = [sys.executable, BENCHMARK_SCRIPT, "scaling", "--json", "--basis", args.basis,
             "--repeats", str(args.repeats)] + extra
  try:
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:  # seen: 2 fake devices × 2 ethanol/def2-SVP conformers each
    print(f"# {what}: not done within {timeout:g} s", file=sys.stderr)
    return None
  if out.returncode:
    raise qpt.InputError(f"{what} failed: {out.stderr.strip().splitlines()[-1]}")
  row = json.loads(out.stdout)[0]
  seconds = row.get("qpt_seconds", row.get("step_seconds"))
  print(f"# {what}: {seconds:.3f} s", file=sys.stderr, flush=True)
  return row


def median_round(runs: list[dict | None]) -> dict | None:
  """The row of the round with the median step time (the upper one of an even count), with every
  round's step time in `round_step_seconds`; None if any round hung."""
  if not runs or any(row is None for row in runs):
    return None
  ordered = sorted(runs, key=lambda row: row["step_seconds"])
  return dict(ordered[len(ordered) // 2], round_step_seconds=[row["step_seconds"] for row in runs])


def size_case(args: argparse.Namespace) -> dict:
  """Energy + gradient at k = 0 (float32) and one PySCF iteration, for one molecule/basis/eri."""
  from . import energy

  molecule, basis, eri = args.case.split("/")
  (row,) = energy.energy_case(qpt.molecules.get(molecule), qpt.Level(basis, "b3lyp5", 3, eri),
                              args.repeats, steps=((0, 0.0),))
  return row


def exponents(rows: list[dict]) -> list[dict]:
  """Least-squares slopes of log time against log n_ao, per ERI mode, for QPT and PySCF."""
  fits = []
  for eri in dict.fromkeys(r["eri"] for r in rows):
    done = [r for r in rows if r["eri"] == eri and r.get("qpt_seconds")]
    if len(done) < 3:
      continue
    log_n = np.log([r["n_ao"] for r in done])
    slope = lambda key: float(np.polyfit(log_n, np.log([r[key] for r in done]), 1)[0])
    fits.append(dict(eri=eri, points=len(done), n_ao_min=min(r["n_ao"] for r in done),
                     n_ao_max=max(r["n_ao"] for r in done), qpt_exponent=slope("qpt_seconds"),
                     pyscf_exponent=slope("pyscf_iteration_seconds"),
                     device_mb_exponent=slope("device_mb")))
  return fits


def device_step(args: argparse.Namespace) -> dict:
  """Median time of the real compiled train step of `make run`'s config (tiny model, energy loss,
  k = 0) on n devices, every device given the same conformer. Its problems are built at the run's
  evaluation level (`grid_level`, 3), not at the training grid `data.grid_level`, so the step is
  costlier than in `make run` itself."""
  from qpt import backends, experiment, frame

  config = md17_config("water")
  config.backend.cpu_devices, config.basis = args.child, args.basis
  backend = backends.create(config)
  backend.check_batch_size(args.batch)
  trainer = experiment.make_trainer(config, backend)
  problem = qpt.build_problem(frame.canonical_molecule(qpt.molecules.get(args.molecule)),
                              experiment.level(config))
  batch = jax.tree.map(lambda a: np.stack([a] * args.batch), problem)
  holder = [trainer.init_state(batch)]
  batch = backend.put_batch(batch)

  def one_step():
    holder[0], metrics = trainer.step(holder[0], batch, None)
    jax.block_until_ready(metrics)

  with backend.training_loop():  # the steps as training runs them
    _, first = timed(one_step)  # compile + first call
    seconds = median_seconds(one_step, args.repeats)
  return dict(devices=args.child, molecule=args.molecule, basis=args.basis, batch=args.batch,
              step_seconds=seconds, conformers_per_s=args.batch / seconds,
              seconds_per_conformer=seconds / args.batch, first_step_seconds=first)


def plot(rows: list[dict], path: str) -> None:
  """Left: seconds of E + ∇ (and one PySCF iteration) against n_ao, log-log, per ERI mode, with
  the fitted slopes. Right: seconds per conformer of the train step against device count."""
  from .common import pyplot, save_figure
  plt = pyplot()
  figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  fits = {r["eri"]: r for r in rows if r["part"] == "fit"}
  for eri, marker in (("dense", "o"), ("df", "s")):
    done = sorted((r for r in rows if r["part"] == "n_ao" and r.get("eri") == eri
                   and r.get("qpt_seconds")), key=lambda r: r["n_ao"])
    if not done:
      continue
    n = [r["n_ao"] for r in done]
    fit = fits.get(eri, {})
    left.plot(n, [r["qpt_seconds"] for r in done], marker=marker,
              label=f"QPT E+∇, {eri} (slope {fit.get('qpt_exponent', float('nan')):.2f})")
    left.plot(n, [r["pyscf_iteration_seconds"] for r in done], marker=marker, ls="--",
              label=f"PySCF iteration, {eri} (slope {fit.get('pyscf_exponent', float('nan')):.2f})")
  left.set(xscale="log", yscale="log", xlabel="n_ao", ylabel="seconds",
           title="energy + gradient (k = 0, float32) vs one PySCF iteration")
  left.set_xticks([25, 50, 100, 200, 400], ["25", "50", "100", "200", "400"])
  left.xaxis.set_minor_formatter(plt.NullFormatter())
  if left.lines:
    left.legend(fontsize=8)
  for molecule, batch in dict.fromkeys((r["molecule"], r.get("batch")) for r in rows
                                       if r["part"] == "devices"):
    done = [r for r in rows if r["part"] == "devices" and r["molecule"] == molecule
            and r.get("batch") == batch and r.get("seconds_per_conformer")]
    right.plot([r["devices"] for r in done], [r["seconds_per_conformer"] for r in done],
               marker="o", label=f"{molecule}, batch {batch}")
  right.set_xticks(sorted({r["devices"] for r in rows if r["part"] == "devices"}))
  right.set(xlabel="fake CPU devices (2 physical cores)", ylabel="seconds per conformer",
            title="train step, fixed global batch", yscale="log")
  if right.lines:
    right.legend(fontsize=8)
  save_figure(figure, path)


COMMAND = Command(
    help="cost vs n_ao (dense and DF, fitted exponents, memory) and vs 1/2/4 fake devices",
    add_arguments=scaling_arguments,
    run=scaling_run,
    columns={
        "n_ao": (("molecule", "molecule", "s"), ("basis", "basis", "s"), ("eri", "eri", "s"),
                 ("n_ao", "n_ao", "d"), ("grid", "n_grid", "d"), ("qpt s", "qpt_seconds", ".3f"),
                 ("pyscf iter s", "pyscf_iteration_seconds", ".3f"), ("ratio", "ratio", ".2f"),
                 ("device MB", "device_mb", ".0f"), ("peak RSS MB", "peak_rss_mb", ".0f"),
                 ("build s", "build_seconds", ".2f")),
        "fit": (("eri", "eri", "s"), ("points", "points", "d"), ("n_ao from", "n_ao_min", "d"),
                ("to", "n_ao_max", "d"), ("QPT exponent", "qpt_exponent", ".2f"),
                ("PySCF exponent", "pyscf_exponent", ".2f"),
                ("memory exponent", "device_mb_exponent", ".2f")),
        "devices": (("devices", "devices", "d"), ("molecule", "molecule", "s"),
                    ("basis", "basis", "s"), ("batch", "batch", "d"),
                    ("step s", "step_seconds", ".3f"), ("conformers/s", "conformers_per_s", ".2f"),
                    ("ratio", "ratio", ".2f"))},
    plot=plot,
)
