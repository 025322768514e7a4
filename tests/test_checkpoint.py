"""Orbax checkpoints: exact round trip, keep-K, unfinished writes ignored, params-only restore."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import qpt
from qpt import checkpoint
from tests.processes import ENV, ROOT


def state(seed=0):
  params = {"embed": {"w": jax.random.normal(jax.random.key(seed), (4, 3))},
            "out": {"b": jnp.arange(3.0)}}
  opt_state = optax.adamw(1e-3).init(params)
  return {"params": params, "opt_state": opt_state, "step": jnp.asarray(7, jnp.int32)}


def abstract(tree):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def test_round_trip_is_exact_and_keeps_structure(tmp_path):
  saver = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=2)
  original = state()
  saver.save(7, original, {"stream_position": 14, "config": {"seed": 0}})
  saver.wait()
  restored, meta = saver.restore(abstract(original))
  assert jax.tree.structure(restored) == jax.tree.structure(original)  # optax tuples stay tuples
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(original)):
    np.testing.assert_array_equal(a, b)
  assert meta == {"stream_position": 14, "config": {"seed": 0}}


def test_keeps_the_newest_k(tmp_path):
  saver = checkpoint.Checkpointer(str(tmp_path), keep=2)
  for step in (1, 2, 3, 4):
    saver.save(step, state(step), {"step": step})
  saver.wait()
  assert saver.latest_step() == 4
  assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == [3, 4]


def test_an_unfinished_write_is_never_restored(tmp_path):
  saver = checkpoint.Checkpointer(str(tmp_path), keep=3)
  saver.save(1, state(), {"step": 1})
  saver.wait()
  saver.close()
  # What a crash mid-write leaves behind: orbax's temporary directory for step 5.
  os.makedirs(tmp_path / "5.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp")
  assert checkpoint.Checkpointer(str(tmp_path)).latest_step() == 1
  assert os.listdir(tmp_path) == ["1"]  # and it is gone, not kept taking space


def test_a_disk_without_room_stops_before_writing_and_keeps_the_last_checkpoint(tmp_path,
                                                                                 monkeypatch):
  """A full disk failed in orbax's writer threads: ~1,700 lines of tracebacks, and a half-written
  directory taking the space. Now one line, before anything is written."""
  saver = checkpoint.Checkpointer(str(tmp_path), keep=3)
  saver.save(1, state(1), {"step": 1})
  nbytes = sum(x.nbytes for x in jax.tree.leaves(state()))
  usage = checkpoint.shutil.disk_usage(tmp_path)
  monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                      lambda path: usage._replace(free=nbytes // 2))
  with pytest.raises(qpt.errors.TrainingError,
                     match="no room for checkpoint 2: .* MB free .* resume from checkpoint 1$"):
    saver.save(2, state(2), {"step": 2})
  assert os.listdir(tmp_path) == ["1"]
  restored, meta = saver.restore(abstract(state()))
  assert meta == {"step": 1}
  np.testing.assert_array_equal(restored["params"]["embed"]["w"], state(1)["params"]["embed"]["w"])


def test_every_process_stops_when_one_has_no_room(tmp_path):
  """A save is collective: a process stopping alone left the others waiting in orbax's barriers.
  `max_across_processes` stands in for `Backend.max_across_processes` where another process's
  disk is full and this one's is not."""
  another_is_full = lambda values: tuple(max(v, 1) for v in values)
  saver = checkpoint.Checkpointer(str(tmp_path), keep=3, max_across_processes=another_is_full)
  with pytest.raises(qpt.errors.TrainingError,
                     match="no room for checkpoint 1 on another process's disk: .* MB free"):
    saver.save(1, state(1), {"step": 1})
  assert os.listdir(tmp_path) == []

def test_load_params_for_fine_tuning(tmp_path):
  workdir = tmp_path / "run"
  saver = checkpoint.Checkpointer(str(workdir / "checkpoints"))
  saved = state(3)
  saver.save(7, saved, {})
  saver.wait()
  like = jax.tree.map(np.zeros_like, saved["params"])
  for path in (workdir, workdir / "checkpoints" / "7"):  # a workdir or one checkpoint
    params = checkpoint.load_params(str(path), like)
    np.testing.assert_array_equal(params["embed"]["w"], saved["params"]["embed"]["w"])


