"""model-scaling: the train step's time and per-device memory against model size, device count and
the state's layout (replicated, or FSDP over the mesh's `model` axis)."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import jax
import numpy as np

import qpt
from .common import (BENCHMARK_SCRIPT, Command, comma_list, device_counts, md17_config,
                     median_seconds, stamp, timed)

SIZES = "tiny,small,base,medium"
LAYOUTS = ("replicated", "fsdp")


def arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--sizes", default=SIZES, help="comma list of model presets")
  parser.add_argument("--devices", default="1,2,4", help="comma list of fake CPU device counts")
  parser.add_argument("--molecule", default="water", help="built-in molecule (make run's config)")
  parser.add_argument("--batch", type=int, default=4, help="global batch (divisible by each count)")
  parser.add_argument("--repeats", type=int, default=3, help="timed steps (median)")
  parser.add_argument("--remat", action="store_true", help="rematerialise transformer blocks")
  parser.add_argument("--max-process-gb", type=float, default=14.0,
                      help="run a case only if XLA's account of its process's devices (plus the "
                           "host's copy of the parameters) fits; otherwise report memory only")
  parser.add_argument("--timeout", type=float, default=1800, help="seconds one case may take")
  parser.add_argument("--child", help=argparse.SUPPRESS)  # size/devices/layout, in this process


def run(args: argparse.Namespace) -> list[dict]:
  """Each case in a fresh process: the device count is fixed when JAX starts, and its peak RSS is
  the case's own."""
  if args.child:
    return [case(args)]
  counts, sizes = device_counts(args.devices, args.batch), comma_list(args.sizes)
  for size in sizes:  # a bad size now, not as the first child's failure
    qpt.model.model_config(size)
  where, rows = stamp(), []
  for size in sizes:
    for n in counts:
      for layout in LAYOUTS if n > 1 else LAYOUTS[:1]:
        rows.append(dict(child(args, f"{size}/{n}/{layout}"), **where))
  for row in rows:  # per-device state against the same size replicated (the whole state)
    whole = next((r["state_bytes_per_device"] for r in rows
                  if r["size"] == row["size"] and r["sharding"] == "replicated"), None)
    row["state_ratio"] = row["state_bytes_per_device"] / whole if whole else None
  return rows


def child(args: argparse.Namespace, which: str) -> dict:
  command = [sys.executable, BENCHMARK_SCRIPT, "model-scaling", "--json", "--child", which,
             "--molecule", args.molecule, "--batch", str(args.batch), "--repeats",
             str(args.repeats), "--max-process-gb", str(args.max_process_gb)]
  command += ["--remat"] if args.remat else []
  try:
    out = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
  except subprocess.TimeoutExpired:
    print(f"# {which}: not done within {args.timeout:g} s", file=sys.stderr)
    size, n, layout = which.split("/")
    return dict(size=size, devices=int(n), sharding=layout, step_seconds=None)
  if out.returncode:
    raise qpt.InputError(f"{which} failed: {out.stderr.strip().splitlines()[-1]}")
  row = json.loads(out.stdout)[0]
  seconds = row["step_seconds"]
  print(f"# {which}: state {row['state_bytes_per_device'] / 1e6:.0f} MB/device, step "
        f"{'not run' if seconds is None else f'{seconds:.3f} s'}", file=sys.stderr, flush=True)
  return row


