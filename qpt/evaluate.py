"""Scoring predicted Hamiltonians against PySCF labels, with the field's metrics.

  problem ──predict_h──▶ H ──▶ ε_raw = eig(H, S)
                          └──▶ D(H) ──▶ F[D(H)] ──▶ ε, C, gap
                                 ├──▶ E[D(H)];  D_k after the loss's k steps ──▶ F[D_k], E[D_k]
                                 ├──▶ n refinement SCF steps on the device ──▶ ε, E "refined"
                                 └──▶ PySCF restarted from dm0 = D(H): cycles

Three products of a model are scored, and each key says which:
  raw H          h_mae_uha, eps_occ_raw_mae_uha — H itself, as supervised models (QHNet) report;
  F[D(H)]        h_mae_fock_uha, eps_occ_mae_uha, eps_all_mae_uha, psi_*, gap_mae_uha,
                 energy_mae_uha (E[D(H)]) — the model plus one Fock build;
  refined        *_refined — after `refine_steps` DIIS SCF steps on the device from D(H)
                 (`dft.refine`), at refine_time_ratio of PySCF's full SCF: ε of the DIIS
                 estimate of the self-consistent F, E of the last density.
`eps_occ_*` covers the occupied orbitals, `eps_all_*` every orbital (the paper's convention).

Labels come from `qpt.labels` (PySCF, float64); this module only scores.

Why orbital metrics come from F[D(H)] and not from H itself: the energy loss sees H only through the
occupied projector D(H), so every H with the right occupied subspace is a perfect answer — its
virtual block and its eigenvalues are free. F[D(H)], the Kohn–Sham Fock matrix of the predicted
density, is what the loss actually pins down. The raw-H error (h_mae_uha) is still reported, for
comparison with supervised models (QHNet, QH9) that fit H entry by entry.

Units follow QHNet/QH9: Hamiltonian and orbital-energy errors in µHa (1e-6 Hartree), orbital
similarity in percent; energies in µHa and meV. Every total energy is assembled in float64 on the
host (`reference_energy(problem) + ΔE`).
"""

from __future__ import annotations

import functools
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from pyscf.data.nist import HARTREE2EV

from qpt import dft
from qpt.build import build_problem, grow_alike
from qpt.errors import InputError
from qpt.labels import Labels, restart_cycles, scf_seconds
from qpt.problem import DFTProblem, reference_energy

UHA = 1e6  # µHa per Hartree
MEV = 1e3 * HARTREE2EV  # meV per Hartree
PYSCF_TIMINGS = 3  # conformers whose full PySCF SCF is timed for refine_time_ratio


MEANING = {  # stored in eval.json beside the numbers: which product of the model each key scores
    "h_mae_uha": "raw H: MAE of the predicted H against PySCF's converged Fock matrix (µHa)",
    "eps_occ_raw_mae_uha": "raw H: occupied orbital energies of eig(H, S) against PySCF's (µHa)",
    "h_mae_fock_uha": "F[D(H)] (model + one Fock build): MAE against PySCF's Fock matrix (µHa)",
    "eps_occ_mae_uha": "F[D(H)] (model + one Fock build): occupied orbital energies (µHa)",
    "eps_all_mae_uha": "F[D(H)] (model + one Fock build): all orbital energies, the paper's (µHa)",
    "energy_mae_uha": "E[D(H)]: the energy of the predicted density against PySCF's SCF (µHa)",
    "energy_after_k_mae_uha": "E[D_k] after the loss's k unrolled steps (µHa)",
    "scf_cycle_ratio": "PySCF cycles from D(H) over cycles from MINAO, ratio of the totals",
    "scf_cycle_ratio_per_conformer": "the same, mean of per-conformer ratios (QH9's definition)",
    "scf_cycles": "PySCF cycles from D(H), summed over the conformers (the ratios' whole units)",
    "refine_steps": "n: DIIS SCF steps on the device from D(H) before the *_refined scores",
    "eps_occ_mae_uha_refined": "after n refinement steps: occupied orbital energies (µHa)",
    "eps_all_mae_uha_refined": "after n refinement steps: all orbital energies (µHa)",
    "energy_mae_uha_refined": "after n refinement steps: energy (µHa)",
    "refine_time_ratio": ("device time of the n steps over PySCF's full SCF from MINAO (setup "
                          "incl.); a molecule set: the mean over its first "
                          f"{PYSCF_TIMINGS} molecules"),
    "*_minao": "the same for the no-model start H_init = F[D_MINAO]",
}


