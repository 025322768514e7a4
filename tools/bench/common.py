"""What every benchmark shares: where results go, the machine record, timing and tables."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import jax
import pyscf
from pyscf import lib

import qpt
from qpt import run_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
BENCHMARK_SCRIPT = os.path.join(ROOT, "tools", "benchmark.py")
MD17_CONFIG = os.path.join(ROOT, "experiments", "configs", "md17.py")


@dataclasses.dataclass(frozen=True)
class Command:
  """A benchmark sub-command.

  Attributes:
    help: one line for `benchmark.py --help`.
    add_arguments: adds the sub-command's own options to its argparse sub-parser.
    run: args → list of row dicts (JSON-serialisable).
    columns: ((header, row key, format spec), ...) for the table; or, for rows of several kinds,
      {row["part"]: columns}, one table each.
    plot: (rows, path) → writes the sub-command's PNG there.
  """

  help: str
  add_arguments: Callable[[argparse.ArgumentParser], None]
  run: Callable[[argparse.Namespace], list[dict]]
  columns: tuple[tuple[str, str, str], ...] | dict[str, tuple[tuple[str, str, str], ...]]
  plot: Callable[[list[dict], str], None]


def md17_config(molecule: str):
  """experiments/configs/md17.py's config for a built-in molecule, as md17.py would run it."""
  return run_config.load(f"{MD17_CONFIG}:{molecule}")


def machine() -> dict:
  """Where the numbers were measured: they mean little without it. `cpu` names the x86 family
  and model and the widest vector instructions: the same code ran about twice as fast on a 2-core
  EPYC with AVX-512 as on one with AVX2 only (docs/results.md §1, §11)."""
  info = _cpuinfo()
  return dict(platform=platform.platform(), processor=_processor_name(info), cpu=_cpu(info),
              cores=os.cpu_count(), pyscf_threads=lib.num_threads(), jax=jax.__version__,
              pyscf=pyscf.__version__)


def stamp() -> dict:
  """machine and date, added to every row: where and when it was measured."""
  return dict(machine=machine(),
              date=datetime.datetime.now().astimezone().isoformat("T", "seconds"))


def _cpuinfo() -> dict[str, str]:
  """The first processor's fields of /proc/cpuinfo (Linux); {} elsewhere."""
  fields = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if not line.strip():
          break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
  except OSError:
    pass
  return fields


def _processor_name(info: dict[str, str]) -> str:
  # platform.processor() is often just "x86_64" on Linux; the CPU model is in /proc/cpuinfo.
  return info.get("model name") or platform.processor() or platform.machine()


def _cpu(info: dict[str, str]) -> str:
  """E.g. "family 25 model 1, avx2" from `_cpuinfo()`: what decides XLA:CPU's kernels; "" where
  not known."""
  if "cpu family" not in info:
    return ""
  flags = info.get("flags", "").split()
  vector = next((v for v in ("avx512f", "avx2", "avx") if v in flags), "sse")
  return f"family {info['cpu family']} model {info.get('model', '?')}, {vector.removesuffix('f')}"


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


def device_counts(text: str, batch: int) -> list[int]:
  """--devices as a list of positive ints that each divide the global `batch`."""
  try:
    counts = [int(n) for n in comma_list(text)]
  except ValueError:
    raise qpt.InputError(f"--devices {text!r}: write whole numbers, e.g. 1,2,4") from None
  if any(n < 1 for n in counts):
    raise qpt.InputError(f"--devices {text!r}: every count must be at least 1")
  if any(batch % n for n in counts):
    raise qpt.InputError(f"--batch {batch} must divide over every device count {counts}")
  return counts


def print_table(columns, rows: list[dict]):
  if isinstance(columns, dict):  # one table per kind of row
    for part, part_columns in columns.items():
      if part_rows := [r for r in rows if r.get("part") == part]:
        print(f"## {part}")
        print_table(part_columns, part_rows)
    return
  cell = lambda value, spec: "—" if value is None else format(value, spec)  # None: not reached / hung
  rows = [{key: r.get(key) for _, key, _ in columns} for r in rows]
  widths = [max([len(h)] + [len(cell(r[k], f)) for r in rows]) for h, k, f in columns]
  print("  ".join(f"{h:>{w}}" for (h, _, _), w in zip(columns, widths)))
  for r in rows:
    print("  ".join(f"{cell(r[k], f):>{w}}" for (_, k, f), w in zip(columns, widths)))


def write_results(name: str, rows: list[dict], plot: Callable[[list[dict], str], None],
                  directory: str = RESULTS_DIR, append: bool = False) -> tuple[str, str]:
  """Writes <directory>/<name>.json (the rows, after those already there if `append`) and
  <name>.png (the plot of them all); returns both paths."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"{name}.json")
  if append and os.path.exists(path):
    with open(path) as f:
      rows = json.load(f) + rows
  with open(path, "w") as f:
    json.dump(rows, f, indent=1)
  png = os.path.join(directory, f"{name}.png")
  plot(rows, png)
  return path, png


def replot(name: str, plot: Callable[[list[dict], str], None], directory: str = RESULTS_DIR) -> int:
  """Draws <directory>/<name>.png again from <name>.json; 0, or 2 if there is no JSON."""
  path = os.path.join(directory, f"{name}.json")
  try:
    with open(path) as f:
      rows = json.load(f)
  except (OSError, ValueError) as e:
    print(f"benchmark.py {name}: error: cannot read {path}: {e}", file=sys.stderr)
    return 2
  plot(rows, os.path.join(directory, f"{name}.png"))
  print(f"# plot of {os.path.relpath(path)} drawn again")
  return 0


def pyplot():
  """matplotlib.pyplot drawing to files only (no display needed)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figure(figure, path: str) -> None:
  """Every benchmark plot is saved alike, and its memory released."""
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot().close(figure)


