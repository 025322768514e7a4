"""Benchmarks QPT against PySCF, side by side in one process: one sub-command per question.

  energy   The QPT loss and its gradient, E[D_k(H)] − E_ref and ∂/∂H (float32, jitted), for
           k = 0 and k = 3 unrolled SCF steps (mixing (0, 0.5, 0)), against what PySCF spends on
           one SCF iteration (`get_veff` + `energy_tot`) for the same molecule, basis, functional
           and grid; and `build_problem` against PySCF's own setup (grids, MINAO guess, ERIs or
           DF tensors).

  scaling  The real compiled train step (tiny model, energy loss, k = 0, fixed global batch) on
           1, 2 and 4 fake CPU devices, one fresh process each: step time, conformers/s and the
           cost per conformer against one device. On a 2-core machine this measures the
           overhead of sharding (shard_map, pmean, layout), not a speed-up.

  throughput  Training as md17.py runs it — thermal stream, host workers, device step — in unique
           conformers/s (a problem reused for mol_repeats steps counts once), and the host-wait
           fraction, against PySCF labels/s (full SCF from minao at the same level) measured in
           the same run.

  economics  The paper's claim at laptop scale: wall time for label-free QPT (and the label-free
           self_consistency loss) to reach held-out targets — energy MAE of E[D(H)] ≤ 300 and
           ≤ 100 µHa, occupied-ε MAE of F[D(H)] ≤ 1000 µHa — against the supervised route with the
           same model, whose PySCF labels are part of its time. Learning curves in economics.png.
           Takes ~20 min for water; run by hand, never by the tests.

  inference  `qpt.predict` of a trained run (--workdir) on its held-out conformers, in the lab
           frame, against a full PySCF SCF; PySCF's cycles from the predicted density vs minao.

  .venv/bin/python tools/benchmark.py energy
  .venv/bin/python tools/benchmark.py scaling --devices 1,2,4 --molecule water --basis def2-svp
  .venv/bin/python tools/benchmark.py energy --molecules water,ethanol --basis sto-3g,def2-svp
  .venv/bin/python tools/benchmark.py energy --eri df --xc pbe --repeats 9 --json

Every sub-command prints a table (or, with --json, a JSON list of row dicts) and writes that list to
benchmarks/results/<sub-command>.json. Times are medians of --repeats runs after a warm-up, so
neither side pays one-time costs in the per-iteration numbers:
  * qpt_seconds: one call of the compiled program, to `block_until_ready`; H = MINAO Fock matrix.
  * compile_seconds: trace + XLA compile of that program, as it happened in this process. Programs
    are kept in the persistent cache .jax_cache, so a second run pays only the trace (reported
    alone as trace_seconds: Python-side, no cache can skip it) and a short cache load.
  * pyscf_iteration_seconds: `mf.get_veff(mol, dm)` + `mf.energy_tot(dm, h1e, vhf)` at dm = MINAO,
    with grids, h1e and the 4-index ERIs (dense) or DF tensors (df) built beforehand.
  * build_seconds: `qpt.dft.build_problem`; pyscf_setup_seconds: the same pieces PySCF builds
    before its first iteration (MINAO guess, pruned grids, h1e, ERIs or DF tensors).
Ratios are qpt / PySCF: below 1 means QPT is faster.

Threads: both codes use every core by default (2 on the reference machine): PySCF through OpenMP
(OMP_NUM_THREADS unset → all cores; `pyscf_threads` in the machine record), XLA's CPU client
through its own thread pool. Set OMP_NUM_THREADS only if you also restrict XLA, or the comparison
is no longer like for like. On a shared 2-core machine expect ±2× run-to-run noise
(../shared/NUMERICS.md).

Reference (2-core AMD EPYC, b3lyp5, level-3 grid, def2-SVP; ../shared/NUMERICS.md): a naive dense
float32 E+∇ took 0.02 s (water), 0.26 s (ethanol), 1.2 s (uracil), ratios 0.2–0.8 to one PySCF
iteration; the first uracil compile took ~1 min.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from typing import Callable

import jax
import numpy as np
import pyscf.df
from pyscf import dft, lib

import qpt
from qpt import cli, xc as xc_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # experiments/ (the configs) is not an installed package
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
JAX_CACHE = os.path.join(ROOT, ".jax_cache")


# ---- shared plumbing ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Command:
  """A benchmark sub-command.

  Attributes:
    help: one line for `benchmark.py --help`.
    add_arguments: adds the sub-command's own options to its argparse sub-parser.
    run: args → list of row dicts (JSON-serialisable).
    columns: ((header, row key, format spec), ...) for the table.
  """

  help: str
  add_arguments: Callable[[argparse.ArgumentParser], None]
  run: Callable[[argparse.Namespace], list[dict]]
  columns: tuple[tuple[str, str, str], ...]


COMMANDS: dict[str, Command] = {}  # name → Command; each section below registers one


def machine() -> dict:
  """Where the numbers were measured: they mean little without it."""
  return dict(platform=platform.platform(), processor=_processor_name(), cores=os.cpu_count(),
              pyscf_threads=lib.num_threads(), jax=jax.__version__, pyscf=pyscf.__version__)


def _processor_name() -> str:
  # platform.processor() is often just "x86_64" on Linux; the CPU model is in /proc/cpuinfo.
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
  """Median wall time of `repeats` calls of fn (which must block until its work is done)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def timed(fn: Callable[[], object]) -> tuple[object, float]:
  """(fn(), wall seconds) for a single call."""
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def comma_list(text: str) -> list[str]:
  items = [s.strip().lower() for s in text.split(",") if s.strip()]
  if not items:
    raise qpt.InputError(f"empty list {text!r}")
  return list(dict.fromkeys(items))