def problems_for(labels: Labels, dtype: str = "float32", **kwargs) -> list[DFTProblem]:
  """The labelled conformers as DFTProblems at the labels' level of theory, padded alike.

  One padded shape (the largest bucket among them) means one compiled program for all conformers.
  `kwargs` go to `build_problem` (e.g. xc_chunk).
  """
  level = labels.level.with_dtype(dtype)
  return grow_alike([build_problem(m, level, **kwargs) for m in labels.molecules()])


@functools.partial(jax.jit, static_argnums=2)  # one program per padded shape and schedule
def _device_outputs(problem: DFTProblem, h: jax.Array, mixing: tuple[float, ...]) -> dict:
  """What the metrics need from the device: D(H), F[D(H)], ΔE[D(H)], F[D_k], ΔE[D_k].

  Energies come from the loss itself, so they are the numbers training reports (with its float32
  corrections); XLA shares the eigensolves and Fock builds with the matrices' path.
  """
  d = dft.density_matrix(problem, h)
  d_k = dft.unrolled_density(problem, h, len(mixing), mixing)
  return dict(density=d, fock=dft.fock(problem, d), delta=dft.loss_energy_delta(problem, h),
              fock_k=dft.fock(problem, d_k),
              delta_k=dft.loss_energy_delta(problem, h, len(mixing), mixing))


@jax.jit
def h_init(problem: DFTProblem) -> jax.Array:
  """The no-model baseline H_init = F[D_MINAO] (n, n) Hartree, padded: the untrained QPT's H."""
  return dft.initial_fock(problem)


def _conformer_scores(problem: DFTProblem, labels: Labels, i: int, h: jax.Array,
                      mixing: tuple[float, ...]) -> tuple[dict[str, float], np.ndarray]:
  """Per-conformer errors in Hartree (or fractions), and D(H) unpadded float64 for PySCF."""
  out = jax.device_get(_device_outputs(problem, jnp.asarray(h, problem.dtype), mixing))
  n = labels.fock.shape[-1]
  real = lambda m: np.asarray(m, np.float64)[:n, :n]
  f_ref, eps_ref, c_ref = labels.fock[i], labels.mo_energy[i], labels.mo_coeff[i]
  o = int(np.sum(labels.mo_occ[i] > 0))
  s = real(problem.overlap)
  # Host float64 eigensolver: the metric should not carry the device's float32 eigenvector noise.
  eps, c = scipy.linalg.eigh(real(out["fock"]), s)
  eps_raw = scipy.linalg.eigvalsh(0.5 * (real(h) + real(h).T), s)
  c_occ, c_ref_occ = c[:, :o], c_ref[:, :o]
  cosine = np.abs(np.sum(c_occ * c_ref_occ, axis=0)) / (
      np.linalg.norm(c_occ, axis=0) * np.linalg.norm(c_ref_occ, axis=0))
  energy = reference_energy(problem) + float(out["delta"])
  energy_k = reference_energy(problem) + float(out["delta_k"])
  scores = dict(  # Hartree, except the two similarities (fractions)
      h_mae=np.mean(np.abs(real(h) - f_ref)),
      h_mae_fock=np.mean(np.abs(real(out["fock"]) - f_ref)),
      h_mae_after_k=np.mean(np.abs(real(out["fock_k"]) - f_ref)),
      eps_occ_mae=np.mean(np.abs(eps[:o] - eps_ref[:o])),
      eps_all_mae=np.mean(np.abs(eps - eps_ref)),
      eps_occ_raw_mae=np.mean(np.abs(eps_raw[:o] - eps_ref[:o])),
      energy_mae=abs(energy - labels.energy[i]),
      energy_after_k_mae=abs(energy_k - labels.energy[i]),
      gap_mae=abs((eps[o] - eps[o - 1]) - (eps_ref[o] - eps_ref[o - 1])),
      psi_cos=np.mean(cosine),
      psi_subspace=np.sum((c_ref_occ.T @ s @ c_occ) ** 2) / o,
  )
  return scores, real(out["density"])


