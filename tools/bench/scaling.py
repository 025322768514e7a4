"""scaling: the sharded train step on 1, 2, 4 fake CPU devices (the cost of sharding)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import jax
import numpy as np

import qpt
from tools.bench.common import (BENCHMARK_SCRIPT, Command, comma_list, median_seconds, stamp,
                                timed)


def scaling_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--devices", default="1,2,4", help="comma list of device counts")
  parser.add_argument("--molecules", default="water,ethanol", help="comma list of built-in molecules")
  parser.add_argument("--basis", default="def2-svp")
  parser.add_argument("--batch", type=int, default=4, help="global batch (divisible by each count)")
  parser.add_argument("--repeats", type=int, default=5, help="timed steps (median)")
  parser.add_argument("--timeout", type=float, default=300, help="seconds a device count may take")
  parser.add_argument("--molecule", help=argparse.SUPPRESS)  # the child's one molecule
  parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)  # one count, here


def scaling_run(args: argparse.Namespace) -> list[dict]:
  """One fresh process per device count (fake CPU devices are fixed when JAX starts)."""
  if args.child:
    return [device_step(args)]
  counts = [int(n) for n in comma_list(args.devices)]
  if any(n < 1 or args.batch % n for n in counts):
    raise qpt.InputError(f"--batch {args.batch} must divide over every device count {counts}")
  where = stamp()
  rows = []
  for molecule in comma_list(args.molecules):
    for n in counts:
      rows.append(dict(measure_devices(args, molecule, n), **where))
  for row in rows:  # per conformer, against one device: the cost of sharding on this machine
    one = next(r for r in rows if r["molecule"] == row["molecule"])
    both = row["seconds_per_conformer"] and one["seconds_per_conformer"]
    row["ratio"] = row["seconds_per_conformer"] / one["seconds_per_conformer"] if both else None
  return rows


def measure_devices(args: argparse.Namespace, molecule: str, n: int) -> dict:
  """One device count in a fresh process (fake CPU devices are fixed when JAX starts)."""
  child = [sys.executable, BENCHMARK_SCRIPT, "scaling", "--json", "--child", str(n),
           "--molecule", molecule, "--basis", args.basis, "--batch", str(args.batch),
           "--repeats", str(args.repeats)]
  try:
    out = subprocess.run(child, capture_output=True, text=True, timeout=args.timeout)
  except subprocess.TimeoutExpired:  # seen: 2 fake devices × 2 ethanol/def2-SVP conformers each
    print(f"# {molecule}, {n} devices: no step within {args.timeout:g} s (hung)", file=sys.stderr)
    return dict(devices=n, molecule=molecule, basis=args.basis, batch=args.batch,
                step_seconds=None, conformers_per_s=None, seconds_per_conformer=None, hung=True)
  if out.returncode:
    raise qpt.InputError(f"the {n}-device run failed: {out.stderr.strip().splitlines()[-1]}")
  row = json.loads(out.stdout)[0]
  print(f"# {molecule}, {n} devices: {row['step_seconds']:.3f} s per step", file=sys.stderr,
        flush=True)
  return row


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


COMMAND = Command(
    help="the sharded train step on 1, 2, 4 fake CPU devices (overhead per conformer)",
    add_arguments=scaling_arguments,
    run=scaling_run,
    columns=(("devices", "devices", "d"), ("molecule", "molecule", "s"), ("basis", "basis", "s"),
             ("batch", "batch", "d"), ("step s", "step_seconds", ".3f"),
             ("conformers/s", "conformers_per_s", ".2f"), ("ratio", "ratio", ".2f")),
)


