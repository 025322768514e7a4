"""The training record: workdir/metrics.jsonl (one JSON object per logged step) and a progress line.

Each record: step, loss (for loss=energy the batch-mean total energy in Hartree, assembled in
float64), grad_norm, lr, finite, skipped_steps, unique_conformers_per_s, host_wait_fraction,
seconds, and val_* errors (µHa) on steps that ran a validation.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import threading
import time

import numpy as np

from qpt.errors import InputError
from qpt.files import written_whole
from qpt.train import batch_energies


def read(workdir: str) -> list[dict]:
  """The records of workdir/metrics.jsonl, in order (InputError if there is no such file)."""
  path = os.path.join(workdir, "metrics.jsonl")
  try:
    with open(path) as f:
      return [record for _, record in _records(path, f.readlines())]
  except OSError as e:
    raise InputError(f"{path}: cannot read ({e.strerror})") from None


def _records(path: str, lines: list[str]) -> list[tuple[str, dict]]:
  """(line, record) of each non-empty line of a metrics.jsonl. A last line without its newline
  that does not parse was cut short by a crash (a killed process, a full disk, a lost machine)
  and is dropped, so the run resumes and plots; any other unreadable line is an InputError."""
  out = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      out.append((line, json.loads(line)))
    except json.JSONDecodeError:
      if number == len(lines) and not line.endswith("\n"):
        continue
      raise InputError(f"{path}: line {number} is not a JSON record") from None
  return out


class MetricsLog:
  """metrics.jsonl (one object per log step) and the progress display.

  Progress is a line redrawn at every step on a terminal; off a terminal (`make run > log`), one
  printed line per log step, each with the step, loss, conformers/s and the ETA.
  `seconds` is training's wall time since this process started its loop, validation excluded;
  the rates (unique conformers/s, host-wait fraction) are over that time.
  """

  def __init__(self, workdir: str, progress: bool, total_steps: int, start_step: int,
               write: bool = True):
    self._write = write
    self._progress = progress
    self._terminal = sys.stdout.isatty()
    self._total = total_steps
    self._first = start_step
    self._start = time.perf_counter()
    self._wait = 0.0
    self._paused = 0.0
    self._conformers = 0
    self._skipped = 0
    if not write:  # another process keeps the record
      return
    path = os.path.join(workdir, "metrics.jsonl")
    # A killed run may have logged steps after its last checkpoint; the resumed run logs them
    # again, so keep only what precedes the step resumed from (replaced atomically).
    kept = []
    if start_step and os.path.exists(path):
      with open(path) as f:
        kept = [line.rstrip("\n") + "\n" for line, record in _records(path, f.readlines())
                if record["step"] <= start_step]  # a whole record whose newline was lost too
    with written_whole(path) as temporary, open(temporary, "w") as f:
      f.writelines(kept)
    self._file = open(path, "a")

  def step(self, step: int, batch, metrics: dict, loss: str, finite: bool, extra: dict,
           write: bool) -> None:
    """Records one step; `metrics` are the step's (host) metrics over the global batch."""
    self._wait += batch.wait_seconds
    self._conformers += len(metrics["per_conformer"]) if batch.new_conformers else 0
    self._skipped += not finite
    show = self._progress and (self._terminal or write)
    write = write and self._write
    if not (write or show):
      return
    per_conformer = np.asarray(metrics["per_conformer"], np.float64)
    value = (float(np.mean(batch_energies(metrics["energy_ref"], per_conformer)))
             if loss == "energy" else float(np.mean(per_conformer)))
    elapsed = time.perf_counter() - self._start - self._paused
    record = dict(step=step, loss=value, grad_norm=float(metrics["grad_norm"]),
                  lr=float(metrics["lr"]), finite=finite, skipped_steps=self._skipped,
                  unique_conformers_per_s=self._conformers / elapsed,
                  host_wait_fraction=self._wait / elapsed, seconds=elapsed, **extra)
    if write:
      self._file.write(json.dumps(record) + "\n")
      self._file.flush()
    if show:
      eta = elapsed / max(step - self._first, 1) * (self._total - step)
      line = (f"step {step}/{self._total}  loss {value:.6f}  "
              f"{record['unique_conformers_per_s']:.2f} conformers/s  {elapsed:.0f} s  "
              f"ETA {eta:.0f} s")
      if extra:
        line += f"  val energy MAE {extra['val_energy_mae_uha']:.0f} µHa"
      if self._terminal:
        print(f"\r{line}   ", end="", flush=True)
      else:
        print(line, flush=True)

  @contextlib.contextmanager
  def paused(self):
    """Time spent inside does not count as training time."""
    started = time.perf_counter()
    try:
      yield
    finally:
      self._paused += time.perf_counter() - started

  def close(self) -> None:
    if self._progress and self._terminal:
      print()
    if self._write:
      self._file.close()


class StepWatch:
  """Warns once on stderr when a train step runs far longer than the steps before it.

  A step whose collective never completes (a device or process that stopped) blocks without
  using any CPU; without this the run would sit silent forever. The warning comes when a step has
  run for both `factor` × the median of the previous steps and `floor` seconds — or, for the first
  step, which compiles the program, `first_floor` seconds. Use it as a context manager around the
  loop and call `started()` / `finished()` around each step.
  """

  def __init__(self, factor: float = 10.0, floor: float = 60.0, first_floor: float = 600.0,
               poll: float = 1.0, stream=None):
    self.factor, self.floor, self.first_floor, self.poll = factor, floor, first_floor, poll
    self._stream = stream
    self._durations: list[float] = []
    self._step: int | None = None
    self._since = 0.0
    self._lock = threading.Lock()
    self._done = threading.Event()
    self.warned = False

  def limit(self) -> float:
    """Seconds the current step may take before the warning."""
    with self._lock:
      if not self._durations:
        return self.first_floor
      return max(self.floor, self.factor * statistics.median(self._durations))

  def started(self, step: int) -> None:
    with self._lock:
      self._step, self._since = step, time.monotonic()

  def finished(self) -> None:
    with self._lock:
      self._durations.append(time.monotonic() - self._since)
      self._step = None

  def __enter__(self) -> StepWatch:
    self._thread = threading.Thread(target=self._watch, name="step-watch", daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._done.set()
    self._thread.join()

  def _watch(self) -> None:
    while not self._done.wait(self.poll) and not self.warned:
      limit = self.limit()
      with self._lock:
        step, elapsed = self._step, time.monotonic() - self._since
        median = statistics.median(self._durations) if self._durations else None
      if step is not None and elapsed > limit:
        usual = f"the median step took {median:.2f} s" if median else "it compiles the program"
        print(f"warning: train step {step} has run for {elapsed:.0f} s ({usual}); a device or "
              "process may have stopped in a collective. The run keeps waiting; stop it with "
              "Ctrl-C or SIGTERM and re-run the command to resume from its last checkpoint.",
              file=self._stream or sys.stderr, flush=True)
        self.warned = True
