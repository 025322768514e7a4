"""The experiment: metrics.jsonl, checkpoints, bitwise resume, fine-tuning, validation, eval mode."""

import argparse
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import qpt
from experiments.configs import md17
from qpt import backends, checkpoint, conformers, evaluate, experiment, labels, run_config, threads
from qpt.train import make_optimizer
from tests import pyscf_reference as ref


def small_config(workdir, steps):
  c = md17.get_config("water")
  c.workdir = str(workdir)
  c.basis, c.grid_level, c.xc = "sto-3g", 1, "lda,vwn"
  c.data.grid_level = -1  # train on grid_level: the energies are checked against PySCF's on it
  c.iterations, c.mixing = 1, (0.0,)
  c.data.workers, c.data.prefetch = 0, 0
  c.train.steps, c.train.batch_size, c.train.warmup_steps = steps, 2, 1
  c.log_every, c.checkpoint.every = 1, 2
  c.eval.every, c.eval.n_conformers = 0, 0
  return c


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def losses(workdir):
  return [r["loss"] for r in records(workdir)]


def saved_state(workdir, step):
  """The raw checkpointed training state (params, opt_state, step) at `step`."""
  return checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).restore(None, step)[0]


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
  experiment.train(small_config(tmp_path / "straight", 4), progress=False)
  experiment.train(small_config(tmp_path / "stopped", 2), progress=False)  # "killed" after step 2
  experiment.train(small_config(tmp_path / "stopped", 4), progress=False)  # the same command again
  straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "stopped")
  assert len(straight) == len(resumed) == 4
  assert (tmp_path / "straight" / "training_curves.png").exists()
  assert straight == resumed  # bitwise, on CPU with the same device count
  assert straight[-1] < straight[0]
  # Each logged loss is the batch-mean E[D_1(H)] (float64 total, Hartree): above PySCF's SCF
  # energies of those conformers (variational); at step 1, where H ≈ H_init (W starts near 0),
  # PySCF's own E after two plain SCF steps from MINAO (measured 0.4 mHa apart; SCF is 97 below).
  c = small_config(tmp_path / "straight", 4)
  for step, energy in enumerate(straight, start=1):
    conformers = ref.step_conformers(c, str(tmp_path / "straight"), step)
    scf = np.mean([ref.scf_energy(m, c.basis, c.xc, c.grid_level) for m in conformers])
    assert energy > scf, (step, energy, scf)
    if step == 1:
      untrained = np.mean([ref.unrolled_minao_energy(m, c.basis, c.xc, c.grid_level, 1)
                           for m in conformers])
      assert abs(energy - untrained) < 2e-3, (energy, untrained)


def test_ao_values_made_on_the_device_train_like_the_hosts(tmp_path):
  """data.ao_on_device: a worker process ships problems without AO values and the step evaluates
  them. The logged batch energies (k = 0, and k = 1, which holds them for its two walks) are the
  host-AO run's to float32 rounding: 2 µHa, where a step moves them by mHa."""
  for iterations in (0, 1):
    runs = {}
    for on_device in (False, True):
      c = small_config(tmp_path / f"{iterations}-{on_device}", 3)
      c.iterations, c.mixing = iterations, (0.0,) * iterations
      c.data.ao_on_device, c.data.workers = on_device, int(on_device)
      experiment.train(c, progress=False)
      runs[on_device] = losses(tmp_path / f"{iterations}-{on_device}")
    np.testing.assert_allclose(runs[True], runs[False], rtol=0, atol=2e-6)
    assert abs(runs[False][-1] - runs[False][0]) > 1e-4


def test_resuming_with_another_level_of_theory_is_refused(tmp_path):
  experiment.train(small_config(tmp_path, 2), progress=False)
  changed = small_config(tmp_path, 4)
  changed.xc = "pbe"
  with pytest.raises(qpt.InputError, match="xc='lda,vwn'"):
    experiment.train(changed, progress=False)


