"""Evaluation: metrics are ~0 for the exact answer, the baseline is H_init's, and problems must
match their labels."""

import functools

import jax
import pytest
from pyscf import lib

import qpt
from qpt import evaluate
from tests.pyscf_reference import padded
from tests.water_labels import BASIS, GRID_LEVEL, XC, problems, reference

ITERATIONS = 1


@pytest.fixture(autouse=True, scope="module")
def one_pyscf_thread():
  """PySCF on one thread: these problems are tiny, and OpenMP threads spinning against XLA's (and
  other jobs') cost ~10× on 2 cores."""
  with lib.with_omp_threads(1):
    yield


@functools.cache
def exact_metrics() -> dict:
  """Metrics of the PySCF Fock matrix itself as the prediction, with the MINAO baseline."""
  by_problem = {id(p): padded(f, p.overlap.shape[0]) for p, f in zip(problems(), reference().fock)}
  return evaluate.evaluate(lambda p: by_problem[id(p)], problems(), reference(), iterations=ITERATIONS)


def test_the_reference_fock_matrix_scores_as_exact():
  m = exact_metrics()
  assert m["n_conformers"] == 2
  assert m["h_mae_uha"] < 1.0  # the label itself, rounded to float32
  for key in ("h_mae_fock_uha", "h_mae_after_k_uha", "eps_occ_mae_uha", "gap_mae_uha"):
    assert m[key] < 20.0, key  # one float32 Fock build from the label density
  assert m["energy_mae_uha"] < 50.0 and m["energy_after_k_mae_uha"] < 50.0
  assert m["energy_mae_mev"] == pytest.approx(m["energy_mae_uha"] * 1e-6 * 27211.386, rel=1e-4)
  assert m["psi_cos_percent"] > 99.999
  assert m["psi_subspace_percent"] == pytest.approx(100.0, abs=1e-3)
  assert m["scf_cycle_ratio"] < 0.6  # PySCF restarted at its own solution only checks it


def test_h_init_scores_as_the_minao_baseline():
  exact = exact_metrics()
  baseline = evaluate.evaluate(evaluate.h_init, problems(), reference(),
                         iterations=ITERATIONS, baseline=False, scf_cycles=False)
  for key, value in baseline.items():
    if key != "n_conformers":
      assert value == pytest.approx(exact[key + "_minao"], rel=1e-6), key
  # The baseline is far from the answer, and its SCF start is PySCF's own MINAO guess.
  assert exact["energy_mae_uha_minao"] > 1e3 and exact["psi_subspace_percent_minao"] < 99.99
  assert exact["scf_cycle_ratio_minao"] == pytest.approx(1.0, abs=0.2)


def test_unrolled_steps_are_the_losses():
  p = problems()[0]
  h = evaluate.h_init(p)
  mixing = (0.5, 0.0)
  energy, loss = jax.jit(lambda p, h: (qpt.dft.delta_energy(p, qpt.dft.unrolled_density(p, h, 2, mixing)),
                                       qpt.dft.loss_energy_delta(p, h, 2, mixing)))(p, h)
  # The loss may add float32 rounding corrections (µHa); a wrong step or mixing costs mHa.
  assert float(energy) == pytest.approx(float(loss), abs=2e-5)
  with pytest.raises(qpt.InputError, match="mixing"):
    evaluate.evaluate(lambda p: h, problems(), reference(), iterations=3, mixing=(0.5, 0.0))


def test_problems_in_another_frame_are_refused():
  lab = [qpt.build_problem(qpt.molecules.get("water"), BASIS, XC, GRID_LEVEL)] * 2
  with pytest.raises(qpt.InputError, match="differs from the label"):
    evaluate.evaluate(lambda p: None, lab, reference())
