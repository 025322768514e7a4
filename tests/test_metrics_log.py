"""metrics.jsonl and the progress display: off a terminal, one line per log step with the ETA."""

import time
import types

import numpy as np
import pytest

import qpt
from qpt import metrics_log


def log_steps(workdir, progress, steps=20, log_every=10):
  log = metrics_log.MetricsLog(str(workdir), progress, total_steps=steps, start_step=0)
  batch = types.SimpleNamespace(wait_seconds=0.0, new_conformers=2)
  metrics = dict(per_conformer=np.array([-1e-3, -2e-3]), energy_ref=np.array([[-76.0, 0.0]] * 2),
                 grad_norm=1.0, lr=1e-3)
  for step in range(1, steps + 1):
    log.step(step, batch, metrics, "energy", True, {}, write=step % log_every == 0)
  log.close()


def test_off_a_terminal_progress_is_one_line_per_log_step_with_the_eta(tmp_path, capsys):
  log_steps(tmp_path, progress=True)
  lines = capsys.readouterr().out.splitlines()  # pytest's stdout is not a terminal
  assert [line.split()[1] for line in lines] == ["10/20", "20/20"]
  for line in lines:
    assert "loss -76.001500" in line and "conformers/s" in line and "ETA" in line
  assert lines[-1].endswith("ETA 0 s")
  records = metrics_log.read(str(tmp_path))
  assert [r["step"] for r in records] == [10, 20] and records[0]["loss"] == -76.0015


def test_a_line_cut_short_by_a_crash_is_dropped_on_resumption(tmp_path):
  """A process killed (or a disk filled, a machine lost) while writing leaves a last line without
  its newline; the resumed run used to stop on it with a JSONDecodeError."""
  log_steps(tmp_path, progress=False, steps=30)
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 40, "loss": -76.00')
  assert [r["step"] for r in metrics_log.read(str(tmp_path))] == [10, 20, 30]
  log = metrics_log.MetricsLog(str(tmp_path), False, total_steps=40, start_step=20)
  log.close()
  assert [r["step"] for r in metrics_log.read(str(tmp_path))] == [10, 20]
  assert path.read_text().endswith("}\n")
  # A whole record that lost only its newline is kept, and the next record starts a new line.
  path.write_text(path.read_text().rstrip("\n"))
  log = metrics_log.MetricsLog(str(tmp_path), False, total_steps=40, start_step=20)
  log.close()
  assert [r["step"] for r in metrics_log.read(str(tmp_path))] == [10, 20]
  assert path.read_text().endswith("}\n")


def test_an_unreadable_line_inside_the_record_is_one_input_error(tmp_path):
  log_steps(tmp_path, progress=False, steps=30)
  path = tmp_path / "metrics.jsonl"
  lines = path.read_text().splitlines(keepends=True)
  path.write_text(lines[0] + "not json\n" + "".join(lines[1:]))
  with pytest.raises(qpt.InputError, match=r"metrics.jsonl: line 2 is not a JSON record"):
    metrics_log.read(str(tmp_path))


def test_quiet_prints_nothing(tmp_path, capsys):
  log_steps(tmp_path, progress=False)
  assert capsys.readouterr().out == ""


def test_a_step_far_slower_than_the_others_is_reported_once(capsys):
  with metrics_log.StepWatch(factor=10, floor=1.0, first_floor=30, poll=0.02) as watch:
    for step in range(1, 4):  # short steps: the limit is then max(1 s, 10 × their median)
      watch.started(step)
      watch.finished()
    assert watch.limit() == pytest.approx(1.0)
    watch.started(4)
    time.sleep(0.1)
    assert not watch.warned  # well within the limit
    deadline = time.monotonic() + 30
    while not watch.warned and time.monotonic() < deadline:
      time.sleep(0.05)
    assert watch.warned
    watch.finished()
    watch.started(5)
    time.sleep(1.2)
  err = capsys.readouterr().err
  assert err.count("warning: train step") == 1 and "train step 4 has run for" in err
  assert "the median step took 0.00 s" in err


def test_the_first_step_compiles_and_has_its_own_limit():
  watch = metrics_log.StepWatch(first_floor=600)
  assert watch.limit() == 600
