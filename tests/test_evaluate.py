"""Evaluation: every metric, of a model's H and of the MINAO baseline, is what a float64 host
computation with PySCF gives; problems must match their labels."""

import functools

import jax
import numpy as np
import pytest
import scipy.linalg
from pyscf import lib

import qpt
from qpt import evaluate
from tests.pyscf_reference import padded
from tests.water_labels import BASIS, GRID_LEVEL, XC, host_rks, host_scores, problems, reference


@pytest.fixture(autouse=True, scope="module")
def one_pyscf_thread():
  """PySCF on one thread: these problems are tiny, and OpenMP threads spinning against XLA's (and
  other jobs') cost ~10× on 2 cores."""
  with lib.with_omp_threads(1):
    yield


MIXING = (0.5, 0.0)  # two unrolled steps, the first mixed: as the loss's k = 2
KEYS = ("h_mae", "h_mae_fock", "h_mae_after_k", "eps_occ_mae", "eps_all_mae", "eps_occ_raw_mae",
        "energy_mae", "energy_after_k_mae", "gap_mae")
REFINE = 2


def perturbed_hamiltonians() -> list[np.ndarray]:
  """The PySCF Fock matrices plus a random symmetric 20 mHa perturbation: F[D(H)] ≠ H, so every
  orbital metric tells whether it was taken from H or from F[D(H)]."""
  rng = np.random.default_rng(0)
  out = []
  for f in reference().fock:
    delta = rng.normal(0.0, 0.02, f.shape)
    out.append(f + 0.5 * (delta + delta.T))
  return out


def assert_scores(metrics: dict, hamiltonians: list[np.ndarray], suffix: str = ""):
  """`evaluate`'s means against the float64 host references of `water_labels.host_scores`."""
  expected = [host_scores(i, h, MIXING) for i, h in enumerate(hamiltonians)]
  mean = lambda key: float(np.mean([e[key] for e in expected]))
  for key in KEYS:  # float32 on the device against float64 on the host: a few µHa
    assert metrics[f"{key}_uha{suffix}"] == pytest.approx(1e6 * mean(key), rel=1e-3, abs=5.0), key
  assert metrics[f"psi_cos_percent{suffix}"] == pytest.approx(100 * mean("psi_cos"), abs=1e-4)
  assert metrics[f"energy_mae_mev{suffix}"] == pytest.approx(
      metrics[f"energy_mae_uha{suffix}"] * 1e-6 * 27211.386, rel=1e-4)


@functools.cache
def scored() -> tuple[dict, list[np.ndarray]]:
  """`evaluate` of the perturbed Hamiltonians, with the MINAO baseline and PySCF's cycles."""
  hamiltonians = perturbed_hamiltonians()
  by_problem = {id(p): padded(h, p.overlap.shape[0]) for p, h in zip(problems(), hamiltonians)}
  metrics = evaluate.evaluate(lambda p: by_problem[id(p)], problems(), reference(),
                              iterations=len(MIXING), mixing=MIXING, refine_steps=REFINE)
  return metrics, hamiltonians


def test_metrics_of_a_perturbed_hamiltonian_are_the_float64_host_values():
  metrics, hamiltonians = scored()
  assert metrics["n_conformers"] == 2
  assert_scores(metrics, hamiltonians)
  # ε of H itself is far off what F[D(H)] gives: the raw and the F[D(H)] keys are told apart.
  assert abs(metrics["eps_occ_raw_mae_uha"] - metrics["eps_occ_mae_uha"]) > 1000


def test_refinement_steps_move_every_start_towards_pyscfs_scf():
  """n = 2 DIIS steps on the device from D(H): closer to PySCF's converged energy and orbital
  energies than D(H) itself, for the perturbed H and for MINAO (measured: the perturbed H's
  occupied ε 13.4 → 7.8 mHa); timed against a PySCF SCF. Convergence itself: test_dft."""
  metrics, _ = scored()
  assert metrics["refine_steps"] == REFINE
  for suffix in ("", "_minao"):
    for key in ("energy_mae_uha", "eps_occ_mae_uha", "eps_all_mae_uha"):
      assert metrics[f"{key}_refined{suffix}"] < 0.8 * metrics[f"{key}{suffix}"], (key, suffix)
  assert 0.0 < metrics["refine_time_ratio"] < 10.0


def test_the_minao_baseline_is_the_float64_host_value_of_h_init():
  """H_init = F[D_MINAO] computed by PySCF itself, scored on the host: what the `_minao` keys say."""
  h_init = []
  for i in range(len(reference())):
    mf = host_rks(i)
    h_init.append(mf.get_fock(dm=mf.get_init_guess(key="minao")))
  metrics, _ = scored()
  assert_scores(metrics, h_init, suffix="_minao")
  # The baseline's PySCF run is the labels' own (test_labels checks the identity).
  assert metrics["scf_cycle_ratio_minao"] == 1.0 and metrics["scf_unconverged_minao"] == 0
  assert metrics["scf_cycle_ratio_per_conformer_minao"] == 1.0
  # The totals behind the ratios: MINAO's are the labels' own cycles.
  assert metrics["scf_cycles_minao"] == int(np.sum(reference().cycles))
  assert metrics["scf_cycles"] == pytest.approx(metrics["scf_cycle_ratio"]
                                                * metrics["scf_cycles_minao"])


def test_unrolled_steps_are_a_float64_host_loop():
  """E[D_k] of the loss and the unrolled density against the loop written out on the host:
  D_0 = D(H), D_1 = ½ D(F[D_0]) + ½ D_0, D_2 = D(F[D_1]) (the last step never mixes)."""
  p = problems()[0]
  h = np.asarray(evaluate.h_init(p), np.float64)
  loss = jax.jit(qpt.dft.loss_energy_delta, static_argnums=(2, 3))(p, h, 2, MIXING)
  density = jax.jit(qpt.dft.unrolled_density, static_argnums=(2, 3))(p, h, 2, MIXING)
  expected = host_scores(0, h[:7, :7], MIXING)["energy"]
  # float32 on the device; a wrong step or mixing costs milli-Hartrees.
  assert qpt.dft.reference_energy(p) + float(loss) == pytest.approx(expected, abs=2e-5)
  assert host_rks(0).energy_tot(dm=np.asarray(density, np.float64)[:7, :7]) == pytest.approx(
      expected, abs=2e-5)
  assert abs(host_scores(0, h[:7, :7], (0.0, 0.0))["energy"] - expected) > 1e-4
  with pytest.raises(qpt.InputError, match="mixing"):
    evaluate.evaluate(lambda p: h, problems(), reference(), iterations=3, mixing=MIXING)


def test_problems_in_another_frame_are_refused():
  lab = [qpt.build_problem(qpt.molecules.get("water"), BASIS, XC, GRID_LEVEL)] * 2
  with pytest.raises(qpt.InputError, match="differs from the label"):
    evaluate.evaluate(lambda p: None, lab, reference())
