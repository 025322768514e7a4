"""Checkpoints with orbax: training state + a JSON record, atomic, keep-K, resumable, fine-tunable.

A checkpoint holds two items:
  state: the pytree {params, opt_state, step, rng} (orbax StandardSave: sharded arrays welcome);
  meta:  JSON — the data-stream position, the config it was trained with, counters.
Orbax writes each step into a temporary directory and renames it when complete, so a crash (or a
SIGKILL) mid-write leaves nothing that `latest_step` would pick up: restore always finds the last
*finished* checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import flags

from qpt import backends
from qpt.errors import InputError, TrainingError


def _keyed_barriers() -> None:
  """Orbax's barriers through the JAX distributed client (keyed, thread-safe), not its default of
  an all-device collective. Orbax runs barriers from its background threads; as collectives they
  interleave with the training step's own collectives in a different order on each process, and
  a multi-process run resumed after a kill then timed out in gloo (measured: 2 processes × 2
  devices, every time under load). Set before any manager exists; a no-op in one process, where
  orbax skips barriers anyway, and where absl flags are unparsed (tests, notebooks)."""
  if jax.process_count() > 1:
    flags.FLAGS["experimental_orbax_use_distributed_barrier"].value = True


class _OrbaxTracebacks(logging.Filter):
  """Drops orbax's ERROR records that carry a traceback: a failed write is logged so from each of
  its threads (4 tracebacks, ~300 lines, on a full disk) and then raised where the save is waited
  for, which `Checkpointer._failures_named` (and `_read` for a restore) turn into one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    from_orbax = f"{os.sep}orbax{os.sep}" in record.pathname
    return not (from_orbax and record.levelno >= logging.ERROR and record.exc_info)


_ORBAX_TRACEBACKS = _OrbaxTracebacks()


