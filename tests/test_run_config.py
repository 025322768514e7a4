"""Configs: loaded as --config loads them, recorded in config.json and read back whole."""

import os

import pytest

import qpt
from experiments.configs import md17
from qpt import experiment, run_config
from tests.processes import ROOT

CONFIG_FILE = os.path.join(ROOT, "experiments", "configs", "md17.py")


def test_a_config_file_loads_with_its_argument():
  ethanol = run_config.load(f"{CONFIG_FILE}:ethanol")
  assert ethanol.to_dict() == md17.get_config("ethanol").to_dict()
  assert run_config.load(CONFIG_FILE).molecule == "water"
  with pytest.raises(qpt.InputError, match="no such config file"):
    run_config.load("experiments/configs/nothing.py:water")


def test_a_recorded_config_reads_back_as_the_run_had_it(tmp_path):
  config = md17.get_config("uracil")
  config.data.md17_split.test = 7
  config.data.pad_to = (8, 4096, 16, 4)
  run_config.record(str(tmp_path), config, "cpu: 1 device", run_config.TrainedOn((1, 6, 8), (0,)))
  saved = run_config.saved(str(tmp_path))
  assert run_config.flatten(saved.to_dict()) == run_config.flatten(config.to_dict())
  assert experiment.level(saved) == experiment.level(config)
  assert run_config.trained_on(str(tmp_path)) == run_config.TrainedOn((1, 6, 8), (0,))


def test_what_a_model_trained_on_adds_up_and_unknown_stays_unknown(tmp_path):
  """A run records its molecules' elements and charges with those of the run it resumes; a
  config.json written before QPT recorded them says nothing, and then neither does a run that
  builds on it."""
  config = md17.get_config("ethanol")
  ethanol = experiment.sources(config, str(tmp_path)).trained_on
  assert ethanol == run_config.TrainedOn.of([qpt.molecules.get("ethanol")])
  assert ethanol == run_config.TrainedOn((1, 6, 8), (0,))
  cation = run_config.TrainedOn((1, 8), (1,))  # say, H₃O⁺
  run_config.record(str(tmp_path), md17.get_config("water"), "cpu: 1 device", cation)
  sources = experiment.Sources(None, None, None, trained_on=ethanol)
  assert experiment._trained_on(config, str(tmp_path), sources, resuming=False) == ethanol
  assert experiment._trained_on(config, str(tmp_path), sources, resuming=True) == (
      run_config.TrainedOn((1, 6, 8), (0, 1)))
  run_config.record(str(tmp_path), config, "cpu: 1 device", None)  # as before the record existed
  assert run_config.trained_on(str(tmp_path)) is None
  assert experiment._trained_on(config, str(tmp_path), sources, resuming=True) is None


def test_evaluating_at_another_basis_or_functional_than_trained_is_refused(tmp_path):
  """Water's def2-SVP model scored in STO-3G: 4,470 µHa instead of 1.3, into its eval.json."""
  run_config.record(str(tmp_path), md17.get_config("water"), "cpu: 1 device", None)
  wanted = md17.get_config("water")
  wanted.basis, wanted.grid_level, wanted.eri = "DEF2-SVP", 1, "df"  # the same basis; may differ
  run_config.check_level_matches(str(tmp_path), run_config.flatten(wanted.to_dict()))
  wanted.basis = "sto-3g"
  with pytest.raises(qpt.InputError, match=r"trained its model for basis='def2-svp', not "
                                           r"basis='sto-3g': pass --config.basis=def2-svp"):
    run_config.check_level_matches(str(tmp_path), run_config.flatten(wanted.to_dict()))


@pytest.mark.parametrize("field, value, message", [
    ("learning_rate", float("nan"), "train.learning_rate=nan: must be a positive finite number"),
    ("learning_rate", -1e-3, "train.learning_rate=-0.001: must be a positive"),
    ("warmup_steps", -2, "train.warmup_steps=-2: must be ≥ 0"),
    ("hold_fraction", 1.0, "train.hold_fraction=1.0: must be ≥ 0 and < 1"),
    ("weight_decay", -1.0, "train.weight_decay=-1.0: must be a finite number ≥ 0"),
    ("clip_norm", 0.0, "train.clip_norm=0.0: must be > 0")])
def test_an_optimizer_field_that_cannot_train_is_named(field, value, message):
  """Before anything is built: these trained on silently (NaN parameters, or a run that climbs)."""
  config = md17.get_config("water")
  config.train[field] = value
  with pytest.raises(qpt.InputError, match=message.replace(".", r"\.").replace("+", r"\+")):
    run_config.check(config)
  config.train[field] = md17.get_config("water").train[field]
  run_config.check(config)  # the default passes


@pytest.mark.parametrize("key, value, message", [
    ("eval.every", -5, "eval.every=-5: must be at least 0"),
    ("eval.n_conformers", -2, "eval.n_conformers=-2: must be at least 0"),
    ("eval.n_validation", -1, "eval.n_validation=-1: must be at least 0"),
    ("iterations", -1, "iterations=-1: must be a whole number ≥ 0"),
    # stopped after the first step with "0 non-finite steps in a row"
    ("train.max_bad_steps", 0, "train.max_bad_steps=0: must be at least 1"),
    ("data.split_seed", -1, "data.split_seed=-1: must be at least 0"),
    ("data.max_n_ao", -3, "data.max_n_ao=-3: must be at least 0")])
def test_a_negative_count_is_named(key, value, message):
  config = md17.get_config("water")
  section, _, field = key.rpartition(".")
  (config[section] if section else config)[field] = value
  with pytest.raises(qpt.InputError, match=message):
    run_config.check(config)


def test_the_final_evaluations_settings_may_change_on_resumption():
  """They change nothing training computes: a run trained with eval.hot_temperature=0 that then
  wanted its 1000 K set scored was sent to another workdir, to train again from scratch."""
  saved = run_config.flatten(md17.get_config("water").to_dict())
  saved.update({"eval.hot_temperature": 0.0, "eval.refine_steps": 2})
  wanted = {**saved, "eval.hot_temperature": 1000.0, "eval.refine_steps": 0}
  run_config.check_resumable(saved, wanted)
  with pytest.raises(qpt.InputError, match="data.temperature=500.0, this config has 1000.0"):
    run_config.check_resumable(saved, {**wanted, "data.temperature": 1000.0})
