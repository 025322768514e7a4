"""The level of theory: validated once, one line per mistake, normalised, the same whether given as
a Level or field by field."""

import numpy as np
import pytest

import qpt
from qpt.level import Level


def test_names_are_normalised_and_defaults_are_the_papers_level():
  assert Level() == Level("def2-svp", "b3lyp5", 3, "dense", "float32")
  assert Level(" Def2-SVP ", "PBE,PBE").basis == "def2-svp"
  assert Level(xc="SVWN").xc == "lda,vwn"
  assert str(Level()) == "b3lyp5/def2-svp, grid 3, eri=dense, float32"


@pytest.mark.parametrize("fields, words", [
    (dict(xc="m06"), "unknown XC functional 'm06'"),
    (dict(eri="ri"), "eri='ri'"),
    (dict(dtype="bfloat16"), "dtype='bfloat16'"),
    (dict(grid_level=10), "grid_level=10"),
    (dict(grid_level=2.5), "grid_level=2.5"),
    (dict(basis=""), "basis=''"),
])
def test_bad_fields_are_one_line_input_errors(fields, words):
  with pytest.raises(qpt.InputError, match=words) as error:
    Level(**fields)
  assert "\n" not in str(error.value)


def test_same_theory_ignores_only_the_precision():
  assert Level(dtype="float64").same_theory(Level())
  assert not Level(grid_level=2).same_theory(Level())
  assert Level().with_dtype("float64").dtype == "float64"


def test_a_level_and_its_fields_build_the_same_problem():
  water = qpt.molecules.get("water")
  level = Level("sto-3g", "lda,vwn", 0)
  by_fields = qpt.build_problem(water, basis="sto-3g", xc="lda,vwn", grid_level=0)
  for problem in (qpt.build_problem(water, level), qpt.build_problem(water, level=level)):
    assert problem.level == by_fields.level == level
    np.testing.assert_array_equal(problem.ao_orth, by_fields.ao_orth)
  with pytest.raises(qpt.InputError, match="not both"):
    qpt.build_problem(water, level, xc="pbe")


def test_float64_needs_float64_switched_on_first():
  from qpt import backends
  water = qpt.molecules.get("water")
  with backends.device_dtype("float32"):
    with pytest.raises(qpt.InputError, match="enable_float64"):
      qpt.build_problem(water, basis="sto-3g", grid_level=0, dtype="float64")
  assert qpt.build_problem(water, basis="sto-3g", grid_level=0, dtype="float64").dtype == np.float64


def test_the_training_stream_may_use_its_own_grid():
  from experiments.configs import md17
  config = md17.get_config("water")
  config.data.grid_level = -1
  assert Level.from_config(config, stream=True) == Level.from_config(config)  # −1: the same grid
  config.data.grid_level = 1
  assert Level.from_config(config, stream=True) == Level(grid_level=1)
  assert Level.from_config(config).grid_level == 3  # evaluation stays on the run's grid
  config.grid_level = 0
  assert Level.from_config(config, stream=True).grid_level == 0  # never finer than evaluation's
  config.data.grid_level = 12
  with pytest.raises(qpt.InputError, match="data.grid_level=12"):
    Level.from_config(config, stream=True)


def test_the_training_stream_may_use_its_own_repulsion_integrals():
  from experiments.configs import md17
  config = md17.get_config("water")
  assert Level.from_config(config, stream=True).eri == config.eri == "dense"  # "": the run's
  config.data.eri = "df"
  assert Level.from_config(config, stream=True).eri == "df"
  assert Level.from_config(config).eri == "dense"  # evaluation keeps the run's integrals
  config.data.eri = "exact"
  with pytest.raises(qpt.InputError, match="data.eri='exact'"):
    Level.from_config(config, stream=True)