def print_table(columns, rows: list[dict]):
  cell = lambda value, spec: "—" if value is None else format(value, spec)  # None: not reached
  widths = [max([len(h)] + [len(cell(r[k], f)) for r in rows]) for h, k, f in columns]
  print("  ".join(f"{h:>{w}}" for (h, _, _), w in zip(columns, widths)))
  for r in rows:
    print("  ".join(f"{cell(r[k], f):>{w}}" for (_, k, f), w in zip(columns, widths)))


def write_results(name: str, rows: list[dict]) -> str:
  os.makedirs(RESULTS_DIR, exist_ok=True)
  path = os.path.join(RESULTS_DIR, f"{name}.json")
  with open(path, "w") as f:
    json.dump(rows, f, indent=1)
  return path


# ---- energy: loss + gradient vs one PySCF iteration -----------------------------------------

ENERGY_STEPS = ((0, 0.0), (3, (0.0, 0.5, 0.0)))  # (k, mixing): the paper's unrolled loss and k = 0


def energy_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--molecules", default="water,ethanol,malondialdehyde,uracil",
                      help="comma list of built-in molecules")
  parser.add_argument("--basis", default="sto-3g,def2-svp", help="comma list of basis sets")
  parser.add_argument("--xc", default="b3lyp5", help="functional, PySCF's name (default b3lyp5)")
  parser.add_argument("--eri", default="dense", choices=("dense", "df"))
  parser.add_argument("--grid-level", type=int, default=3, help="PySCF grid level (default 3)")
  parser.add_argument("--repeats", type=int, default=5, help="timed runs per number (median)")


def energy_run(args: argparse.Namespace) -> list[dict]:
  """Rows for every molecule × basis × k, measured in that order."""
  if args.repeats < 1:
    raise qpt.InputError(f"--repeats {args.repeats}: need at least 1")
  if not 0 <= args.grid_level <= 9:  # checked here: PySCF's setup runs before build_problem
    raise qpt.InputError(f"--grid-level {args.grid_level}: PySCF grid levels are 0..9")
  xc = xc_lib.functional(args.xc).name
  molecules = [qpt.molecules.get(m) for m in comma_list(args.molecules)]
  bases = comma_list(args.basis)
  for m in molecules:  # a missing basis fails now, not after an hour of timings
    for b in bases:
      m.to_pyscf(b)
  date = datetime.datetime.now().astimezone().isoformat("T", "seconds")
  stamp = dict(machine=machine(), date=date)
  rows = []
  for molecule in molecules:
    for basis in bases:
      for row in energy_case(molecule, basis, xc, args.eri, args.grid_level, args.repeats):
        rows.append(dict(row, **stamp))
        print(f"# {row['molecule']} {row['basis']} k={row['k']}: {row['qpt_seconds']:.4f} s",
              file=sys.stderr, flush=True)  # progress; stdout stays the table or the JSON
  return rows