def test_mismatched_parameters_name_the_first_one(tmp_path):
  saver = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  saver.save(1, state(), {})
  saver.wait()
  wrong = {"embed": {"w": np.zeros((5, 3))}, "out": {"b": np.zeros(3)}}
  with pytest.raises(qpt.InputError, match=r"\['embed'\]\['w'\] has shape \(4, 3\)"):
    checkpoint.load_params(str(tmp_path), wrong)
  with pytest.raises(qpt.InputError, match="no parameter"):
    checkpoint.load_params(str(tmp_path), {"head": {"w": np.zeros(2)}})
  with pytest.raises(qpt.InputError, match="no such checkpoint"):
    checkpoint.load_params(str(tmp_path / "nowhere"), wrong)


def test_a_missing_checkpoint_is_named_by_the_field_it_came_from(tmp_path):
  """`mode=eval` of an empty workdir used to say "init_from=…" though no init_from was given."""
  (tmp_path / "checkpoints").mkdir()
  for field, prefix in (("workdir", f"workdir={tmp_path}"), ("init_from", f"init_from={tmp_path}"),
                        ("", f"{tmp_path}")):
    with pytest.raises(qpt.InputError) as error:
      checkpoint.load_params(str(tmp_path), field=field)
    assert str(error.value) == f"{prefix}: no finished checkpoint there"


# orbax's aborted read leaves a callback for its own, by then closed, asyncio loop; pytest reports
# it as unraisable when it is collected. The run's one-line error is unaffected (md17.py prints
# nothing more).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_checkpoint_whose_files_are_gone_is_one_input_error(tmp_path):
  """Its arrays deleted after orbax finished it (a half-copied workdir, a full disk): orbax and
  TensorStore raised ~150 lines of traceback. The error names the checkpoint and what to do."""
  saver = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=2)
  original = state()
  for step in (1, 2):
    saver.save(step, original, {"stream_position": step})
  saver.wait()
  for root, _, files in os.walk(tmp_path / "checkpoints" / "2" / "state"):
    for name in files:
      if os.path.basename(root) == "d":  # OCDBT's data files: the arrays, not the metadata
        os.remove(os.path.join(root, name))
  assert saver.meta() == {"stream_position": 2}  # the JSON record is intact
  for read in (lambda: saver.restore(abstract(original)),
               lambda: checkpoint.load_params(str(tmp_path))):
    with pytest.raises(qpt.InputError, match=r"checkpoints/2 cannot be read \(.*\); delete that "
                                             r"directory to resume from the one before it"):
      read()
  restored, meta = saver.restore(abstract(original), step=1)  # the one before it still restores
  assert meta == {"stream_position": 1}


_WRITE_PAST_A_SIZE_LIMIT = """
import resource, signal, sys
import numpy as np
from absl import logging
logging.set_verbosity(logging.WARNING)  # as experiments/md17.py runs
from qpt import checkpoint
from qpt.errors import TrainingError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
saver = checkpoint.Checkpointer(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
state = {"params": {"w": np.random.default_rng(0).normal(size=(1024, 1024)).astype(np.float32)}}
try:
  saver.save(1, state, {"step": 1})
  saver.wait()
except TrainingError as e:
  print(f"TrainingError: {e}")
"""


def test_a_write_that_fails_in_orbaxs_threads_is_one_line(tmp_path):
  """A write the room check cannot foresee (here a 1 MB file-size limit; a quota, a disk filled by
  another program) failed in orbax's writer threads, which logged 4 tracebacks (305 lines) before
  the one-line TrainingError."""
  result = subprocess.run([sys.executable, "-c", _WRITE_PAST_A_SIZE_LIMIT, str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
  lines = (result.stdout + result.stderr).strip().splitlines()
  assert lines == [f"TrainingError: checkpoint 1 could not be written in {tmp_path} (File too "
                   "large); fix that and run the same command again to resume from the start"]
