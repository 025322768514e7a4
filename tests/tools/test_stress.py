"""tools/stress.py: finite losses and gradients on distorted, near-degenerate cases; its report
replays; non-finite or refused cases set the exit code."""

import json

import jax.numpy as jnp
import pytest

import qpt
from tests.processes import load_tool

ARGS = ["--molecule", "water", "--n", "16", "--basis", "sto-3g", "--grid-level", "0"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  out = tmp_path_factory.mktemp("stress") / "report.json"
  assert load_tool("stress").main(ARGS + ["--out", str(out)]) == 0
  with open(out) as f:
    return json.load(f)


def test_every_case_is_finite_and_the_sweep_covers_distortions_and_small_gaps(report, capsys):
  assert report["non_finite"] == 0 and report["refused"] == 0 and len(report["cases"]) == 16
  assert all(c["finite"] for c in report["cases"])
  scales = [c["scale"] for c in report["cases"]]
  assert min(scales) == 0.75 and max(scales) == 1.6 and scales.count(1.0) >= 2
  small = [c for c in report["cases"] if c["gap_ha"] < 0.1]
  assert len(small) >= 0.05 * len(report["cases"])
  assert min(c["gap_ha"] for c in small) < 0.01


def test_a_case_replays_from_the_report(report):
  tool = load_tool("stress")
  case = next(c for c in report["cases"] if c["gap_ha"] < 0.1)
  molecule = qpt.Molecule(case["symbols"], case["positions_angstrom"])
  replayed = tool.run_case(molecule, qpt.Level("sto-3g", "b3lyp5", 0), 0, 1.0,
                           case["gap_ha"])
  assert replayed["loss"] == pytest.approx(case["loss"], abs=1e-5)
  assert replayed["gap_ha"] == pytest.approx(case["gap_ha"], abs=1e-9)


def test_non_finite_or_refused_cases_fail_the_sweep(monkeypatch, capsys):
  tool = load_tool("stress")
  real = tool.loss_and_gradient(0)
  calls = []

  def poisoned(iterations):
    def fn(problem, h):
      calls.append(1)
      value, grad = real(problem, h)
      return (jnp.nan if len(calls) == 3 else value), grad
    return fn

  monkeypatch.setattr(tool, "loss_and_gradient", poisoned)
  assert tool.main(ARGS[:3] + ["8"] + ARGS[4:]) == 1
  assert capsys.readouterr().out.splitlines()[-1] == "8 conformers: 1 non-finite, 0 refused"
  tool = load_tool("stress")
  build, built = qpt.build_problem, []

  def refusing(molecule, *args, **kwargs):
    built.append(1)
    if len(built) == 5:  # one case in 8: more than 1 %
      raise qpt.InputError("refused for the test")
    return build(molecule, *args, **kwargs)

  monkeypatch.setattr(qpt, "build_problem", refusing)
  assert tool.main(ARGS[:3] + ["8"] + ARGS[4:]) == 1
  assert capsys.readouterr().out.splitlines()[-1] == "8 conformers: 0 non-finite, 1 refused"


def test_bad_arguments_are_one_line(capsys):
  assert load_tool("stress").main(["--molecule", "caffeine", "--n", "3"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "caffeine" in err[0]
  # An --out that cannot be written is refused before the sweep (it was a FileNotFoundError
  # after every case had run).
  assert load_tool("stress").main(ARGS + ["--out", "/nonexistent-dir/report.json"]) == 2
  assert capsys.readouterr().err.strip() == ("stress.py: error: /nonexistent-dir/report.json: "
                                             "cannot write there (/nonexistent-dir is not a "
                                             "writable directory)")
