"""Files written whole or not at all (`written_whole`); a workdir one run at a time."""

import json
import os

import numpy as np
import pytest

import qpt
from qpt.files import one_run_at_a_time, written_whole


def test_a_write_lands_whole_and_leaves_nothing_beside_it(tmp_path):
  path = tmp_path / "eval.json"
  path.write_text('{"old": 1}')
  with written_whole(path) as temporary, open(temporary, "w") as f:
    json.dump({"new": 2}, f)
    f.flush()
    assert json.loads(path.read_text()) == {"old": 1}  # the old file until the write is done
  assert json.loads(path.read_text()) == {"new": 2}
  assert os.listdir(tmp_path) == ["eval.json"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "config.json"
  path.write_text("old")
  with pytest.raises(RuntimeError, match="disk full"):
    with written_whole(path) as temporary, open(temporary, "w") as f:
      f.write("half a fi")
      raise RuntimeError("disk full")
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["config.json"]


@pytest.mark.parametrize("save, name", [(np.save, "hessian.npy"),
                                        (lambda p, a: np.savez(p, a=a), "labels.npz")])
def test_numpy_writes_keep_the_file_name(tmp_path, save, name):
  """numpy adds .npy or .npz to a path without it: the temporary keeps the extension."""
  with written_whole(tmp_path / name) as temporary:
    save(temporary, np.arange(3))
  assert os.listdir(tmp_path) == [name]


def test_a_held_workdir_refuses_a_second_holder_until_released(tmp_path):
  with one_run_at_a_time(tmp_path):
    busy = f"in use by another training run \\(pid {os.getpid()} "
    with pytest.raises(qpt.InputError, match=busy):
      with one_run_at_a_time(tmp_path):  # flock: a second open file conflicts, even in one process
        pass
  with one_run_at_a_time(tmp_path):  # released on leaving
    pass
