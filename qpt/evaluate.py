"""Scoring predicted Hamiltonians against PySCF labels, with the field's metrics.

  problem ──predict_h──▶ H ──▶ D(H) ──▶ F[D(H)] ──▶ ε, C, gap
                                 ├──▶ E[D(H)];  D_k after the loss's k steps ──▶ F[D_k], E[D_k]
                                 └──▶ PySCF restarted from dm0 = D(H): cycles

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
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from pyscf.data.nist import HARTREE2EV

from qpt import dft
from qpt.build import build_problem, grow
from qpt.errors import InputError
from qpt.labels import Labels, restart_cycles
from qpt.problem import DFTProblem, reference_energy

UHA = 1e6  # µHa per Hartree
MEV = 1e3 * HARTREE2EV  # meV per Hartree


def problems_for(labels: Labels, dtype: str = "float32", **kwargs) -> list[DFTProblem]:
  """The labelled conformers as DFTProblems at the labels' level of theory, padded alike.

  One padded shape (the largest bucket among them) means one compiled program for all conformers.
  `kwargs` go to `build_problem` (e.g. xc_chunk).
  """
  level = labels.level.with_dtype(dtype)
  problems = [build_problem(m, level, **kwargs) for m in labels.molecules()]
  shape = tuple(int(s) for s in np.max([p.shapes for p in problems], axis=0))
  return [grow(p, shape) for p in problems]


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
      energy_mae=abs(energy - labels.energy[i]),
      energy_after_k_mae=abs(energy_k - labels.energy[i]),
      gap_mae=abs((eps[o] - eps[o - 1]) - (eps_ref[o] - eps_ref[o - 1])),
      psi_cos=np.mean(cosine),
      psi_subspace=np.sum((c_ref_occ.T @ s @ c_occ) ** 2) / o,
  )
  return scores, real(out["density"])


def _summary(scores: list[dict[str, float]], cycles: list | None, labels: Labels,
             suffix: str) -> dict[str, float]:
  """Means over conformers in the field's units, with `suffix` appended to every key."""
  mean = lambda key: float(np.mean([s[key] for s in scores]))
  out = {f"{k}_uha": UHA * mean(k) for k in scores[0] if "_mae" in k}
  out.update(psi_cos_percent=100 * mean("psi_cos"), psi_subspace_percent=100 * mean("psi_subspace"),
             energy_mae_mev=MEV * mean("energy_mae"))
  if cycles is not None:  # (cycles, converged) per conformer
    out["scf_cycle_ratio"] = float(np.mean([c for c, _ in cycles]) / np.mean(labels.cycles))
    out["scf_unconverged"] = sum(not ok for _, ok in cycles)  # their cycles are capped at max_cycle
  return {k + suffix: v for k, v in out.items()}


def evaluate(predict_h: Callable[[DFTProblem], jax.Array], problems: Sequence[DFTProblem],
             labels: Labels, iterations: int = 0, mixing: float | Sequence[float] = 0.0,
             baseline: bool = True, scf_cycles: bool = True) -> dict[str, float]:
  """Scores predicted Hamiltonians against PySCF labels of the same conformers.

  Args:
    predict_h: problem → H (n, n) Hartree, padded (e.g. a jitted `model.hamiltonian`).
    problems: one DFTProblem per labelled conformer, same geometry and AO order (`problems_for`).
    labels: PySCF references (`labels.label`, `labels.label_cached`).
    iterations, mixing: the loss's unrolled SCF steps k and mixing, for h_after_k / energy_after_k.
    baseline: also score H_init = F[D_MINAO] (the no-model start), keys suffixed `_minao`.
    scf_cycles: run PySCF from the predicted density (costs one SCF per conformer and model).

  Returns:
    Means over conformers (real AO block only): h_mae_uha, h_mae_fock_uha, h_mae_after_k_uha,
    eps_occ_mae_uha, psi_cos_percent, psi_subspace_percent, energy_mae_uha, energy_mae_mev,
    energy_after_k_mae_uha, gap_mae_uha, scf_cycle_ratio, scf_unconverged (a count),
    n_conformers; the same for the baseline with suffix `_minao`, where PySCF starts from the
    MINAO density itself (ratio ≈ 1).
  """
  if len(problems) != len(labels):
    raise InputError(f"{len(problems)} problems for {len(labels)} labelled conformers")
  mixing = dft.mixing_schedule(iterations, mixing)
  n, a = labels.fock.shape[-1], len(labels.atomic_numbers)
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
      runs[suffix][0].append(scores)
      if scf_cycles:
        # The baseline's PySCF run starts from the MINAO density itself, not from D(H_init).
        dm0 = density if suffix == "" else np.asarray(problem.density_ref, np.float64)[:n, :n]
        runs[suffix][1].append(restart_cycles(labels, i, dm0))
  metrics = {"n_conformers": len(problems)}
  for suffix, (scores, cycles) in runs.items():
    if scores:
      metrics.update(_summary(scores, cycles if scf_cycles else None, labels, suffix))
  return metrics
