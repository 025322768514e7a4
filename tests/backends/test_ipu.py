"""The IPU policy, emulated on the CPU: float32 with x64 off, no host callbacks, static shapes."""

import json
import subprocess
import sys

import numpy as np

from experiments.configs import md17
from tests import pyscf_reference as ref
from tests.processes import ENV, ROOT, md17_command

# Runs in a fresh process: x64 must start off (the test process has it on for float64 tests).
EMULATED_RUN = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
import qpt
from experiments.configs import md17
from qpt import backends, checkpoint, experiment

c = md17.get_config("water")
c.workdir = sys.argv[1]
c.backend.name, c.backend.emulate = "ipu", True
c.basis, c.grid_level, c.xc = "sto-3g", 1, "lda,vwn"
c.data.grid_level = -1  # train on grid_level: the energies are checked against PySCF's on it
c.data.workers, c.train.batch_size, c.train.steps, c.train.warmup_steps = 0, 2, 2, 1
c.log_every, c.eval.every, c.eval.n_conformers = 1, 0, 0
experiment.train(c, progress=False)
state = checkpoint.Checkpointer(c.workdir + "/checkpoints").restore(None)[0]
out = dict(x64=bool(jax.config.jax_enable_x64),
           dtypes=sorted({str(np.asarray(a).dtype) for a in jax.tree.leaves(state)}))

backend = backends.create(c)
def uses_a_callback(state, batch, labels):
  echo = jax.pure_callback(lambda x: x, jax.ShapeDtypeStruct(batch.shape, batch.dtype), batch)
  return state, {"total": jnp.sum(echo)}
try:
  backend.compile_step(uses_a_callback)(jnp.zeros(()), backend.put_batch(np.ones((1, 3), np.float32)), None)
  out["callback"] = "ran"
except qpt.InputError as e:
  out["callback"] = str(e)
try:
  backend.put_batch(np.ones((1, 5), np.float32))
  out["reshape"] = "accepted"
except qpt.InputError as e:
  out["reshape"] = str(e)
print(json.dumps(out))
"""


def test_emulated_ipu_trains_in_float32_and_refuses_callbacks_and_new_shapes(tmp_path):
  result = subprocess.run([sys.executable, "-c", EMULATED_RUN, str(tmp_path)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out["x64"] is False
  assert out["dtypes"] == ["float32", "int32"]  # parameters, Adam moments, counters
  with open(tmp_path / "metrics.jsonl") as f:
    losses = [json.loads(line)["loss"] for line in f]
  # The float32-only run's energies against PySCF (float64): above the SCF energy, and at step 1
  # (H ≈ H_init) PySCF's energy one plain SCF step from MINAO.
  c = md17.get_config("water")
  c.basis, c.grid_level, c.xc, c.train.batch_size = "sto-3g", 1, "lda,vwn", 2
  assert len(losses) == 2
  for step, energy in enumerate(losses, start=1):
    conformers = ref.step_conformers(c, str(tmp_path), step)
    assert energy > np.mean([ref.scf_energy(m, c.basis, c.xc, c.grid_level) for m in conformers])
  untrained = np.mean([ref.unrolled_minao_energy(m, c.basis, c.xc, c.grid_level, 0)
                       for m in ref.step_conformers(c, str(tmp_path), 1)])
  assert abs(losses[0] - untrained) < 2e-3, (losses[0], untrained)
  assert "cannot run host callbacks" in out["callback"] and "pure_callback" in out["callback"]
  assert "needs static shapes" in out["reshape"] and "(1, 3) → (1, 5)" in out["reshape"]


def one_line_error(*args):
  result = subprocess.run(md17_command(*args), capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=300)
  assert result.returncode == 2, result.stderr
  (line,) = result.stderr.strip().splitlines()
  return line


def test_float64_is_refused(tmp_path):
  line = one_line_error("--config.backend.name=ipu", "--config.backend.emulate=True",
                        "--config.dtype=float64", f"--config.workdir={tmp_path}")
  assert "backend ipu computes in float32 only" in line


def test_without_the_plugin_emulation_must_be_asked_for(tmp_path):
  line = one_line_error("--config.backend.name=ipu", f"--config.workdir={tmp_path}")
  assert "IPU JAX plugin is not installed" in line and "backend.emulate=True" in line
