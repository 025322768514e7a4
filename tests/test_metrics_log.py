"""metrics.jsonl and the progress display: off a terminal, one line per log step with the ETA."""

import types

import numpy as np

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


def test_quiet_prints_nothing(tmp_path, capsys):
  log_steps(tmp_path, progress=False)
  assert capsys.readouterr().out == ""