def _refined_scores(problem: DFTProblem, labels: Labels, i: int, h: jax.Array,
                    steps: int) -> tuple[dict[str, float], float]:
  """Errors (Hartree) after `steps` on-device SCF steps from D(H), and their wall time (s)."""
  start = time.perf_counter()
  refined = dft.refine(problem, h, steps)  # H′ = XᵀHX rounds H to the problem's dtype
  seconds = time.perf_counter() - start
  o = int(np.sum(labels.mo_occ[i] > 0))
  eps_ref = labels.mo_energy[i]
  return dict(eps_occ_mae_refined=np.mean(np.abs(refined.mo_energy[:o] - eps_ref[:o])),
              eps_all_mae_refined=np.mean(np.abs(refined.mo_energy - eps_ref)),
              energy_mae_refined=abs(refined.energy - labels.energy[i])), seconds


def _in_units(key: str) -> str:
  """A score's key in eval.json: energy_mae → energy_mae_uha, energy_mae_refined →
  energy_mae_uha_refined (today's keys keep their names; refined ones append a suffix)."""
  base, refined = (key[:-len("_refined")], "_refined") if key.endswith("_refined") else (key, "")
  return f"{base}_uha{refined}"


def _summary(scores: list[dict[str, float]], cycles: list | None, labels: Labels,
             suffix: str) -> dict[str, float]:
  """Means over conformers in the field's units, with `suffix` appended to every key."""
  mean = lambda key: float(np.mean([s[key] for s in scores]))
  out = {_in_units(k): UHA * mean(k) for k in scores[0] if "_mae" in k}
  out.update(psi_cos_percent=100 * mean("psi_cos"), psi_subspace_percent=100 * mean("psi_subspace"),
             energy_mae_mev=MEV * mean("energy_mae"))
  if cycles is not None:  # (cycles, converged) per conformer
    out["scf_cycle_ratio"] = float(np.mean([c for c, _ in cycles]) / np.mean(labels.cycles))
    # QH9's definition: the mean of per-conformer ratios (the line above is a ratio of totals).
    out["scf_cycle_ratio_per_conformer"] = float(np.mean(
        [c / max(int(ref), 1) for (c, _), ref in zip(cycles, labels.cycles)]))
    out["scf_unconverged"] = sum(not ok for _, ok in cycles)  # their cycles are capped at max_cycle
    # The totals behind the ratio: it moves in whole cycles, which a mean alone hides.
    out["scf_cycles"] = int(sum(c for c, _ in cycles))
  return {k + suffix: v for k, v in out.items()}