class Checkpointer:
  """Saves and restores training checkpoints under `directory` (keeps the newest `keep`).

  `max_across_processes` (`Backend.max_across_processes`) makes a multi-process run's processes
  agree before a save, which is collective: if one process's disk has no room, every process
  stops (one alone would leave the others waiting in orbax's barriers)."""

  def __init__(self, directory: str, keep: int = 3,
               max_across_processes: Callable[[tuple[int, ...]], tuple[int, ...]] | None = None):
    _keyed_barriers()
    if _ORBAX_TRACEBACKS not in logging.getLogger("absl").filters:  # orbax logs through absl's
      logging.getLogger("absl").addFilter(_ORBAX_TRACEBACKS)
    self._max_across_processes = max_across_processes or tuple
    self.directory = os.path.abspath(directory)
    _remove_unfinished(self.directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._saving: int | None = None  # the step of the save that may still be running

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict, force: bool = False) -> None:
    """Starts an (asynchronous) save of `state` and `meta` at `step`.

    A disk without room for it is a one-line TrainingError before anything is written (orbax
    would fail in its writer threads with ~1,700 lines of tracebacks); so is any other failure to
    write (the previous save's, which surfaces here)."""
    self.wait()  # orbax's save waits for the one before anyway; here its failure is named
    self._check_room(step, state)
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    with self._failures_named(step):
      self._manager.save(step, args=args, force=force)
    self._saving = step

  def _check_room(self, step: int, state: Any) -> None:
    """TrainingError unless the disk has room for one more checkpoint of `state` (its arrays'
    bytes and 10 % for orbax's index; older checkpoints are deleted only after it is written)."""
    needed = 1.1 * sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state)) + 1e6
    free = shutil.disk_usage(self.directory).free
    if self._max_across_processes((int(free < needed),))[0]:
      where = "" if free < needed else " on another process's disk"
      raise TrainingError(f"no room for checkpoint {step}{where}: {self.directory} has "
                          f"{free / 1e6:.0f} MB free and it needs ~{needed / 1e6:.0f} MB; free "
                          f"some and run the same command again to resume {self._from()}")

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """(state, meta) at `step` (default: latest), into the structure/shardings of `abstract_state`.

    With `abstract_state` None the arrays come back as saved, in plain containers (optax's named
    tuples become lists): for inspection, not for resuming.
    """
    step = self.latest_step() if step is None else step
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                              meta=ocp.args.JsonRestore())
    restored = _read(self._manager, self.directory, step, args)
    return restored.state, restored.meta

  def meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    return _read(self._manager, self.directory, step,
                 ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def wait(self) -> None:
    """Blocks until pending saves are on disk (a one-line TrainingError if one failed)."""
    with self._failures_named(self._saving):
      self._manager.wait_until_finished()

  @contextlib.contextmanager
  def _failures_named(self, step: int | None):
    """Orbax's failure to write a checkpoint (raised from its writer threads: ValueError,
    OSError …) as a one-line TrainingError with the operating system's reason."""
    try:
      yield
    except TrainingError:
      raise
    except Exception as e:
      code = re.search(r"os_error_code='(\d+)'", str(e))
      reason = (os.strerror(int(code.group(1))) if code
                else (str(e).strip().splitlines() or [type(e).__name__])[0][:160])
      raise TrainingError(f"checkpoint {step} could not be written in {self.directory} "
                          f"({reason}); fix that and run the same command again to resume "
                          f"{self._from()}") from e

  def _from(self) -> str:
    latest = self.latest_step()
    return "from the start" if latest is None else f"from checkpoint {latest}"

  def close(self) -> None:
    self._manager.close()


def locate(path: str, field: str = "") -> tuple[str, int]:
  """(checkpoint manager directory, step) of a workdir's latest finished checkpoint, or of one
  checkpoint directory (.../checkpoints/<step>); a one-line InputError if there is none, naming
  the config `field` the path came from if given. Cheap: runs check it before computing
  anything (`experiment.train`)."""
  path = os.path.abspath(path)
  where = f"{field}={path}" if field else path
  if os.path.isdir(os.path.join(path, "checkpoints")):  # a workdir
    path = os.path.join(path, "checkpoints")
  manager_dir, step = path, None
  if os.path.basename(path).isdigit():  # one checkpoint: .../checkpoints/<step>
    manager_dir, step = os.path.dirname(path), int(os.path.basename(path))
  if not os.path.isdir(manager_dir) or (step is not None and not os.path.isdir(path)):
    raise InputError(f"{where}: no such checkpoint or workdir")
  if step is None:
    step = ocp.CheckpointManager(manager_dir).latest_step()
  if step is None:
    raise InputError(f"{where}: no finished checkpoint there")
  return manager_dir, step


def load_params(path: str, like: Any = None, field: str = "") -> Any:
  """Model parameters from a workdir (its latest checkpoint) or one checkpoint directory.

  For fine-tuning and prediction: only `params` are read, whatever optimizer wrote them. `like`
  is a pytree of the parameters the current config expects; a missing or differently shaped
  parameter is a one-line InputError naming it. Without `like`, they come back as saved.
  `field`: the config field the path came from, for the error messages (`locate`).
  """
  manager_dir, step = locate(path, field)
  manager = ocp.CheckpointManager(manager_dir, item_handlers=dict(
      state=ocp.StandardCheckpointHandler(), meta=ocp.JsonCheckpointHandler()))
  # Read whole onto one local device of each process, whatever mesh wrote it: without a target,
  # orbax restores onto the saved shardings, which name the writer's devices (another topology
  # could not read it: a pod's checkpoint on a laptop), and a multi-process run's arrays then span
  # devices this process cannot fetch.
  target = backends.whole_on_one_local_device(_read(manager, manager_dir, step, None))
  restored = _read(manager, manager_dir, step,
                   ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  params = restored.state["params"]
  if like is None:
    return jax.tree.map(np.asarray, params)
  check_same_shapes(params, like, f"checkpoint {manager_dir}/{step}")
  return jax.tree.map(lambda a, b: np.asarray(a, dtype=b.dtype), params, like)  # arrays or specs


def _remove_unfinished(directory: str) -> None:
  """Removes what saves cut short (a full disk, a kill) left: `<step>.orbax-checkpoint-tmp…`.

  Process 0 only, and at the start of a run, when no save is running: one run at a time writes a
  workdir (`files.one_run_at_a_time`). Done here, not by orbax's `cleanup_tmp_directories`, whose
  background thread raised at interpreter shutdown when the run stopped at once (a bad flag)."""
  if jax.process_index() != 0 or not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    if ".orbax-checkpoint-tmp" in name:
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def _read(manager: ocp.CheckpointManager, directory: str, step: int, args) -> Any:
  """`manager.restore(step, args)` (args None: the metadata of its saved state, as the arrays'
  shapes and dtypes), or a one-line InputError naming the checkpoint when its files cannot be read
  (deleted or truncated after orbax finished it: a copied workdir, a full disk), where orbax and
  TensorStore raise a traceback of ~150 lines."""
  try:
    if args is None:
      return manager.item_metadata(step)["state"]
    return manager.restore(step, args=args)
  except InputError:
    raise
  except Exception as e:  # orbax and TensorStore raise ValueError, OSError, FileNotFoundError …
    first = (str(e).strip().splitlines() or [""])[0][:120]
    raise InputError(f"checkpoint {directory}/{step} cannot be read ({type(e).__name__}: "
                     f"{first}); delete that directory to resume from the one before it") from e


def check_same_shapes(found: Any, expected: Any, source: str) -> None:
  """One-line InputError naming the first parameter whose presence or shape differs."""
  found_flat = {jax.tree_util.keystr(k): np.shape(v)
                for k, v in jax.tree_util.tree_leaves_with_path(found)}
  for key, value in jax.tree_util.tree_leaves_with_path(expected):
    name = jax.tree_util.keystr(key)
    if name not in found_flat:
      raise InputError(f"{source} has no parameter {name}; it was trained with another model")
    if found_flat[name] != np.shape(value):
      raise InputError(f"{source}: parameter {name} has shape {found_flat[name]}, the config "
                       f"expects {np.shape(value)}")