def energy_case(molecule: qpt.Molecule, basis: str, xc: str, eri: str, grid_level: int,
                repeats: int) -> list[dict]:
  """Both codes on one molecule/basis: one row per k."""
  mol = molecule.to_pyscf(basis)
  pyscf_setup, pyscf_seconds, n_grid = pyscf_iteration(mol, xc, eri, grid_level, repeats)
  problem, build_seconds = timed(functools.partial(
      qpt.dft.build_problem, molecule, basis=basis, xc=xc, grid_level=grid_level, eri=eri,
      dtype="float32"))
  problem = jax.tree.map(jax.numpy.asarray, problem)  # on the device once, not at every call
  h = jax.block_until_ready(jax.jit(qpt.dft.initial_fock)(problem))
  rows = []
  for k, mixing in ENERGY_STEPS:
    trace_seconds, compile_seconds, qpt_seconds = loss_and_gradient(problem, h, k, mixing, repeats)
    rows.append(dict(
        molecule=molecule.name, basis=basis, k=k, n_ao=mol.nao, n_grid=n_grid,
        qpt_seconds=qpt_seconds, pyscf_iteration_seconds=pyscf_seconds,
        ratio=qpt_seconds / pyscf_seconds, compile_seconds=compile_seconds,
        trace_seconds=trace_seconds,
        build_seconds=build_seconds, pyscf_setup_seconds=pyscf_setup,
        build_ratio=build_seconds / pyscf_setup))
  return rows


def loss_and_gradient(problem, h, k: int, mixing, repeats: int) -> tuple[float, float, float]:
  """(trace seconds, trace + compile seconds, median seconds of one call) for the loss and ∂/∂H.

  Tracing is reported on its own because the persistent cache cannot skip it: with a warm cache it
  is most of `compile_seconds`.
  """
  loss = functools.partial(qpt.dft.loss_energy_delta, iterations=k, mixing=mixing)
  step = jax.jit(jax.value_and_grad(loss, argnums=1))
  lowered, trace_seconds = timed(lambda: step.lower(problem, h))
  compiled, xla_seconds = timed(lowered.compile)
  call = lambda: jax.block_until_ready(compiled(problem, h))
  call()  # warm-up: first-touch allocations and thread-pool start are not the iteration's cost
  return trace_seconds, trace_seconds + xla_seconds, median_seconds(call, repeats)


def pyscf_iteration(mol, xc: str, eri: str, grid_level: int,
                    repeats: int) -> tuple[float, float, int]:
  """(setup seconds, median seconds of one SCF iteration, grid points) for PySCF's RKS.

  Setup is what PySCF builds before its first iteration and never again: the MINAO guess, the
  grid (pruned with that guess, as `kernel` does), h1e, and the ERIs — the in-core 8-fold tensor
  `get_jk` would create on first use, or the DF tensors with the JK-fit basis QPT uses.
  """
  def setup():
    mf = dft.RKS(mol, xc=xc)
    if eri == "df":
      mf = mf.density_fit(auxbasis=pyscf.df.make_auxbasis(mol))
    mf.grids.level = grid_level
    mf.verbose = 0
    dm = mf.get_init_guess(mol, "minao")
    mf.initialize_grids(mol, dm)
    h1e = mf.get_hcore(mol)
    if eri == "df":
      mf.with_df.build()
    else:
      mf._eri = mol.intor("int2e", aosym="s8")
    return mf, dm, h1e

  (mf, dm, h1e), setup_seconds = timed(setup)

  def iteration():
    vhf = mf.get_veff(mol, dm)
    return mf.energy_tot(dm, h1e, vhf)

  iteration()  # warm-up, as for QPT
  return setup_seconds, median_seconds(iteration, repeats), int(mf.grids.weights.size)


