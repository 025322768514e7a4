"""experiments/md17.py: bad input of any kind is one line on stderr and exit code 2."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import psutil
import pytest

import qpt
from qpt import checkpoint, experiment, frame
from tests.processes import ENV, ROOT, md17_command

def md17(*args, config="water", config_file=None, env=ENV):
  return subprocess.run(md17_command(*args, config=config, config_file=config_file),
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def assert_one_line_error(result, *words):
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  for word in words:
    assert word in lines[0], lines[0]


@pytest.mark.parametrize("args, config, words", [
    # absl / ml_collections: before qpt loads; the suggestion is a clause of the same line
    (["--config.train.stepz=3"], "water", ["unknown config key 'stepz'; Did you mean \"steps\""]),
    (["--config.trian.steps=3"], "water", ["trian"]),
    (["--config.train.steps=many"], "water", ["many"]),
    ([], "waterr", ["unknown built-in molecule", "waterr"]),  # run_config.check, as below
])
def test_bad_configs(args, config, words):
  assert_one_line_error(md17(*args, config=config), *words)


@pytest.mark.parametrize("args", [[], ["--config.train.steps=3"]])
def test_a_config_file_that_cannot_be_read_is_one_line(tmp_path, args):
  # ml_collections defers a file it could not read to the config's first use (a traceback from
  # inside the run) or to the first override (a message of several lines).
  missing = os.path.join(tmp_path, "nowhere.py")
  assert_one_line_error(md17(*args, config_file=missing), "No such file", missing)


@pytest.mark.parametrize("text, words", [
    ("import ml_collections\n\ndef config():\n  return ml_collections.ConfigDict()\n",
     ["must define get_config()"]),
    ("def get_config(:\n  pass\n", ["line 1", "invalid syntax"]),
])
def test_a_config_file_that_is_not_a_config_is_one_line_naming_it(tmp_path, text, words):
  path = os.path.join(tmp_path, "mine.py")
  with open(path, "w") as f:
    f.write(text)
  assert_one_line_error(md17(config=None, config_file=path), path, *words)


def test_qm9_script_runs_its_config_as_the_readme_says(tmp_path):
  # `python experiments/qm9.py --config experiments/configs/qm9.py`: the script's own folder is on
  # the import path, the repository root is not, so the config must reach md17.py's without it.
  env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
  command = [sys.executable, os.path.join(ROOT, "experiments", "qm9.py"),
             f"--config={os.path.join(ROOT, 'experiments', 'configs', 'qm9.py')}",
             f"--config.workdir={tmp_path}", "--config.data.max_n_ao=5", "--quiet"]
  result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
  assert_one_line_error(result, "no molecule within", "max_n_ao=5")


@pytest.mark.parametrize("overrides, words", [
    (dict(mode="fit"), ["mode='fit'"]),
    (dict(loss="mse"), ["loss='mse'"]),
    ({"eval.refine_steps": -1}, ["eval.refine_steps=-1"]),
    ({"eval.hot_temperature": -5.0}, ["eval.hot_temperature=-5"]),
    (dict(self_consistency_weight=-0.5), ["self_consistency_weight=-0.5"]),
    (dict(iterations=3, mixing=(0.5,)), ["mixing has 1 values"]),
    ({"eval.per_molecule": 0}, ["eval.per_molecule=0"]),
    ({"data.workers": -1}, ["data.workers=-1"]),  # named as the config names it, not as data.py
    ({"data.prefetch": -2}, ["data.prefetch=-2"]),
    # `--config.workdir=$WORKDIR` with WORKDIR unset trained into the current directory
    (dict(workdir=""), ["workdir is empty"]), (dict(workdir="  "), ["workdir is empty"]),
])
def test_bad_config_values_are_one_line_input_errors(overrides, words):
  """What md17.py prints for these (test_bad_configs shows the path from check to stderr)."""
  from experiments.configs import md17 as configs
  from qpt import run_config
  c = configs.get_config("water")
  for key, value in overrides.items():
    section, _, field = key.rpartition(".")
    (c[section] if section else c)[field] = value
  with pytest.raises(qpt.InputError) as error:
    run_config.check(c)
  message = str(error.value)
  assert "\n" not in message and all(w in message for w in words), message


def test_a_path_field_starting_with_a_tilde_is_in_the_home_directory(tmp_path):
  """The shell leaves "--config.workdir=~/run" alone: runs wrote into a directory named "~" in
  the current one (which `rm -rf ~` then removes with the home directory)."""
  result = md17("--config.mode=eval", "--config.workdir=~/nothing", "--config.init_from=~/none",
                env=dict(ENV, HOME=str(tmp_path)))
  assert_one_line_error(result, f"init_from={tmp_path / 'none'}: no such checkpoint")
  assert not os.path.exists(os.path.join(ROOT, "~"))


def test_a_signal_outside_the_training_steps_is_one_line_and_its_exit_code(tmp_path):
  """mode=eval (no training steps): Ctrl-C was a traceback of 68 lines, SIGTERM a silent end.
  The signal is sent once md17.py handles SIGTERM (the kernel's SigCgt mask says so)."""
  save_another_models_checkpoint(tmp_path / "run", embedding=None)
  command = md17_command("--config.mode=eval", f"--config.workdir={tmp_path / 'run'}",
                         "--config.basis=sto-3g", "--config.grid_level=0")
  process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  caught = lambda: int(next(line.split()[1] for line in open(f"/proc/{process.pid}/status")
                            if line.startswith("SigCgt:")), 16)
  deadline = time.monotonic() + 60
  while not caught() >> (signal.SIGTERM - 1) & 1 and time.monotonic() < deadline:
    time.sleep(0.01)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 143, stderr
  assert stderr.splitlines() == [f"stopped: SIGTERM outside the training steps; {tmp_path / 'run'} "
                                 "keeps what was finished: run the same command again to go on"]
  assert not (tmp_path / "run" / "eval.json").exists()


def test_a_full_disk_where_the_run_writes_its_plot_is_one_line(tmp_path):
  """A write outside the checkpoints failing for the machine's reason (here the training-curves
  PNG, on a disk made full by patching matplotlib's savefig through a sitecustomize) was a
  traceback from where it hit."""
  site = tmp_path / "site"
  site.mkdir()
  (site / "sitecustomize.py").write_text(
      "import errno, os\nimport matplotlib.figure\n"
      "def savefig(self, path, *args, **kwargs):\n"
      "  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))\n"
      "matplotlib.figure.Figure.savefig = savefig\n")
  env = dict(ENV, PYTHONPATH=os.pathsep.join(filter(None, [str(site), ENV.get("PYTHONPATH")])))
  result = md17("--config.basis=sto-3g", "--config.grid_level=1", "--config.xc=lda,vwn",
                "--config.data.workers=0", "--config.train.batch_size=2", "--config.train.steps=1",
                "--config.eval.every=0", "--config.eval.n_conformers=0",
                f"--config.workdir={tmp_path / 'run'}", env=env)
  assert result.returncode == 1, result.stderr
  assert result.stderr.splitlines() == [
      f"error: {tmp_path / 'run' / 'training_curves.png'}: No space left on device; make room and "
      "run the same command again to resume from the last checkpoint"]


def save_another_models_checkpoint(workdir, embedding: int | None = 128):
  """A checkpoint in `workdir` of what a run with a narrower element embedding would have saved
  (zero parameters; `embedding` None: the water config's own model at STO-3G, grid level 0)."""
  from experiments.configs import md17 as configs
  c = configs.get_config("water")
  c.basis, c.grid_level = "sto-3g", 0
  network = experiment.make_network(c)
  example = qpt.build_problem(frame.canonical_molecule(qpt.molecules.get("water")),
                              experiment.level(c))
  like = jax.eval_shape(network.init, jax.random.key(0), example)
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), like)
  if embedding is not None:
    params["embedding/element"]["embeddings"] = np.zeros((37, embedding), np.float32)
  saver = checkpoint.Checkpointer(str(workdir / "checkpoints"))
  saver.save(5, {"params": params, "step": np.int32(5)}, {})
  saver.wait()


