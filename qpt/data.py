"""The input pipeline: conformers → batches of padded DFT problems, built in the background.

  conformer source (seed, i) ──▶ worker processes (PySCF, 1 thread) ──▶ Batch (stacked DFTProblem)

Everything the stream yields is a pure function of the conformer source, the level of theory and the
stream position, never of how it was computed:
  * global batch k holds conformers [k·B, (k+1)·B); process p of P builds the slice
    [k·B + p·B/P, k·B + (p+1)·B/P) of it, so processes need no communication;
  * every build runs on one thread (`threads`: OMP/OpenBLAS/MKL threads = 1 in a worker's
    environment before numpy loads, `one_thread()` inline), because threaded sums round
    differently with the thread count and from run to run;
  * workers are started with "spawn": forking a process that runs JAX's threads can deadlock;
  * results are put back in stream order whichever worker finishes first;
  * the padded shape is a running maximum, part of the saved `state`, so a resumed stream pads
    exactly as the uninterrupted one would.

Workers return problems already padded (to their own buckets, at least the running shape when the
conformer was queued); `grow` copies one only when the running shape has grown since. Inline
building (n_workers=0) yields the workers' bits.

Host cost is hidden two ways: `prefetch` batches are built ahead while the device trains, and with
`mol_repeats` = r each batch is yielded for r consecutive steps (the paper's trick; its conformers
count once). What a conformer costs to build, per worker thread, is measured in
docs/results.md §2 (`build_seconds`) and §4 (training's throughput).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
from concurrent import futures
import os
import pickle
import signal
import sys
import threading
import time
from typing import Callable, Mapping

import jax
import numpy as np
from qpt import backends, labels, threads
from qpt.build import build_problem, grow, max_shape
from qpt.errors import InputError, TrainingError
from qpt.level import Level
from qpt.molecule import Molecule
from qpt.problem import DEFAULT_XC_CHUNK, SHAPE_NAMES, DFTProblem, Shape, as_shape

_ENV_LOCK = threading.Lock()  # os.environ is process-wide: one pool starts at a time
WORKER_RESTARTS = 2  # new pools for one batch after its workers died, before the stream gives up
# A dead worker that the pool has not noticed after this long died while writing its result: the
# pool's reader waits for the rest of that message forever, and the stream breaks the pool open.
STUCK_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Batch:
  """One training step's input on this process. b = batch_size / process_count.

  Attributes:
    problem: DFTProblem whose arrays have a leading (b,) axis, all padded to one shape.
    indices: (b,) int64 global conformer indices.
    repeat: 0 the first time these conformers are yielded, up to mol_repeats − 1.
    wait_seconds: wall time the caller spent in the stream for this batch: waiting for workers
      (or building, inline), padding and stacking; 0 for repeats. Summed over steps and divided
      by the run time: the host-wait fraction.
    build_seconds: worker time spent on these conformers (0 for repeats).
    fock_label: (b, n, n) Hartree, PySCF's converged Fock matrix in the problem's AO order and
      dtype, zero-padded — only for a stream with `fock_labels`, else None.
  """

  problem: DFTProblem
  indices: np.ndarray
  repeat: int
  wait_seconds: float
  build_seconds: float
  fock_label: np.ndarray | None = None

  @property
  def new_conformers(self) -> int:
    """Conformers seen for the first time in this step."""
    return 0 if self.repeat else len(self.indices)


# ---- building one problem (runs in a worker) ----------------------------------------------------


def build(molecule: Molecule, level: Level, xc_chunk: int, fock_labels: bool,
          transform: Callable[[Molecule], Molecule] | None = None,
          min_shape: Shape = (0,) * len(SHAPE_NAMES),
          ao_on_device: bool = False) -> tuple[DFTProblem, np.ndarray | None, float]:
  """One conformer's problem, padded to its own bucket and at least `min_shape`.

  Returns:
    (problem, PySCF's Fock matrix (n_real, n_real) float64 if `fock_labels` else None,
     seconds spent).
  """
  start = time.perf_counter()
  if transform is not None:
    molecule = transform(molecule)
  problem = build_problem(molecule, level, xc_chunk=xc_chunk, min_shape=min_shape,
                          ao_on_device=ao_on_device)
  fock = labels.label([molecule], level).fock[0] if fock_labels else None
  return problem, fock, time.perf_counter() - start


def _init_worker(float64: bool) -> None:
  _exit_with_parent(os.getppid())
  # The environment already limits threads; this also covers a worker the pool restarts later.
  threads.limit_to_one_thread()
  # A worker builds what its parent could build: float64 problems only where the parent has
  # switched float64 on (a spawned process starts with JAX's default).
  backends.enable_float64(float64)
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle


PARENT_CHECK_SECONDS = 1.0  # a worker notices its parent's death within about this


def _exit_with_parent(parent: int) -> None:
  """Ends this worker as soon as its parent is gone, however it died.

  A SIGKILLed parent (preemption: the case resume exists for) cannot stop its pool, and a worker
  waiting for work would otherwise live on, re-parented, forever. The worker is re-parented when
  its parent dies, so a daemon thread watching its parent's pid sees it within a second.
  """

  def watch():
    while os.getppid() == parent:
      time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)  # nothing of this worker's is worth finishing: its results have no reader

  threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


@contextlib.contextmanager
def _single_threaded_env():
  with _ENV_LOCK:
    saved = {k: os.environ.get(k) for k in threads.SINGLE_THREAD_ENV}
    os.environ.update(threads.SINGLE_THREAD_ENV)
    try:
      yield
    finally:
      for k, v in saved.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v


# ---- the stream ---------------------------------------------------------------------------------


class ProblemStream:
  """An endless iterator of `Batch`es from a conformer source; a context manager (or `close()`).

  With process_count > 1, pass `agree_shape` (or a `pad_to` large enough for every conformer):
  the device program needs identical shapes on all processes.
  """

  def __init__(self, conformers: Callable[[int], Molecule], batch_size: int, level: Level = Level(),
               *, xc_chunk: int = DEFAULT_XC_CHUNK, fock_labels: bool = False,
               n_workers: int = 0, prefetch: int = 2, mol_repeats: int = 1,
               transform: Callable[[Molecule], Molecule] | None = None, process_index: int = 0,
               process_count: int = 1, pad_to: Shape | None = None,
               agree_shape: Callable[[Shape], Shape] | None = None,
               ao_on_device: bool = False, state: Mapping | None = None):
    """Sets the stream up; workers start at the first `next`.

    Args:
      conformers: index → Molecule, a pure function (e.g. `conformers.ThermalSampler`). Called in
        this process (it is cheap); only the molecules travel to the workers.
      batch_size: conformers per global batch (all processes together).
      level: level of theory of every problem.
      xc_chunk: grid points per XC chunk of every problem.
      fock_labels: also converge PySCF (float64) for every conformer's Fock matrix (supervised
        runs; `Batch.fock_label`).
      n_workers: background worker processes; 0 builds inline in this process (tests, debugging).
      prefetch: global batches built ahead of the one being yielded. Finished problems wait in
        this process's memory (ethanol/def2-SVP, float32: 154 MB each).
      mol_repeats: steps each batch is yielded for (≥ 1).
      transform: Molecule → Molecule applied to each conformer before building (e.g. a canonical
        frame). Must be picklable for workers: a module-level function, not a lambda.
      process_index, process_count: this process's slice of each global batch.
      pad_to: smallest padded shape to use (`qpt.problem.SHAPE_NAMES`; sizes left out or 0 past
        n_atoms: as needed).
      agree_shape: called with this process's padded shape for each new batch, returns the shape
        to use — with several processes, the maximum over them (a host collective every process
        reaches in step), so all feed one compiled program.
      ao_on_device: problems ship the basis and the grid's points, and the device evaluates the
        AO values (`build_problem`).
      state: a `state` saved from a stream with the same arguments, to resume from.
    """
    if batch_size < 1 or process_count < 1 or batch_size % process_count:
      raise InputError(f"batch_size={batch_size} must be a positive multiple of "
                       f"process_count={process_count}")
    if not 0 <= process_index < process_count:
      raise InputError(f"process_index={process_index} is not in 0..{process_count - 1}")
    if n_workers < 0 or prefetch < 0 or mol_repeats < 1:
      raise InputError(f"n_workers={n_workers}, prefetch={prefetch} must be ≥ 0 and "
                       f"mol_repeats={mol_repeats} ≥ 1")
    if n_workers and transform is not None:
      try:
        pickle.dumps(transform)
      except Exception:
        raise InputError(f"transform {transform!r} cannot be sent to worker processes; use a "
                         "module-level function") from None
    self.conformers, self.level, self.transform = conformers, level, transform
    self.xc_chunk, self.fock_labels, self.ao_on_device = xc_chunk, fock_labels, ao_on_device
    self.batch_size, self.n_workers, self.prefetch = batch_size, n_workers, prefetch
    self.mol_repeats = mol_repeats
    self.local_size = batch_size // process_count
    self._offset = process_index * self.local_size
    self.stream_position, self.repeat = 0, 0  # next global conformer index; uses of it so far
    self.pad_to: Shape = as_shape(pad_to) if pad_to else (0,) * len(SHAPE_NAMES)
    self.agree_shape = agree_shape or (lambda shape: shape)
    self._current: Batch | None = None  # the batch being repeated
    self._pending: dict = {}  # global conformer index → Future of `build`
    self._pool = None
    if state is not None:
      self.restore(state)

  # ---- checkpointing --------------------------------------------------------------------------

  @property
  def state(self) -> dict:
    """Where the stream is: save this with the checkpoint and pass it back as `state=`."""
    return {"stream_position": self.stream_position, "repeat": self.repeat,
            "pad_to": list(self.pad_to)}

  def restore(self, state: Mapping) -> None:
    """Continues from a saved `state`: the next batch is the one the saved stream would yield."""
    try:
      position, repeat = int(state["stream_position"]), int(state["repeat"])
      pad_to = as_shape(state["pad_to"])  # 4 sizes in checkpoints from before n_occ
    except (KeyError, TypeError, ValueError, InputError):
      raise InputError(f"stream state {state!r} lacks stream_position, repeat or pad_to") from None
    if position < 0 or position % self.batch_size or not 0 <= repeat < self.mol_repeats:
      raise InputError(f"stream state {dict(state)} does not fit batch_size={self.batch_size}, "
                       f"mol_repeats={self.mol_repeats}")
    self.stream_position, self.repeat = position, repeat
    self.pad_to = max_shape(self.pad_to, pad_to)
    self._current = None
    self._pending = {}  # results in flight belong to the old position; the pool's are dropped

  # ---- iteration ------------------------------------------------------------------------------

  def __iter__(self):
    return self

  def __next__(self) -> Batch:
    reused = self._current is not None
    if not reused:
      self._current = self._assemble(self.stream_position)
    batch = self._current
    if self.repeat:  # the same arrays again; host time is only charged to the step that waited
      batch = dataclasses.replace(batch, repeat=self.repeat,
                                  **(dict(wait_seconds=0.0, build_seconds=0.0) if reused else {}))
    self.repeat += 1
    if self.repeat == self.mol_repeats:
      self.stream_position += self.batch_size
      self.repeat, self._current = 0, None
    return batch

  def local_indices(self, position: int) -> np.ndarray:
    """(b,) global indices of this process's conformers in the global batch at `position`."""
    start = position + self._offset
    return np.arange(start, start + self.local_size, dtype=np.int64)

  def _assemble(self, position: int) -> Batch:
    indices = self.local_indices(position)
    start = time.perf_counter()
    if self.n_workers == 0:
      with threads.one_thread():  # BLAS and OpenMP on one thread, as in the workers: same bits
        results = [self._build(i) for i in indices]
    else:
      results = self._built_by_workers(indices, position)
    # Each problem is padded to at least the running shape it was queued with, which never
    # shrinks: the new running shape is the maximum of the old and the problems' own.
    self.pad_to = self.agree_shape(max_shape(self.pad_to, *(p.shapes for p, _, _ in results)))
    members = [grow(p, self.pad_to) for p, _, _ in results]
    stacked = jax.tree.map(lambda *a: np.stack(a), *members)
    fock = None
    if self.fock_labels:
      fock = np.zeros((len(results),) + stacked.overlap.shape[-2:], self.level.dtype)
      for k, (_, f, _) in enumerate(results):
        fock[k, :len(f), :len(f)] = f
    wait = time.perf_counter() - start
    return Batch(stacked, indices, 0, wait, float(sum(t for *_, t in results)), fock)

  def _build(self, i: int):
    """`build` of conformer i, in this process."""
    return build(self.conformers(int(i)), self.level, self.xc_chunk, self.fock_labels,
                 self.transform, self.pad_to, self.ao_on_device)

  def _built_by_workers(self, indices: np.ndarray, position: int) -> list:
    """`build` of `indices` by the workers, queueing the batches to prefetch behind them.

    A worker that dies (the kernel's out-of-memory killer, a stray signal) breaks the whole pool.
    A build is a pure function of its conformer, so a new pool rebuilds the very same problems:
    the run goes on, bit for bit, up to WORKER_RESTARTS times for one batch.
    """
    for restart in range(WORKER_RESTARTS + 1):
      try:
        self._submit_through(position + (self.prefetch + 1) * self.batch_size)
        return self._results([self._pending.pop(int(i)) for i in indices])
      except futures.BrokenExecutor:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool, self._pending = None, {}
        if restart < WORKER_RESTARTS:
          print(f"warning: a stream worker process died (out of memory?) building conformers "
                f"{indices[0]}–{indices[-1]}; restarting the workers", file=sys.stderr, flush=True)
    raise TrainingError(f"stream workers died {WORKER_RESTARTS + 1} times building conformers "
                        f"{indices[0]}–{indices[-1]} (out of memory? lower data.workers or "
                        "data.prefetch); rerun to resume from the last checkpoint")

  def _results(self, pending: list[futures.Future]) -> list:
    """The results of `pending`, or BrokenExecutor if a worker died.

    CPython's ProcessPoolExecutor notices a worker's death at once, except one that dies while
    writing its result into the pool's pipe (the out-of-memory killer's likeliest moment: the
    worker then holds its problem twice, built and pickled). The pool's reader then waits for the
    rest of that message forever, and the other workers for the pipe's lock. So the wait is in
    steps: a worker dead for STUCK_SECONDS with the pool unbroken is that case, and the pool is
    broken open (its workers killed, its reader shown the pipe's end).
    """
    dead_since = None
    while futures.wait(pending, timeout=min(1.0, STUCK_SECONDS))[1]:
      if not any(p.exitcode is not None for p in self._workers()):
        continue
      dead_since = dead_since or time.monotonic()
      if time.monotonic() - dead_since >= STUCK_SECONDS:
        for worker in self._workers():
          worker.kill()
        with contextlib.suppress(AttributeError, OSError):  # CPython internals: 3.11–3.13
          self._pool._result_queue._writer.close()
        raise futures.BrokenExecutor("a worker died while handing its result back")
    return [f.result() for f in pending]

  def _workers(self) -> list:
    """The pool's worker processes (CPython's ProcessPoolExecutor keeps them in `_processes`)."""
    processes = getattr(self._pool, "_processes", None) or {}
    return list(processes.values())

  def _submit_through(self, end: int) -> None:
    """Queues this process's conformers of every global batch starting before `end`."""
    if self._pool is None:
      self._pool = futures.ProcessPoolExecutor(
          self.n_workers, mp_context=multiprocessing.get_context("spawn"),
          initializer=_init_worker, initargs=(backends.float64_enabled(),))
    # Workers start on demand, at a submit: the single-threaded environment must be in place
    # then, to be inherited before they import numpy.
    with _single_threaded_env():
      for position in range(self.stream_position, end, self.batch_size):
        for i in self.local_indices(position):
          if int(i) not in self._pending:
            # The current padded shape as a hint: workers pad to it, so `grow` rarely copies.
            self._pending[int(i)] = self._pool.submit(
                build, self.conformers(int(i)), self.level, self.xc_chunk, self.fock_labels,
                self.transform, self.pad_to, self.ao_on_device)

  def close(self) -> None:
    """Stops the workers: queued conformers are dropped, those being built are finished first.

    Killing a worker could cut a result off mid-message and leave the pool's reader waiting
    forever; letting at most one build per worker finish (seconds) cannot.
    """
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._pool = None
    self._pending = {}

  def __enter__(self) -> ProblemStream:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # at interpreter exit the pool may be half torn down already
      pass
