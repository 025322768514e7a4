"""tools/benchmark.py: a real (small) run of a sub-command end to end, and the exponent fit."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import qpt

from tests.processes import ENV, ROOT, md17_command
from tools.bench import common, scaling


def test_energy_subcommand_writes_rows_table_and_plot(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "energy", "--json",
       "--molecules", "water", "--basis", "sto-3g", "--repeats", "1", "--out", str(tmp_path)],
      capture_output=True, text=True, env=ENV, timeout=600)
  assert out.returncode == 0, out.stderr
  rows = json.loads(out.stdout)
  assert rows == json.loads((tmp_path / "energy.json").read_text())
  assert (tmp_path / "energy.png").read_bytes().startswith(b"\x89PNG")
  assert [r["k"] for r in rows] == [0, 3]
  for r in rows:  # ratios are of times measured in this run, and every row says where
    assert r["qpt_seconds"] > 0 and r["pyscf_iteration_seconds"] > 0
    assert r["ratio"] == r["qpt_seconds"] / r["pyscf_iteration_seconds"]
    assert r["n_ao"] == 7 and r["machine"]["cores"] == os.cpu_count() and r["date"]
    assert r["device_mb"] > 0
  assert rows[1]["qpt_seconds"] > rows[0]["qpt_seconds"]  # k = 3 differentiates 3 more Fock builds


def test_the_machine_record_names_the_cpus_widest_vector_instructions():
  """The timings depend on them by ~2× (AVX-512 against AVX2): each row says which the CPU has,
  read from /proc/cpuinfo and here checked against numpy's own run-time CPU detection."""
  from numpy._core import _multiarray_umath  # numpy's dispatch table: no public name

  cpu = common.machine()["cpu"]
  features = getattr(_multiarray_umath, "__cpu_features__", {})
  if not cpu or "AVX2" not in features:
    pytest.skip("not an x86 Linux machine")
  widest = next((isa for isa in ("AVX512F", "AVX2", "AVX") if features.get(isa)), "SSE")
  assert re.fullmatch(r"family \d+ model \d+, [a-z0-9]+", cpu)
  assert cpu.endswith(", " + widest.lower().removesuffix("f"))


def test_device_counts_are_checked_before_any_process_starts():
  assert common.device_counts("1, 2,4,2", batch=4) == [1, 2, 4]
  for text, words in (("3,x", "write whole numbers"), ("0", "at least 1"),
                      ("3", "must divide over every device count [3]")):
    with pytest.raises(qpt.InputError, match=re.escape(words)):  # 3,x was a ValueError traceback
      common.device_counts(text, batch=4)


def test_bad_argument_is_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "energy", "--molecules",
       "unobtainium", "--out", str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=300)
  assert out.returncode == 2
  assert len(out.stderr.strip().splitlines()) == 1 and "unobtainium" in out.stderr


def test_inference_restarts_pyscf_from_a_shrunk_density_error(tmp_path):
  """`inference --shrink`: PySCF restarted from D* + λ (D(H_pred) − D*). λ = 1 is the prediction
  itself (its cycles), λ = 0 PySCF's own converged density (converged at once)."""
  workdir = tmp_path / "run"
  # The run of tests/test_md17_cli.py's full-disk test: its step is compiled once for both.
  subprocess.run(md17_command("--config.basis=sto-3g", "--config.grid_level=1",
                              "--config.xc=lda,vwn", "--config.data.workers=0",
                              "--config.train.batch_size=2",
                              "--config.train.steps=1", "--config.eval.every=0",
                              "--config.eval.n_conformers=0", f"--config.workdir={workdir}"),
                 check=True, capture_output=True, env=ENV, timeout=600)
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "inference", "--workdir",
       str(workdir), "--n", "2", "--shrink", "1,0", "--json", "--out", str(tmp_path)],
      capture_output=True, text=True, env=ENV, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  for row in json.loads(out.stdout):
    assert row["cycles_error_x1"] == row["cycles_from_prediction"] > 1
    assert row["cycles_error_x0"] <= 2 < row["cycles_minao"]


def test_exponent_fit_recovers_power_laws():
  n = np.array([24, 72, 132, 358])
  rows = [dict(eri="df", n_ao=int(k), qpt_seconds=2e-6 * k**2.5, pyscf_iteration_seconds=1e-7 * k**3.2,
               device_mb=0.1 * k**2) for k in n]
  (fit,) = scaling.exponents(rows)
  assert (fit["n_ao_min"], fit["n_ao_max"], fit["points"]) == (24, 358, 4)
  np.testing.assert_allclose([fit["qpt_exponent"], fit["pyscf_exponent"], fit["device_mb_exponent"]],
                             [2.5, 3.2, 2.0], atol=1e-9)


def test_table_prints_one_table_per_part(capsys):
  columns = {"a": (("x", "x", "d"),), "b": (("y", "y", ".1f"),)}
  common.print_table(columns, [dict(part="a", x=1), dict(part="b", y=None), dict(part="b", y=2.0)])
  assert capsys.readouterr().out.split() == ["##", "a", "x", "1", "##", "b", "y", "—", "2.0"]


def test_training_grid_optimum_is_exact_on_the_evaluation_grid_and_not_on_a_coarser_one(tmp_path):
  """`training-grid`: PySCF's density converged on the evaluation grid itself is the reference
  (no error, PySCF restarted from it converges at once); converged on level 0 it is not (water:
  ~9 µHa, docs/results.md §1): the error a level-0 training grid's optimum carries. ε is
  scored, as in eval.json, against PySCF's last mo_energy, which its conv_tol leaves ~1 µHa off."""
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "training-grid", "--molecules",
       "water", "--levels", "0,3", "--n", "1", "--json", "--out", str(tmp_path)],
      capture_output=True, text=True, env=ENV, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  coarse, same = json.loads(out.stdout)
  levels = coarse["train_grid_level"], same["train_grid_level"], same["eval_grid_level"]
  assert levels == (0, 3, 3)
  assert same["energy_mae_uha"] < 1e-3 and same["eps_occ_mae_uha"] < 5.0
  assert same["scf_cycle_ratio_per_conformer"] <= 0.2
  assert coarse["energy_mae_uha"] > 1.0 and coarse["eps_occ_mae_uha"] > 20.0
  assert coarse["scf_cycle_ratio_per_conformer"] > same["scf_cycle_ratio_per_conformer"]
  assert (tmp_path / "training-grid.png").read_bytes().startswith(b"\x89PNG")


def test_device_count_rounds_keep_the_median_round_and_every_time():
  rounds = [dict(devices=4, step_seconds=t, note=t) for t in (0.30, 0.10, 0.20)]
  row = scaling.median_round(rounds)
  assert row["note"] == 0.20 and row["round_step_seconds"] == [0.30, 0.10, 0.20]
  assert scaling.median_round(rounds[1:])["note"] == 0.20  # even: the upper of the two
  assert scaling.median_round([rounds[0], None]) is None  # a hung round hangs the count
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "scaling", "--series", "",
       "--devices", "1", "--rounds", "0"], capture_output=True, text=True, env=ENV, timeout=300)
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
  assert out.stderr.strip().endswith("--rounds 0: must be at least 1")
