"""The training run: metrics.jsonl, checkpoints, bitwise resume after a stop, config guard."""

import json
import os

import pytest

import qpt
from experiments.configs import md17
from qpt import train


def small_config(workdir, steps):
  c = md17.get_config("water")
  c.workdir = str(workdir)
  c.basis, c.grid_level, c.xc = "sto-3g", 1, "lda,vwn"
  c.iterations, c.mixing = 1, (0.0,)
  c.data.workers, c.data.prefetch = 0, 0
  c.train.steps, c.train.batch_size, c.train.warmup_steps = steps, 2, 1
  c.log_every, c.checkpoint.every = 1, 2
  c.eval.n_conformers = 0
  return c


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["loss"] for line in f]


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
  train.train(small_config(tmp_path / "straight", 4), progress=False)
  train.train(small_config(tmp_path / "stopped", 2), progress=False)  # "killed" after step 2
  train.train(small_config(tmp_path / "stopped", 4), progress=False)  # the same command again
  straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "stopped")
  assert len(straight) == len(resumed) == 4
  assert (tmp_path / "straight" / "training_curves.png").exists()
  assert straight == resumed  # bitwise, on CPU with the same device count
  assert straight[-1] < straight[0]
  assert all(abs(e - (-74.7)) < 0.5 for e in straight)  # float64 totals, Hartree


def test_resuming_with_another_level_of_theory_is_refused(tmp_path):
  train.train(small_config(tmp_path, 2), progress=False)
  changed = small_config(tmp_path, 4)
  changed.xc = "pbe"
  with pytest.raises(qpt.InputError, match="xc='lda,vwn'"):
    train.train(changed, progress=False)


def test_final_evaluation_writes_eval_json(tmp_path):
  c = small_config(tmp_path, 2)
  c.eval.n_conformers = 2
  train.train(c, progress=False)
  with open(tmp_path / "eval.json") as f:
    metrics = json.load(f)
  assert metrics["n_conformers"] == 2
  for key in ("h_mae_uha", "h_mae_fock_uha", "h_mae_after_k_uha", "eps_occ_mae_uha",
              "psi_cos_percent", "energy_mae_uha", "gap_mae_uha", "scf_cycle_ratio",
              "energy_mae_uha_minao", "scf_cycle_ratio_minao"):
    assert key in metrics
  # Two steps of a fresh model change little: it is still close to the MINAO baseline's error.
  assert metrics["energy_mae_uha"] < 2 * metrics["energy_mae_uha_minao"]