def test_a_checkpoint_of_another_model_is_refused_naming_the_parameter(tmp_path):
  save_another_models_checkpoint(tmp_path / "other")
  result = md17("--config.mode=eval", f"--config.workdir={tmp_path / 'eval'}",
                f"--config.init_from={tmp_path / 'other'}", "--config.basis=sto-3g",
                "--config.grid_level=0")
  assert_one_line_error(result, "['embedding/element']['embeddings']", "(37, 128)", "(37, 256)")


@pytest.mark.parametrize("source, words", [
    ("missing", ["init_from=", "missing", "no such checkpoint or workdir"]),
    ("missing/checkpoints/7", ["init_from=", "checkpoints/7", "no such checkpoint or workdir"]),
    ("empty", ["init_from=", "empty", "no finished checkpoint there"]),
    ("other", ["['embedding/element']['embeddings']", "(37, 128)", "(37, 256)"]),
    # A run that recorded another architecture (qm9.py's per-pair readout): the flags to pass.
    ("pair", ["init_from=", "model.pair_rank=0 here", "pass --config.model.pair_rank=16"]),
])
def test_fine_tuning_from_a_wrong_init_from_fails_before_validation_is_labelled(tmp_path, source,
                                                                                  words):
  """Training (mode=train, as a user fine-tunes): one line, and no PySCF label computed first —
  for a molecule set the validation labels take minutes (the error used to wait for them)."""
  (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
  if source in ("other", "pair"):
    save_another_models_checkpoint(tmp_path / source)
  if source == "pair":
    recorded = {"model.size": "tiny", "model.log_output_scale": True, "model.pair_rank": 16}
    (tmp_path / source / "config.json").write_text(json.dumps({"config": recorded}))
  run = tmp_path / "run"
  result = md17(f"--config.workdir={run}", f"--config.init_from={tmp_path / source}",
                "--config.basis=sto-3g", "--config.grid_level=0", "--config.data.workers=1",
                "--config.train.steps=2", "--config.eval.every=1", "--config.eval.n_validation=2")
  assert_one_line_error(result, *words)
  assert not (run / "validation_labels.npz").exists()


def test_a_killed_or_stopped_run_resumes_to_a_fresh_runs_trajectory(tmp_path):
  """Two fresh runs with a multi-threaded environment (OMP_NUM_THREADS=2, as users' shells often
  have it); the second is SIGKILLed mid-run (no chance to checkpoint or stop its workers): within
  10 s no process of it remains, and the same command then resumes it to logged losses bitwise
  those of the run that was never interrupted, each step logged once. Nothing is shared between
  the two runs, not even the sampler's Hessian: every host computation that feeds training runs on
  one thread (`qpt.threads`), so the bits cannot depend on the thread count. The resumed run is
  stopped by SIGTERM in turn, and resumes to the same bits too."""
  tiny = ["--config.basis=sto-3g", "--config.grid_level=1", "--config.xc=lda,vwn",
          "--config.data.workers=1", "--config.data.prefetch=2", "--config.train.batch_size=2",
          "--config.train.steps=30", "--config.train.warmup_steps=1", "--config.log_every=1",
          "--config.checkpoint.every=4", "--config.eval.every=0", "--config.eval.n_conformers=0"]
  threaded = dict(ENV, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
  straight = md17(*tiny, f"--config.workdir={tmp_path / 'straight'}", env=threaded)
  assert straight.returncode == 0, straight.stderr
  killed = tmp_path / "killed"
  command = md17_command(*tiny, f"--config.workdir={killed}")
  process = subprocess.Popen(command, cwd=ROOT, env=threaded, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 240
  while not (killed / "checkpoints" / "8").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
  run = psutil.Process(process.pid).children(recursive=True)  # its worker and resource tracker
  assert run, "the run has no worker process: the leak check would prove nothing"
  process.kill()
  process.wait()
  gone, alive = psutil.wait_procs(run, timeout=10)
  assert not alive, [(p.pid, p.name(), p.cmdline()[-2:]) for p in alive]
  steps = lambda workdir: [r["step"] for r in records(workdir)]
  assert 8 <= max(steps(killed)) < 30  # killed mid-run, with steps logged past the checkpoint

  # SIGTERM (a scheduler's preemption) stops the resumed run after a step and a checkpoint of that
  # step, with the exit code of SIGTERM: it used to exit 0, as if training had finished.
  process = subprocess.Popen(command, cwd=ROOT, env=threaded, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 240
  while not (killed / "checkpoints" / "16").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
  process.terminate()
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 143, stderr
  (line,) = stderr.strip().splitlines()
  last = max(steps(killed))
  assert line.startswith(f"stopped: SIGTERM at step {last} of 30: checkpointed in") and last < 30
  assert (killed / "checkpoints" / str(last)).exists()
  resumed = md17(*tiny, f"--config.workdir={killed}", env=threaded)
  assert resumed.returncode == 0, resumed.stderr
  assert steps(killed) == steps(tmp_path / "straight") == list(range(1, 31))
  assert ([r["loss"] for r in records(killed)]
          == [r["loss"] for r in records(tmp_path / "straight")])
