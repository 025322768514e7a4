"""What every benchmark shares: where results go, the machine record, timing and tables."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import time
from typing import Callable

import jax
import pyscf
from pyscf import lib

import qpt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
BENCHMARK_SCRIPT = os.path.join(ROOT, "tools", "benchmark.py")



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


def machine() -> dict:
  """Where the numbers were measured: they mean little without it."""
  return dict(platform=platform.platform(), processor=_processor_name(), cores=os.cpu_count(),
              pyscf_threads=lib.num_threads(), jax=jax.__version__, pyscf=pyscf.__version__)


def stamp() -> dict:
  """machine and date, added to every row: where and when it was measured."""
  return dict(machine=machine(),
              date=datetime.datetime.now().astimezone().isoformat("T", "seconds"))


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