def case(args: argparse.Namespace) -> dict:
  """One size on n devices in one layout: the real compiled train step of make run's config."""
  from qpt import backends, experiment, frame, train

  size, n, layout = args.child.split("/")
  config = md17_config(args.molecule)
  config.model.size, config.model.remat = size, bool(args.remat)
  config.backend.cpu_devices = int(n)
  config.mesh.model = int(n) if layout == "fsdp" else 1
  backend = backends.create(config)
  backend.check_batch_size(args.batch)
  trainer = experiment.make_trainer(config, backend)
  problem = qpt.build_problem(frame.canonical_molecule(qpt.molecules.get(args.molecule)),
                              experiment.level(config))
  host_batch = jax.tree.map(lambda a: np.stack([a] * args.batch), problem)
  params = trainer.abstract_params(host_batch)
  state = jax.eval_shape(lambda p: train.TrainState(p, trainer.optimizer.init(p), np.int32(0)),
                         params)
  state = backend.abstract(state)
  batch = backend.put_batch(host_batch)
  compiled, compile_seconds = timed(lambda: trainer.step.lower(state, batch, None).compile())
  memory = compiled.memory_analysis()  # XLA's account, per device (one SPMD program)
  device_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                  + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  param_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(params))
  local_devices = int(n) // backend.process_count
  n_params = sum(a.size for a in jax.tree.leaves(params))
  state_bytes = backend.state_bytes_per_device(state)
  row = dict(size=size, devices=int(n), sharding=layout, molecule=args.molecule, batch=args.batch,
             remat=bool(args.remat), n_params=n_params, params_millions=n_params / 1e6,
             state_bytes_per_device=state_bytes, state_mb_per_device=state_bytes / 1e6,
             device_bytes=device_bytes, device_mb=device_bytes / 1e6,
             temp_bytes=memory.temp_size_in_bytes,
             compile_seconds=compile_seconds, step_seconds=None, first_step_seconds=None)
  if (local_devices * device_bytes + param_bytes) / 1e9 > args.max_process_gb:
    return dict(row, peak_rss_mb=_peak_rss_mb())
  holder = [trainer.init_state(host_batch)]

  def one_step():
    holder[0], metrics = trainer.step(holder[0], batch, None)
    jax.block_until_ready(metrics)

  with backend.training_loop():  # the steps as training runs them
    _, row["first_step_seconds"] = timed(one_step)
    row["step_seconds"] = median_seconds(one_step, args.repeats)
  return dict(row, seconds_per_conformer=row["step_seconds"] / args.batch,
              peak_rss_mb=_peak_rss_mb())


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def plot(rows: list[dict], path: str) -> None:
  """Left: per-device state (parameters + Adam moments) against size; right: step seconds."""
  from .common import pyplot, save_figure
  plt = pyplot()
  figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  for (n, layout) in dict.fromkeys((r["devices"], r["sharding"]) for r in rows):
    mine = sorted((r for r in rows if r["devices"] == n and r["sharding"] == layout),
                  key=lambda r: r["n_params"])
    label = f"{n} device{'s' * (n > 1)}, {layout}"
    x = [r["n_params"] / 1e6 for r in mine]
    left.plot(x, [r["state_bytes_per_device"] / 1e9 for r in mine], marker="o", label=label)
    if timed_rows := [r for r in mine if r.get("step_seconds")]:
      right.plot([r["n_params"] / 1e6 for r in timed_rows],
                 [r["step_seconds"] for r in timed_rows], marker="o", label=label)
  for axis, ylabel, title in ((left, "GB per device", "parameters + optimizer state"),
                              (right, "seconds", "train step (fixed global batch)")):
    axis.set(xscale="log", yscale="log", xlabel="parameters (millions)", ylabel=ylabel, title=title)
    if axis.lines:
      axis.legend(fontsize=8)
  save_figure(figure, path)


COMMAND = Command(
    help="step time and per-device memory for tiny..medium, replicated vs FSDP, on 1/2/4 devices",
    add_arguments=arguments,
    run=run,
    columns=(("size", "size", "s"), ("devices", "devices", "d"), ("sharding", "sharding", "s"),
             ("params M", "params_millions", ".1f"),
             ("state MB/device", "state_mb_per_device", ".0f"),
             ("state ratio", "state_ratio", ".2f"), ("XLA MB/device", "device_mb", ".0f"),
             ("step s", "step_seconds", ".3f"), ("peak RSS MB", "peak_rss_mb", ".0f")),
    plot=plot,
)