COMMANDS["energy"] = Command(
    help="loss + gradient (k = 0, 3) vs one PySCF SCF iteration; build vs PySCF setup",
    add_arguments=energy_arguments,
    run=energy_run,
    columns=(("molecule", "molecule", "s"), ("basis", "basis", "s"), ("k", "k", "d"),
             ("n_ao", "n_ao", "d"), ("grid", "n_grid", "d"), ("qpt s", "qpt_seconds", ".4f"),
             ("pyscf iter s", "pyscf_iteration_seconds", ".4f"), ("ratio", "ratio", ".2f"),
             ("compile s", "compile_seconds", ".2f"), ("trace s", "trace_seconds", ".2f"),
             ("build s", "build_seconds", ".3f"), ("pyscf setup s", "pyscf_setup_seconds", ".3f"),
             ("build ratio", "build_ratio", ".2f")),
)


# ---- scaling: the sharded train step on 1, 2, 4 (fake) devices ---------------------------------


def scaling_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--devices", default="1,2,4", help="comma list of device counts")
  parser.add_argument("--molecule", default="water", help="built-in molecule")
  parser.add_argument("--basis", default="def2-svp")
  parser.add_argument("--batch", type=int, default=4, help="global batch (divisible by each count)")
  parser.add_argument("--repeats", type=int, default=5, help="timed steps (median)")
  parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)  # one count, here


def scaling_run(args: argparse.Namespace) -> list[dict]:
  """One fresh process per device count (fake CPU devices are fixed when JAX starts)."""
  if args.child:
    return [device_step(args)]
  counts = [int(n) for n in comma_list(args.devices)]
  if any(n < 1 or args.batch % n for n in counts):
    raise qpt.InputError(f"--batch {args.batch} must divide over every device count {counts}")
  date = datetime.datetime.now().astimezone().isoformat("T", "seconds")
  rows = []
  for n in counts:
    child = [sys.executable, os.path.abspath(__file__), "scaling", "--json", "--child", str(n),
             "--molecule", args.molecule, "--basis", args.basis, "--batch", str(args.batch),
             "--repeats", str(args.repeats)]
    out = subprocess.run(child, capture_output=True, text=True)
    if out.returncode:
      raise qpt.InputError(f"the {n}-device run failed: {out.stderr.strip().splitlines()[-1]}")
    rows.append(dict(json.loads(out.stdout)[0], machine=machine(), date=date))
    print(f"# {n} devices: {rows[-1]['step_seconds']:.3f} s per step", file=sys.stderr, flush=True)
  for row in rows:  # per conformer, against one device: the cost of sharding on this machine
    row["ratio"] = row["seconds_per_conformer"] / rows[0]["seconds_per_conformer"]
  return rows


def device_step(args: argparse.Namespace) -> dict:
  """Median time of the real compiled train step (tiny model, energy loss, k = 0) on n devices."""
  from experiments.configs import md17
  from qpt import backends, frame, model as model_lib, train

  config = md17.get_config("water")
  config.backend.cpu_devices, config.basis = args.child, args.basis
  backend = backends.create(config)
  backend.check_batch_size(args.batch)
  problem = qpt.dft.build_problem(frame.canonical_molecule(qpt.molecules.get(args.molecule)),
                                  basis=args.basis, xc=config.xc, grid_level=config.grid_level)
  batch = jax.tree.map(lambda a: np.stack([a] * args.batch), problem)
  model = model_lib.make_model(model_lib.model_config(config.model.size))
  tx, schedule = train.make_optimizer(config.train)
  step = train.make_train_step(model, tx, train.conformer_loss("energy", 0, ()), schedule, backend)
  state = train.init_state(model, tx, 0, batch, backend)
  batch = backend.put_batch(batch)
  holder = [state]

  def one_step():
    holder[0], metrics = step(holder[0], batch, None)
    jax.block_until_ready(metrics)

  _, first = timed(one_step)  # compile + first call
  seconds = median_seconds(one_step, args.repeats)
  return dict(devices=args.child, molecule=args.molecule, basis=args.basis, batch=args.batch,
              step_seconds=seconds, conformers_per_s=args.batch / seconds,
              seconds_per_conformer=seconds / args.batch, first_step_seconds=first)


COMMANDS["scaling"] = Command(
    help="the sharded train step on 1, 2, 4 fake CPU devices (overhead per conformer)",
    add_arguments=scaling_arguments,
    run=scaling_run,
    columns=(("devices", "devices", "d"), ("molecule", "molecule", "s"), ("basis", "basis", "s"),
             ("batch", "batch", "d"), ("step s", "step_seconds", ".3f"),
             ("conformers/s", "conformers_per_s", ".2f"), ("ratio", "ratio", ".2f")),
)