def test_a_run_past_the_steps_asked_for_is_refused_not_scored_as_the_shorter_one(tmp_path,
                                                                                 capsys):
  """train.steps=2 in a workdir at step 4 scored step 4's model and wrote train.steps=2 over its
  config.json; the same command again (a finished run) and more steps go on, the latter saying
  that the learning rate's schedule is made for the new total (it jumps at the next step)."""
  experiment.train(small_config(tmp_path, 4), progress=False)
  with pytest.raises(qpt.InputError, match="holds a run at step 4, past train.steps=2: raise"):
    experiment.train(small_config(tmp_path, 2), progress=False)
  assert run_config.saved(tmp_path).train.steps == 4
  experiment.train(small_config(tmp_path, 4), progress=False)
  assert "schedule" not in capsys.readouterr().out
  longer = small_config(tmp_path, 6)
  experiment.train(longer, progress=False)
  rates = [float(make_optimizer(small_config(tmp_path, n).train)[1](4)) for n in (4, 6)]
  assert (f"resuming at step 4 with train.steps 4 → 6: the learning rate's schedule is made for 6 "
          f"steps ({rates[0]:.2g} → {rates[1]:.2g} at step 5)") in capsys.readouterr().out
  assert rates[1] > 2 * rates[0]  # at the end of its decay the 4-step schedule is far lower
  assert [r["step"] for r in records(tmp_path)] == [1, 2, 3, 4, 5, 6]
  assert records(tmp_path)[4]["lr"] == pytest.approx(rates[1])