def evaluate(predict_h: Callable[[DFTProblem], jax.Array], problems: Sequence[DFTProblem],
             labels: Labels, iterations: int = 0, mixing: float | Sequence[float] = 0.0,
             baseline: bool = True, scf_cycles: bool = True,
             refine_steps: int = 0, pyscf_timings: int = PYSCF_TIMINGS) -> dict[str, float]:
  """Scores predicted Hamiltonians against PySCF labels of the same conformers.

  Args:
    predict_h: problem → H (n, n) Hartree, padded (e.g. a jitted `model.hamiltonian`).
    problems: one DFTProblem per labelled conformer, same geometry and AO order (`problems_for`).
    labels: PySCF references (`labels.label`, `labels.label_cached`).
    iterations, mixing: the loss's unrolled SCF steps k and mixing, for h_after_k / energy_after_k.
    baseline: also score H_init = F[D_MINAO] (the no-model start), keys suffixed `_minao`.
    scf_cycles: run PySCF from the predicted density (costs one SCF per conformer and model).
    refine_steps: also score after this many DIIS SCF steps on the device from D(H) (model and
      baseline alike), and time them against PySCF's full SCF from MINAO (setup included) on the
      first `pyscf_timings` conformers: refine_time_ratio (none with pyscf_timings = 0).

  Returns:
    Means over conformers (real AO block only; the module docstring says which product each
    scores): h_mae_uha, eps_occ_raw_mae_uha, h_mae_fock_uha, h_mae_after_k_uha, eps_occ_mae_uha,
    eps_all_mae_uha, psi_cos_percent, psi_subspace_percent, energy_mae_uha, energy_mae_mev,
    energy_after_k_mae_uha, gap_mae_uha, scf_cycle_ratio (ratio of totals),
    scf_cycle_ratio_per_conformer (mean of ratios, QH9's), scf_unconverged and scf_cycles (counts),
    n_conformers, refine_steps, and with refine_steps > 0 eps_occ_mae_uha_refined,
    eps_all_mae_uha_refined, energy_mae_uha_refined, refine_time_ratio; the same for the baseline
    with suffix `_minao`, where PySCF starts from the MINAO density itself: the labels'
    own runs, whose cycles are read from `labels` (ratio 1).
  """
  if len(problems) != len(labels):
    raise InputError(f"{len(problems)} problems for {len(labels)} labelled conformers")
  mixing = dft.mixing_schedule(iterations, mixing)
  refine_steps = dft.check_refine(refine_steps)
  n, a = labels.fock.shape[-1], len(labels.atomic_numbers)
  refine_seconds = []
  runs = {"": [[], []], "_minao": [[], []]}  # suffix → (scores, cycles)
  for i, problem in enumerate(problems):
    if not problem.level.same_theory(labels.level):
      raise InputError(f"conformer {i}: the problem is at {problem.level}, the labels at "
                       f"{labels.level}")
    if int(np.sum(problem.ao_mask)) != n or not np.allclose(
        np.asarray(problem.positions, np.float64)[:a], labels.positions[i], atol=1e-4):
      raise InputError(f"conformer {i}: the problem's geometry or basis differs from the label's "
                       "(another frame?); build the problems with problems_for(labels)")
    starts = {"": predict_h(problem)}
    if baseline:
      starts["_minao"] = h_init(problem)
    for suffix, h in starts.items():
      scores, density = _conformer_scores(problem, labels, i, h, mixing)
      if refine_steps:
        refined, seconds = _refined_scores(problem, labels, i, h, refine_steps)
        scores.update(refined)
        refine_seconds.append(seconds)  # the first call of a shape compiles: dropped below
      runs[suffix][0].append(scores)
      if scf_cycles:
        # The baseline's PySCF run starts from the MINAO density itself, not from D(H_init): that
        # run is the label's own (PySCF's default guess is MINAO; tests/test_labels.py checks the
        # identity), so its cycles are read from the labels rather than paid for again.
        runs[suffix][1].append(restart_cycles(labels, i, density) if suffix == ""
                               else (int(labels.cycles[i]), bool(labels.converged[i])))
  metrics = {"n_conformers": len(problems), "refine_steps": refine_steps}
  if refine_steps and pyscf_timings:
    warm = refine_seconds[1:] or refine_seconds
    pyscf = [scf_seconds(labels, i) for i in range(min(pyscf_timings, len(labels)))]
    metrics["refine_time_ratio"] = float(np.median(warm) / np.median(pyscf))
  for suffix, (scores, cycles) in runs.items():
    if scores:
      metrics.update(_summary(scores, cycles if scf_cycles else None, labels, suffix))
  return metrics