# ---- throughput: unique conformers/s of the real training pipeline vs PySCF labels/s -------------


def throughput_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--molecule", default="ethanol", help="built-in molecule")
  parser.add_argument("--basis", default="def2-svp")
  parser.add_argument("--workers", default="2", help="comma list of host worker counts")
  parser.add_argument("--mol-repeats", default="1,4", help="comma list of steps per problem")
  parser.add_argument("--batch", type=int, default=2, help="global batch")
  parser.add_argument("--steps", type=int, default=40, help="training steps per measurement")
  parser.add_argument("--labels", type=int, default=4, help="conformers PySCF labels")


def throughput_run(args: argparse.Namespace) -> list[dict]:
  """`experiment.train` as md17.py runs it (thermal stream, workers, device step), timed from its
  metrics after a warm-up, against full PySCF SCFs (minao start) of the same stream's conformers."""
  import tempfile

  from experiments.configs import md17
  from qpt import conformers, evaluate, experiment, frame

  date = datetime.datetime.now().astimezone().isoformat("T", "seconds")
  config = md17.get_config(args.molecule)
  config.basis = args.basis
  sampler = conformers.ThermalSampler(qpt.molecules.get(args.molecule), config.data.temperature)
  molecules = [frame.canonical_molecule(sampler(i)) for i in range(args.labels)]
  _, label_seconds = timed(lambda: evaluate.label(molecules, config.basis, config.xc,
                                                  config.grid_level, config.eri))
  pyscf_rate = args.labels / label_seconds
  rows = []
  for workers in (int(w) for w in comma_list(args.workers)):
    for repeats in (int(r) for r in comma_list(args.mol_repeats)):
      with tempfile.TemporaryDirectory() as workdir:
        c = md17.get_config(args.molecule)
        c.workdir, c.basis, c.data.workers, c.data.mol_repeats = workdir, args.basis, workers, repeats
        c.train.batch_size, c.train.steps, c.log_every = args.batch, args.steps, 1
        c.eval.every, c.eval.n_conformers, c.checkpoint.every = 0, 0, args.steps
        experiment.train(c, progress=False)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
          records = [json.loads(line) for line in f]
      first, last = records[len(records) // 4], records[-1]  # past compilation and pool start
      seen = lambda r: r["unique_conformers_per_s"] * r["seconds"]
      waited = lambda r: r["host_wait_fraction"] * r["seconds"]
      span = last["seconds"] - first["seconds"]
      rate = (seen(last) - seen(first)) / span
      rows.append(dict(molecule=args.molecule, basis=args.basis, workers=workers,
                       mol_repeats=repeats, batch=args.batch,
                       step_seconds=span / (last["step"] - first["step"]),
                       unique_conformers_per_s=rate,
                       host_wait_fraction=(waited(last) - waited(first)) / span,
                       pyscf_labels_per_s=pyscf_rate, ratio=rate / pyscf_rate,
                       machine=machine(), date=date))
      print(f"# workers {workers}, mol_repeats {repeats}: {rate:.3f} conformers/s",
            file=sys.stderr, flush=True)
  return rows


COMMANDS["throughput"] = Command(
    help="training's unique conformers/s (workers + device) vs PySCF labels/s",
    add_arguments=throughput_arguments,
    run=throughput_run,
    columns=(("molecule", "molecule", "s"), ("basis", "basis", "s"), ("workers", "workers", "d"),
             ("repeats", "mol_repeats", "d"), ("step s", "step_seconds", ".2f"),
             ("conformers/s", "unique_conformers_per_s", ".3f"),
             ("host wait", "host_wait_fraction", ".2f"),
             ("pyscf labels/s", "pyscf_labels_per_s", ".3f"), ("ratio", "ratio", ".2f")),
)


# ---- inference: qpt.predict vs a full PySCF SCF, and SCF cycles from the prediction ----------------


def inference_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--workdir", required=True, help="a trained run (its config.json and checkpoint)")
  parser.add_argument("--n", type=int, default=10, help="held-out conformers")


def inference_run(args: argparse.Namespace) -> list[dict]:
  """Per held-out conformer of the run's test stream, in the lab frame: qpt.predict (host problem
  build + device) vs PySCF's SCF from minao, and PySCF's cycles and time from the prediction."""
  from qpt import conformers, evaluate, experiment

  try:
    with open(os.path.join(args.workdir, "config.json")) as f:
      config = json.load(f)["config"]
  except (OSError, KeyError, ValueError):
    raise qpt.InputError(f"{args.workdir}: no config.json of a training run") from None
  params = qpt.load_params(args.workdir)
  theory = dict(basis=config["basis"], xc=config["xc"], grid_level=config["grid_level"],
                eri=config["eri"])
  sampler = conformers.ThermalSampler(
      qpt.molecules.get(config["molecule"]), config["data.temperature"],
      seed=config["seed"] + experiment.HELD_OUT_SEED_OFFSET,
      cache_dir=os.path.join(args.workdir, "cache"))
  qpt.predict(params, sampler(0), **theory)  # compile once; not an inference cost
  date = datetime.datetime.now().astimezone().isoformat("T", "seconds")
  rows = []
  for i in range(args.n):
    molecule = sampler(i)
    prediction, predict_seconds = timed(lambda: qpt.predict(params, molecule, **theory))
    mol = molecule.to_pyscf(theory["basis"])
    pyscf_args = (theory["xc"], theory["grid_level"], theory["eri"])
    minao = evaluate.pyscf_rks(mol, *pyscf_args)
    restart = evaluate.pyscf_rks(mol, *pyscf_args)
    _, scf_seconds = timed(minao.kernel)
    _, restart_seconds = timed(lambda: restart.kernel(dm0=qpt.to_pyscf_dm0(prediction)))
    rows.append(dict(molecule=config["molecule"], conformer=i, basis=theory["basis"],
                     predict_seconds=predict_seconds, pyscf_scf_seconds=scf_seconds,
                     ratio=predict_seconds / scf_seconds, cycles_minao=minao.cycles,
                     cycles_from_prediction=restart.cycles,
                     cycle_ratio=restart.cycles / minao.cycles,
                     scf_seconds_from_prediction=restart_seconds,
                     energy_error_uha=(prediction.energy - minao.e_tot) * 1e6,
                     machine=machine(), date=date))
  return rows


COMMANDS["inference"] = Command(
    help="qpt.predict vs a full PySCF SCF; SCF cycles from the predicted density vs minao",
    add_arguments=inference_arguments,
    run=inference_run,
    columns=(("molecule", "molecule", "s"), ("i", "conformer", "d"), ("basis", "basis", "s"),
             ("predict s", "predict_seconds", ".3f"), ("pyscf scf s", "pyscf_scf_seconds", ".3f"),
             ("ratio", "ratio", ".2f"), ("cycles minao", "cycles_minao", "d"),
             ("cycles from qpt", "cycles_from_prediction", "d"), ("cycle ratio", "cycle_ratio", ".2f"),
             ("ΔE µHa", "energy_error_uha", ".1f")),
)


# ---- economics: wall time to a target, label-free vs labels + supervised --------------------------

TARGETS = (("energy_mae_uha", 300.0), ("energy_mae_uha", 100.0), ("eps_occ_mae_uha", 1000.0))
ROUTES = ("qpt", "self_consistency", "supervised")  # route → loss: qpt is the energy loss
LEARNING_CURVES_PNG = os.path.join(RESULTS_DIR, "economics.png")


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

  from experiments.configs import md17
  from qpt import experiment

  routes = comma_list(args.routes)
  if any(r not in ROUTES for r in routes):
    raise qpt.InputError(f"--routes {args.routes}: choose from {', '.join(ROUTES)}")
  date = datetime.datetime.now().astimezone().isoformat("T", "seconds")
  rows, curves = [], {}
  with tempfile.TemporaryDirectory() as scratch:
    root = args.workdir or scratch
    for name in comma_list(args.molecules):
      for route in routes:
        c = md17.get_config(name)
        c.workdir = os.path.join(root, f"{name}_{route}")
        c.loss = "energy" if route == "qpt" else route
        c.train.steps, c.eval.every, c.eval.n_validation = args.steps, args.eval_every, args.held_out
        c.eval.n_conformers = 0
        if route == "supervised":
          c.data.mol_repeats = args.supervised_repeats
        experiment.train(c, progress=False)
        with open(os.path.join(c.workdir, "metrics.jsonl")) as f:
          scored = [r for r in map(json.loads, f) if "val_energy_mae_uha" in r]
        curves[(name, route)] = scored
        for key, bound in TARGETS:
          hit = next((r for r in scored if r["val_" + key] <= bound), None)
          rows.append(dict(
              molecule=name, route=route, target=f"{key}<={bound:g}", reached=hit is not None,
              seconds=hit["seconds"] if hit else None, step=hit["step"] if hit else None,
              n_labels=(round(hit["unique_conformers_per_s"] * hit["seconds"])
                        if hit and route == "supervised" else 0),
              best=min(r["val_" + key] for r in scored), machine=machine(), date=date))
        print(f"# {name} {route}: best energy MAE {rows[-3]['best']:.0f} µHa",
              file=sys.stderr, flush=True)
  for row in rows:  # time against the label-free QPT route to the same target
    qpt_row = next((r for r in rows if r["molecule"] == row["molecule"] and r["route"] == "qpt"
                    and r["target"] == row["target"]), None)
    both = qpt_row and qpt_row["reached"] and row["reached"]
    row["ratio"] = row["seconds"] / qpt_row["seconds"] if both else None
  plot_learning_curves(curves)
  return rows


def plot_learning_curves(curves: dict) -> None:
  """Held-out energy and ε MAE against training wall time, one line per route."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  figure, axes = plt.subplots(1, 2, figsize=(11, 4))
  for (name, route), scored in curves.items():
    for ax, key in zip(axes, ("val_energy_mae_uha", "val_eps_occ_mae_uha")):
      ax.plot([r["seconds"] for r in scored], [r[key] for r in scored], marker="o", ms=3,
              label=f"{name}: {route}")
  for ax, (title, bounds) in zip(axes, (("energy MAE of E[D(H)] (µHa)", (300, 100)),
                                        ("occupied ε MAE of F[D(H)] (µHa)", (1000,)))):
    for bound in bounds:
      ax.axhline(bound, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="training wall time (s), labels included", yscale="log", title=title)
    ax.legend(fontsize=8)
  figure.tight_layout()
  os.makedirs(RESULTS_DIR, exist_ok=True)
  figure.savefig(LEARNING_CURVES_PNG, dpi=100)
  plt.close(figure)


COMMANDS["economics"] = Command(
    help="wall time to held-out targets: label-free QPT vs labels + supervised (same model)",
    add_arguments=economics_arguments,
    run=economics_run,
    columns=(("molecule", "molecule", "s"), ("route", "route", "s"), ("target", "target", "s"),
             ("reached", "reached", ""), ("seconds", "seconds", ".0f"), ("step", "step", ""),
             ("n_labels", "n_labels", "d"), ("best", "best", ".0f"), ("ratio", "ratio", ".2f")),
)


# ---- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = cli.OneLineParser(prog="benchmark.py", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, command in COMMANDS.items():
    p = sub.add_parser(name, help=command.help, description=command.help)
    p.add_argument("--json", action="store_true", help="print a JSON list of rows, no table")
    command.add_arguments(p)
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  # Compiled programs persist between runs; 0.5 s as in the tests, so small programs are kept too.
  jax.config.update("jax_compilation_cache_dir", JAX_CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  warnings.filterwarnings("ignore", message="Basis may be available")  # our error is enough
  command = COMMANDS[args.command]
  try:
    rows = command.run(args)
  except qpt.InputError as e:
    print(f"benchmark.py {args.command}: error: {e}", file=sys.stderr)
    return 2
  if getattr(args, "child", 0):  # a measurement for a parent process: no files
    print(json.dumps(rows))
    return 0
  path = write_results(args.command, rows)
  if args.json:
    print(json.dumps(rows, indent=1))
  else:
    if rows:
      m = rows[0]["machine"]
      print(f"# {m['processor']}, {m['cores']} cores, PySCF threads {m['pyscf_threads']}, "
            f"jax {m['jax']}, pyscf {m['pyscf']}, {rows[0]['date']}")
    print_table(command.columns, rows)
    print(f"# rows written to {os.path.relpath(path)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