def test_a_second_run_in_a_busy_workdir_is_refused_and_a_killed_ones_lock_is_gone(tmp_path):
  """The same command started twice interleaved two trajectories' checkpoints and metrics."""
  holder = subprocess.Popen(
      [sys.executable, "-c", "import time; from qpt.files import one_run_at_a_time\n"
       f"with one_run_at_a_time({str(tmp_path)!r}):\n  print('held', flush=True); time.sleep(600)"],
      stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  try:
    assert holder.stdout.readline().strip() == "held"
    busy = f"in use by another training run \\(pid {holder.pid} "
    with pytest.raises(qpt.InputError, match=busy):
      experiment.train(small_config(tmp_path, 2), progress=False)
    assert not os.path.exists(tmp_path / "checkpoints")
  finally:
    holder.kill()  # SIGKILL: no chance to unlock; the kernel drops the lock with the process
    holder.wait()
  experiment.train(small_config(tmp_path, 2), progress=False)
  assert [r["step"] for r in records(tmp_path)] == [1, 2]


def test_validation_and_eval_mode_score_the_checkpointed_parameters(tmp_path):
  c = small_config(tmp_path, 2)
  c.eval.every, c.eval.n_validation, c.eval.n_conformers = 2, 2, 2
  final = experiment.train(c, progress=False)
  for key in ("h_mae_uha", "eps_occ_raw_mae_uha", "h_mae_fock_uha", "h_mae_after_k_uha",
              "eps_occ_mae_uha", "eps_all_mae_uha", "psi_cos_percent", "energy_mae_uha",
              "gap_mae_uha", "scf_cycle_ratio", "scf_cycle_ratio_per_conformer",
              "energy_mae_uha_minao", "scf_cycle_ratio_minao", "eps_occ_mae_uha_refined",
              "energy_mae_uha_refined", "refine_time_ratio"):
    assert key in final
  assert final["refine_steps"] == c.eval.refine_steps == 2
  # The generalisation set: other conformers, drawn at 1000 K, scored with the same keys.
  hot = final["T1000"]
  assert set(hot) == set(final) - {"T1000"} and hot["n_conformers"] == 2
  assert not np.allclose(labels.load_labels(tmp_path / "labels_T1000.npz").positions,
                         labels.load_labels(tmp_path / "labels.npz").positions)
  with open(tmp_path / "eval.json") as f:
    assert json.load(f) == {**final, "meaning": evaluate.MEANING}
  # Two steps of a fresh model change little: it is still close to the MINAO baseline's error.
  assert final["energy_mae_uha"] < 2 * final["energy_mae_uha_minao"]
  # mode=eval on the same workdir reads the last checkpoint: the same parameters, the same scores.
  c.mode = "eval"
  again = experiment.run(c)
  flat = lambda m: {f"{k}.{j}" if isinstance(v, dict) else k: w
                    for k, v in m.items() for j, w in (v.items() if isinstance(v, dict) else [(k, v)])}
  for key, value in flat(final).items():
    if not key.endswith("refine_time_ratio"):  # a timing
      assert flat(again)[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
  # At another functional it would score (and overwrite eval.json with) a model out of its domain.
  c.xc = "pbe"
  with pytest.raises(qpt.InputError, match="trained its model for xc='lda,vwn', not xc='pbe': "
                                           "pass --config.xc=lda,vwn"):
    experiment.run(c)
  c.xc = "lda,vwn"
  # The validation logged at step 2 is the final parameters' score on the validation set.
  logged = records(tmp_path)[-1]
  validation = labels.load_labels(tmp_path / "validation_labels.npz")
  assert len(validation) == 2 and not np.allclose(validation.positions, labels.load_labels(
      tmp_path / "labels.npz").positions)  # validation and test conformers differ
  assert logged["step"] == 2 and logged["val_energy_mae_uha"] > 0
  params = checkpoint.load_params(str(tmp_path), saved_state(tmp_path, 2)["params"])
  network = experiment.make_network(c)
  scores = evaluate.evaluate(lambda p: experiment.predictor(network)(params, p),
                             evaluate.problems_for(validation), validation, c.iterations,
                             c.mixing, baseline=False, scf_cycles=False)
  assert logged["val_energy_mae_uha"] == pytest.approx(scores["energy_mae_uha"], rel=1e-6)


def test_md17_files_give_disjoint_train_validation_and_test_frames(tmp_path):
  water = qpt.molecules.get("water")
  rng = np.random.default_rng(0)
  frames = water.positions_angstrom + 0.02 * rng.standard_normal((30, 3, 3))
  np.savez(tmp_path / "water.npz", R=frames, z=water.atomic_numbers)
  c = small_config(tmp_path, 1)
  c.data.md17_file = str(tmp_path / "water.npz")
  c.data.md17_split = dict(train=20, validation=5, test=5)
  c.eval.n_validation, c.eval.n_conformers = 5, 5
  s = experiment.sources(c, str(tmp_path))
  seen = {name: {tuple(np.round(getattr(s, name)(i).positions_angstrom.ravel(), 9)) for i in range(n)}
          for name, n in (("train", 20), ("validation", 5), ("test", 5))}
  assert [len(v) for v in seen.values()] == [20, 5, 5]
  assert not (seen["train"] & seen["validation"] or seen["train"] & seen["test"]
              or seen["validation"] & seen["test"])
  c.eval.n_conformers = 6
  with pytest.raises(qpt.InputError, match="6 test conformers"):
    experiment.sources(c, str(tmp_path))
  assert isinstance(s.train, conformers.FrameSampler)


def test_an_md17_files_run_is_named_and_recorded_by_its_frames_not_config_molecule(tmp_path,
                                                                                   capsys):
  """With data.md17_file, config.molecule is left unused: the final evaluation called water's
  frames 'held-out uracil' (md17.py:uracil with a water file), and the elements the model trained
  on are the file's."""
  water = qpt.molecules.get("water")
  frames = water.positions_angstrom + 0.02 * np.random.default_rng(0).standard_normal((8, 3, 3))
  np.savez(tmp_path / "h2o.npz", R=frames, z=water.atomic_numbers)
  c = small_config(tmp_path / "run", 1)
  c.molecule, c.data.md17_file = "uracil", str(tmp_path / "h2o.npz")
  c.data.md17_split = dict(train=4, validation=2, test=2)
  c.eval.n_validation, c.eval.n_conformers, c.eval.refine_steps = 0, 2, 0
  c.eval.hot_temperature = 0.0
  experiment.train(c, progress=False)
  assert "held-out frames of h2o.npz, 2 conformers" in capsys.readouterr().out
  assert qpt.load_model(c.workdir).trained_on == run_config.TrainedOn((1, 8), (0,))


def test_fields_added_since_a_checkpoint_block_its_resumption_only_if_they_change_it():
  saved = {"xc": "b3lyp5", "train.steps": 100}
  run_config.check_resumable(saved, {"xc": "b3lyp5", "train.steps": 200, "data.pad_to": []})
  with pytest.raises(qpt.InputError, match="xc='b3lyp5'"):
    run_config.check_resumable(saved, {"xc": "pbe", "train.steps": 100})
  # ... unless the new field's value changes what the saved run computed before it existed.
  run_config.check_resumable(saved, {"xc": "b3lyp5", "train.steps": 100, "data.eri": ""})
  with pytest.raises(qpt.InputError, match="before data.eri existed.*data.eri=''.*'df'"):
    run_config.check_resumable(saved, {"xc": "b3lyp5", "train.steps": 100, "data.eri": "df"})


QM9_FIXTURE = os.path.join(os.path.dirname(__file__), "data", "qm9pack")


def qm9_config(workdir, steps):
  """experiments/configs/qm9.py on the 10-row QM9 fixture (8 molecules without water and
  ethanol), at small_config's level of theory."""
  from experiments.configs import qm9
  c = qm9.get_config()
  small = small_config(workdir, steps)
  for key in ("workdir", "basis", "grid_level", "xc", "iterations", "mixing", "log_every"):
    c[key] = small[key]
  c.data.update(small.data.to_dict() | dict(molecule_set=QM9_FIXTURE, max_heavy_atoms=0,
                                            max_n_ao=0, split_fractions=(0.5, 0.25, 0.25)))
  c.train.update(small.train.to_dict())
  c.checkpoint.update(small.checkpoint.to_dict())
  c.eval.update(every=0, n_validation=0, n_conformers=4, per_molecule=2, refine_steps=0)
  return c


def test_a_molecule_set_trains_on_its_train_molecules_and_scores_unseen_ones(tmp_path,
                                                                             monkeypatch):
  """QM9 pre-training in small: train molecules only in the stream, test molecules each at
  equilibrium and displaced, md17's keys averaged over molecules (the refinement timed against
  PySCF on the first molecules only), zero-shot SCF starts, and fine-tuning from it (parameters
  kept, a fresh optimizer) through the transfer benchmark."""
  c = qm9_config(tmp_path / "qm9", 2)
  c.eval.refine_steps = 1
  monkeypatch.setattr(evaluate, "PYSCF_TIMINGS", 1)  # of the 2 test molecules, the first
  timed, scf_seconds = [], evaluate.scf_seconds
  monkeypatch.setattr(evaluate, "scf_seconds",
                      lambda reference, i: timed.append(i) or scf_seconds(reference, i))
  split = experiment.molecule_split(c)
  assert [len(split[k]) for k in ("train", "validation", "test")] == [4, 2, 2]
  names = lambda k: {m.name for m in split[k]}
  s = experiment.sources(c, str(tmp_path))
  assert {s.train(i).name for i in range(40)} == names("train")  # and every one of them
  final = experiment.train(c, progress=False)
  assert final["n_molecules"] == 2 and final["n_conformers"] == 4
  assert set(final["per_molecule"]) == names("test")
  per_molecule = list(final["per_molecule"].values())
  for key, value in final.items():  # md17's keys: the mean over molecules (that have them)
    if key not in ("per_molecule", "n_molecules", "refine_steps") + experiment.SUMMED:
      assert value == pytest.approx(np.mean([m[key] for m in per_molecule if key in m]))
  assert len(timed) == 1  # one full PySCF SCF timed, for the first molecule only
  assert ["refine_time_ratio" in m for m in per_molecule] == [True, False]
  assert final["refine_time_ratio"] == per_molecule[0]["refine_time_ratio"] > 0
  for key in experiment.SUMMED:  # counts: summed over molecules
    assert final[key] == sum(m[key] for m in per_molecule)
  for name, scores in final["per_molecule"].items():  # PySCF's labels of that molecule alone
    reference = labels.load_labels(tmp_path / "qm9" / "labels" / f"{name}.npz")
    assert len(reference) == scores["n_conformers"] == 2
    equilibrium = next(m for m in split["test"] if m.name == name)
    assert np.allclose(np.linalg.norm(reference.positions[0][:, None] - reference.positions[0],
                                      axis=-1),
                       np.linalg.norm(equilibrium.positions[:, None] - equilibrium.positions,
                                      axis=-1))  # conformer 0 is the equilibrium (another frame)
  # Zero-shot: tools/scf.py on an unseen molecule, started from the model's prediction, reaches
  # the SCF that MINAO's start reaches (the same energy), and reports both cycle counts.
  from tools import scf
  unseen = split["validation"][0]  # CH4: its elements trained on, itself never
  xyz = tmp_path / "unseen.xyz"
  xyz.write_text(unseen.xyz_text())
  with threads.one_thread():  # bit for bit, for the comparison below (the load_model test's note)
    out = scf.run(scf.parse_args(["--xyz", str(xyz), "--basis", c.basis, "--xc", c.xc,
                                  "--grid-level", str(c.grid_level), "--init-from",
                                  str(tmp_path / "qm9")]))
  assert out["converged"] and out["iterations"] >= 1 and out["iterations_minao"] >= 1
  assert out["energy"] == pytest.approx(out["energy_minao"], abs=1e-5)
  out_unseen = out["energy"]
  assert out["energy_predicted"] > out["energy"] - 1e-5  # variational: E[D(H_pred)] ≥ E_SCF
  assert backends.float64_enabled()  # a float32 SCF left the process's float64 as it found it
  # A molecule whose problem pads its AOs (malondialdehyde/STO-3G: 29): the prediction's density
  # has PySCF's 29 × 29 shape, which dft.scf multiplied into the padded X⁻¹ and failed on.
  out = scf.run(scf.parse_args(["--molecule", "malondialdehyde", "--basis", c.basis, "--xc", c.xc,
                                "--grid-level", str(c.grid_level), "--init-from",
                                str(tmp_path / "qm9")]))
  assert out["nao"] == 29 and out["converged"]
  assert out["energy"] == pytest.approx(out["energy_minao"], abs=1e-5)
  # Without --basis/--xc it is at the model's level; another one is refused, the functional
  # too (only another basis was, and a B3LYP model restarted a PBE SCF).
  with threads.one_thread():
    assert scf.run(scf.parse_args(["--xyz", str(xyz), "--grid-level", str(c.grid_level),
                                   "--init-from", str(tmp_path / "qm9")]))["energy"] == out_unseen
  for flag, value in (("--basis", "def2-svp"), ("--xc", "pbe")):
    with pytest.raises(qpt.InputError, match=f"trained for {flag[2:]}='{getattr(c, flag[2:])}'"):
      scf.run(scf.parse_args(["--xyz", str(xyz), flag, value, "--init-from",
                              str(tmp_path / "qm9")]))
  # qpt.load_model knows the level: the same prediction as bare parameters at that level, and no
  # prediction at another basis or functional (water's def2-SVP model in STO-3G scored 4,470
  # µHa instead of 1.3) or in a Mole of another basis; the grid, eri and dtype may differ.
  trained = qpt.load_model(str(tmp_path / "qm9"))
  assert trained.level == experiment.level(c)
  # On one host thread: PySCF's OpenMP sums make the host's float64 reference energy differ in
  # its last bit from build to build (CH4 here: 6–8 of 40 builds on 2 threads; docs/numerics.md
  # §9), which training's stream workers, on one thread, never see.
  with threads.one_thread():
    ours = qpt.predict(trained, unseen)
    bare = qpt.predict(qpt.load_params(str(tmp_path / "qm9")), unseen, experiment.level(c))
  assert ours.level == bare.level and ours.energy == bare.energy
  np.testing.assert_array_equal(ours.hamiltonian, bare.hamiltonian)
  in_a_mole = qpt.predict(trained, unseen.to_pyscf(c.basis))
  assert in_a_mole.energy == pytest.approx(ours.energy, abs=1e-9)
  assert qpt.predict(trained, unseen, grid_level=1).level.grid_level == 1
  for wrong in (dict(basis="def2-svp"), dict(xc="PBE"), dict(level=qpt.Level("6-31g", c.xc))):
    with pytest.raises(qpt.InputError, match=f"qm9 was trained for .*, not .*: predict at its"):
      qpt.predict(trained, unseen, **wrong)
  with pytest.raises(qpt.InputError, match="for basis='sto-3g', not basis='def2-svp'"):
    qpt.predict(trained, unseen.to_pyscf("def2-svp"))
  with pytest.raises(qpt.InputError, match="level= or basis, not both"):
    qpt.predict(trained, unseen, basis=c.basis, level=experiment.level(c))
  # One checkpoint directory is read with its run's level; one copied without its run's
  # config.json has none, and is predicted only at a level given in full.
  copied = tmp_path / "copied"
  shutil.copytree(tmp_path / "qm9" / "checkpoints", copied / "checkpoints")
  step = checkpoint.locate(str(tmp_path / "qm9"))[1]
  assert qpt.load_model(str(tmp_path / "qm9" / "checkpoints" / str(step))).level == trained.level
  orphan = qpt.load_model(str(copied))
  assert orphan.level is None
  with pytest.raises(qpt.InputError, match="no config.json to say what level its model was"):
    qpt.predict(orphan, unseen, basis=c.basis)
  with threads.one_thread():
    assert qpt.predict(orphan, unseen, experiment.level(c)).energy == ours.energy
  # The test split's NH3 has N, which no train molecule has: the model's N embedding is as
  # initialised (water's model put ethanol 2.3 Ha above its SCF). predict and tools/scf.py refuse
  # it; bare parameters predict it anyway, and a checkpoint without config.json cannot tell.
  assert trained.trained_on == experiment.sources(c, str(tmp_path)).trained_on
  assert trained.trained_on == run_config.TrainedOn((1, 6, 8), (0,))
  ammonia = split["test"][0]
  assert ammonia.symbols[0] == "N"
  with pytest.raises(qpt.InputError, match=r"qm9 never trained on N \(its molecules had H, C, O\)"):
    qpt.predict(trained, ammonia)
  xyz.write_text(ammonia.xyz_text())
  with pytest.raises(qpt.InputError, match="never trained on N"):
    scf.run(scf.parse_args(["--xyz", str(xyz), "--init-from", str(tmp_path / "qm9")]))
  qpt.predict(trained.params, ammonia, experiment.level(c))
  assert orphan.trained_on is None and qpt.predict(orphan, ammonia, experiment.level(c))
  # So is a charge no train molecule had (water's model put H₃O⁺ 46 mHa above its SCF).
  methanol = next(m for m in split["train"] if m.name == "dsgdb9nsd_000008")
  protonated = qpt.Molecule.from_bohr(np.append(methanol.atomic_numbers, 1),
                                      np.vstack([methanol.positions, [[0.0, 0.0, -3.0]]]),
                                      charge=1)
  with pytest.raises(qpt.InputError, match=r"never trained on a molecule of charge \+1 \(its "
                                           r"molecules had charge 0\)"):
    qpt.predict(trained, protonated)
  # tools/benchmark.py transfer: water (left out of the set) fine-tuned from it and from scratch,
  # at the pre-trained run's level and model; fine-tuning starts from its parameters with a fresh
  # optimizer (warm-up from 0: step 1 moves nothing), the target is scratch's final MAE.
  from tools.bench import transfer
  # Each route as experiment.train runs it, not from cold (what the benchmark times): the cold
  # start cleared every compiled program of this process and compiled the same step twice.
  monkeypatch.setattr(transfer, "_train_cold", lambda c: experiment.train(c, progress=False))
  args = argparse.Namespace(pretrained=str(tmp_path / "qm9"), molecule="water", steps=1,
                            eval_every=1, held_out=2, workers=0, learning_rate=0.0,
                            workdir=str(tmp_path / "transfer"))
  scratch, tuned = transfer.transfer_run(args)
  tuned_config = run_config.saved(tmp_path / "transfer" / "water_finetuned")
  assert (tuned_config.basis, tuned_config.xc, tuned_config.model.size) == (c.basis, c.xc,
                                                                            c.model.size)
  source = saved_state(tmp_path / "qm9", 2)
  tuned_state = saved_state(tmp_path / "transfer" / "water_finetuned", 1)
  for a, b in zip(jax.tree.leaves(source["params"]), jax.tree.leaves(tuned_state["params"])):
    np.testing.assert_array_equal(a, b)
  adam = lambda s: next(x for x in jax.tree.leaves(s["opt_state"]) if np.ndim(x) == 0)  # its count
  assert int(adam(source)) == 2 and int(adam(tuned_state)) == int(tuned_state["step"]) == 1
  assert [r["step"] for r in records(tmp_path / "transfer" / "water_finetuned")] == [1]
  last_mae = {route: records(tmp_path / "transfer" / f"water_{route}")[-1]["val_energy_mae_uha"]
              for route in ("scratch", "finetuned")}
  assert scratch["target_energy_mae_uha"] == tuned["target_energy_mae_uha"] == last_mae["scratch"]
  assert scratch["reached"] and scratch["step"] == 1 and scratch["pretrain_seconds"] == 0
  assert tuned["reached"] == (last_mae["finetuned"] <= last_mae["scratch"])
  assert tuned["pretrain_seconds"] == records(tmp_path / "qm9")[-1]["seconds"] > 0
  # Fine-tuned on water (H, O), the model has still trained on the pre-training's C.
  assert qpt.load_model(str(tmp_path / "transfer" / "water_finetuned")).trained_on.elements == (
      1, 6, 8)
  assert qpt.load_model(str(tmp_path / "transfer" / "water_scratch")).trained_on.elements == (1, 8)


def test_the_qm9_configs_do_not_inherit_waters_own_tuning():
  """qm9.py starts from md17.py's config for no built-in molecule, not water's: water's checkpoint
  interval is its own (and on 2026-12-03 water's level-0 training grid leaked into the CPU default
  for an afternoon unnoticed). A molecule set checkpoints as the other molecules do; its grid is
  theirs unless qm9.py sets it itself, as the CPU default does (level 0, on purpose)."""
  from experiments.configs import qm9
  general, water = md17.get_config("ethanol"), md17.get_config("water")
  for size in ("cpu", "accelerator"):
    c = qm9.get_config(size)
    assert c.checkpoint.every == general.checkpoint.every != water.checkpoint.every
  assert qm9.get_config("accelerator").data.grid_level == general.data.grid_level


def test_molecule_set_config_errors_name_the_field(tmp_path):
  c = qm9_config(tmp_path, 1)
  c.data.max_electrons = 8
  with pytest.raises(qpt.InputError, match="no molecule within max_electrons=8"):
    experiment.sources(c, str(tmp_path))
  c.data.max_electrons, c.data.max_heavy_atoms = 0, 1  # CH4, NH3 (H2O is a built-in)
  with pytest.raises(qpt.InputError, match="2 molecules cannot be split"):
    experiment.sources(c, str(tmp_path))
  c.data.max_heavy_atoms, c.eval.n_conformers = 0, 6
  with pytest.raises(qpt.InputError, match=r"6 test conformers; the test split has 2 molecules"):
    experiment.sources(c, str(tmp_path))
  c.eval.n_conformers, c.data.split_fractions = 4, (0.5, 0.5)
  with pytest.raises(qpt.InputError, match="split fractions"):
    experiment.sources(c, str(tmp_path))
  c.data.split_fractions, c.data.md17_file = (0.5, 0.25, 0.25), "x.npz"
  with pytest.raises(qpt.InputError, match="data.md17_file and data.molecule_set"):
    run_config.check(c)
