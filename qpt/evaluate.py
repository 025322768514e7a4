"""Evaluation against PySCF: reference labels, the field's metrics, and lab-frame predictions.

  conformers ──PySCF, float64, minao start──▶ Labels (.npz, cached)
  problem ──predict_h──▶ H ──▶ D(H) ──▶ F[D(H)] ──▶ ε, C, gap
                                 ├──▶ E[D(H)];  D_k after the loss's k steps ──▶ F[D_k], E[D_k]
                                 └──▶ PySCF restarted from dm0 = D(H): cycles

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

import dataclasses
import functools
import os
from typing import Callable, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pyscf.df
import scipy.linalg
from pyscf import dft as pyscf_dft, gto, scf as pyscf_scf
from pyscf.data.nist import HARTREE2EV

from qpt import dft, frame, integrals, model as model_lib, xc as xc_lib
from qpt.errors import InputError
from qpt.molecule import Molecule
from qpt.problem import DFTProblem, build_problem, reference_energy

CONV_TOL = 1e-9  # Hartree; PySCF's energy convergence for labels and cycle counts (gradient: √tol)
UHA = 1e6  # µHa per Hartree
MEV = 1e3 * HARTREE2EV  # meV per Hartree
_LABEL_FORMAT = 1  # bump when the .npz layout changes: old files are then relabelled


# ---- reference labels ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Labels:
  """PySCF reference results for c conformers of one molecule; n = n_ao (real AOs), float64.

  Level of theory: basis, xc, grid_level, eri, conv_tol (Hartree).
  Geometry, exactly as labelled (the canonical frame if the caller canonicalised):
    atomic_numbers (a,) int, charge (e), positions (c, a, 3) Bohr.
  Results, in PySCF's AO order for that geometry:
    fock (c, n, n) Hartree: F[D] of the converged density; density (c, n, n) electrons;
    mo_energy (c, n) Hartree, ascending; mo_coeff (c, n, n); mo_occ (c, n);
    energy (c,) Hartree; cycles (c,) SCF cycles from PySCF's minao guess; converged (c,) bool.
  """

  basis: str
  xc: str
  grid_level: int
  eri: str
  conv_tol: float
  atomic_numbers: np.ndarray
  charge: int
  positions: np.ndarray
  fock: np.ndarray
  density: np.ndarray
  mo_energy: np.ndarray
  mo_coeff: np.ndarray
  mo_occ: np.ndarray
  energy: np.ndarray
  cycles: np.ndarray
  converged: np.ndarray

  def __len__(self) -> int:
    return len(self.positions)

  def molecule(self, i: int) -> Molecule:
    """Conformer i as a `Molecule` (build evaluation problems from this, not from the lab input)."""
    return Molecule.from_bohr(self.atomic_numbers, self.positions[i], self.charge, "conformer")

  def molecules(self) -> list[Molecule]:
    return [self.molecule(i) for i in range(len(self))]


def pyscf_rks(mol: gto.Mole, xc: str, grid_level: int, eri: str, conv_tol: float = CONV_TOL):
  """PySCF's RKS at QPT's level of theory, not yet run, with its grid built from the MINAO density.

  PySCF prunes grid points by the density it first sees; building the grid here from MINAO gives
  every run the grid `integrals.quadrature` gives the device, whatever dm0 the run starts from.
  """
  mf = pyscf_dft.RKS(mol, xc=xc)
  if eri == "df":
    mf = mf.density_fit(auxbasis=pyscf.df.make_auxbasis(mol))
  elif eri not in integrals.ERI_MODES:
    raise InputError(f"eri={eri!r}: choose one of {', '.join(integrals.ERI_MODES)}")
  mf.grids.level = int(grid_level)
  mf.conv_tol = conv_tol
  mf.verbose = 0
  mf.initialize_grids(mol, pyscf_scf.hf.init_guess_by_minao(mol))
  return mf


def _converge(mf, dm0: np.ndarray | None = None):
  """Runs the SCF (from PySCF's minao guess unless `dm0`); the one place PySCF iterates."""
  mf.kernel(dm0=dm0)
  return mf


def label(molecules: Sequence[Molecule | gto.Mole], basis: str, xc: str = "b3lyp5",
          grid_level: int = 3, eri: str = "dense", conv_tol: float = CONV_TOL) -> Labels:
  """Converged PySCF references for conformers of one molecule (same atoms, same order).

  Args:
    molecules: the conformers, in the frame the labels should be in (canonicalise first with
      `frame.to_canonical` to evaluate a model).
    basis, xc, grid_level, eri: QPT's level of theory, as in `build_problem`.
    conv_tol: PySCF's energy tolerance, Hartree.
  """
  molecules = _molecules(molecules)
  if not molecules:
    raise InputError("no conformers to label")
  first = molecules[0]
  for k, m in enumerate(molecules):
    if not np.array_equal(m.atomic_numbers, first.atomic_numbers) or m.charge != first.charge:
      raise InputError(f"conformer {k} has other atoms or charge than conformer 0")
  xc = xc_lib.functional(xc).name
  results = []
  for m in molecules:
    mf = _converge(pyscf_rks(m.to_pyscf(basis), xc, grid_level, eri, conv_tol))
    density = mf.make_rdm1()
    results.append((mf.get_fock(dm=density), density, mf.mo_energy, mf.mo_coeff, mf.mo_occ,
                    mf.e_tot, mf.cycles, mf.converged))
  columns = [np.array(c) for c in zip(*results)]
  return Labels(basis, xc, int(grid_level), eri, float(conv_tol), np.array(first.atomic_numbers),
                first.charge, np.stack([m.positions for m in molecules]), *columns)


def save_labels(labels: Labels, path: str | os.PathLike) -> None:
  """Writes `labels` to an .npz file (no pickles: strings are stored as arrays)."""
  fields = {f.name: np.asarray(getattr(labels, f.name)) for f in dataclasses.fields(Labels)}
  tmp = f"{os.fspath(path)}.tmp.npz"
  np.savez(tmp, format=_LABEL_FORMAT, **fields)
  os.replace(tmp, path)  # a crash mid-write never leaves a truncated cache behind


def load_labels(path: str | os.PathLike) -> Labels:
  with np.load(path, allow_pickle=False) as data:
    if "format" not in data or int(data["format"]) != _LABEL_FORMAT:
      raise InputError(f"{path}: not a QPT label file of format {_LABEL_FORMAT}")
    fields = {f.name: data[f.name] for f in dataclasses.fields(Labels)}
  for key, kind in (("basis", str), ("xc", str), ("eri", str), ("grid_level", int),
                    ("conv_tol", float), ("charge", int)):
    fields[key] = kind(fields[key])
  return Labels(**fields)


def label_cached(path: str | os.PathLike, molecules: Sequence[Molecule | gto.Mole], basis: str,
                 xc: str = "b3lyp5", grid_level: int = 3, eri: str = "dense",
                 conv_tol: float = CONV_TOL) -> tuple[Labels, bool]:
  """`label`, reusing `path` if it holds the same level of theory and geometries.

  Returns (labels, reused). A file for anything else is relabelled and overwritten.
  """
  molecules = _molecules(molecules)
  wanted = dict(basis=basis, xc=xc_lib.functional(xc).name, grid_level=int(grid_level), eri=eri,
                conv_tol=float(conv_tol))
  if os.path.exists(path):
    try:
      old = load_labels(path)
    except (InputError, KeyError, ValueError, OSError):
      old = None  # unreadable or an old format: relabel
    if old is not None and _same(old, wanted, molecules):
      return old, True
  labels = label(molecules, **wanted)
  save_labels(labels, path)
  return labels, False


def _molecules(molecules: Sequence[Molecule | gto.Mole]) -> list[Molecule]:
  return [Molecule.from_pyscf(m) if isinstance(m, gto.Mole) else m for m in molecules]


def _same(labels: Labels, wanted: dict, molecules: Sequence[Molecule]) -> bool:
  if any(getattr(labels, k) != v for k, v in wanted.items()) or len(labels) != len(molecules):
    return False
  return all(np.array_equal(m.atomic_numbers, labels.atomic_numbers) and m.charge == labels.charge
             and np.allclose(m.positions, p, rtol=0, atol=1e-10)
             for m, p in zip(molecules, labels.positions))


def build_problems(labels: Labels, dtype: str = "float32", **kwargs) -> list[DFTProblem]:
  """The labelled conformers as DFTProblems at the labels' level of theory, padded alike.

  One padded shape (the largest bucket among them) means one compiled program for all conformers.
  `kwargs` go to `build_problem` (e.g. xc_chunk).
  """
  theory = dict(basis=labels.basis, xc=labels.xc, grid_level=labels.grid_level, eri=labels.eri,
                dtype=dtype, **kwargs)
  problems = [build_problem(m, **theory) for m in labels.molecules()]
  shape = tuple(int(s) for s in np.max([p.shapes for p in problems], axis=0))
  return [p if p.shapes == shape else build_problem(m, **theory, pad_to=shape)
          for p, m in zip(problems, labels.molecules())]


def pyscf_cycles(labels: Labels, i: int, dm0: np.ndarray) -> tuple[int, bool]:
  """(cycles, converged) of PySCF for conformer i at the labels' level of theory, from `dm0`."""
  mol = labels.molecule(i).to_pyscf(labels.basis)
  mf = _converge(pyscf_rks(mol, labels.xc, labels.grid_level, labels.eri, labels.conv_tol),
                 np.asarray(dm0, np.float64))
  return int(mf.cycles), bool(mf.converged)


# ---- metrics ---------------------------------------------------------------------------------


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
    problems: one DFTProblem per labelled conformer, same geometry and AO order (`build_problems`).
    labels: PySCF references (`label`, `label_cached`).
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
    if int(np.sum(problem.ao_mask)) != n or not np.allclose(
        np.asarray(problem.positions, np.float64)[:a], labels.positions[i], atol=1e-4):
      raise InputError(f"conformer {i}: the problem's geometry or basis differs from the label's "
                       "(another frame?); build the problems with build_problems(labels)")
    starts = {"": predict_h(problem)}
    if baseline:
      starts["_minao"] = h_init(problem)
    for suffix, h in starts.items():
      scores, density = _conformer_scores(problem, labels, i, h, mixing)
      runs[suffix][0].append(scores)
      if scf_cycles:
        # The baseline's PySCF run starts from the MINAO density itself, not from D(H_init).
        dm0 = density if suffix == "" else np.asarray(problem.density_ref, np.float64)[:n, :n]
        runs[suffix][1].append(pyscf_cycles(labels, i, dm0))
  metrics = {"n_conformers": len(problems)}
  for suffix, (scores, cycles) in runs.items():
    if scores:
      metrics.update(_summary(scores, cycles if scf_cycles else None, labels, suffix))
  return metrics


# ---- predictions in the lab frame ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Prediction:
  """A model's prediction for one molecule in its own (lab) frame; n = real AOs, float64.

  Matrices use the AO order of `molecule.to_pyscf(basis)`.
    hamiltonian (n, n) Hartree: H = H_init + W.
    density (n, n) electrons: D(H), the occupied projector of H.
    fock (n, n) Hartree: F[D(H)].
    energy: E[D(H)], Hartree.
    mo_energy (n,) Hartree, mo_coeff (n, n), mo_occ (n,): orbitals of F[D(H)], which the energy
      loss constrains (H's own spectrum it does not); so make_rdm1(mo_coeff, mo_occ) is one SCF
      step beyond `density`.
  """

  hamiltonian: np.ndarray
  density: np.ndarray
  fock: np.ndarray
  energy: float
  mo_energy: np.ndarray
  mo_coeff: np.ndarray
  mo_occ: np.ndarray
  molecule: Molecule
  basis: str


@functools.partial(jax.jit, static_argnums=0)
def _predict_device(model: hk.Transformed, params: hk.Params, problem: DFTProblem):
  h = model_lib.hamiltonian(model, params, problem)
  d = dft.density_matrix(problem, h)
  return h, d, dft.fock(problem, d), dft.loss_energy_delta(problem, h)


def predict(params: hk.Params, molecule: Molecule | gto.Mole, basis: str | None = None,
            xc: str = "b3lyp5", grid_level: int = 3, eri: str = "dense", dtype: str = "float32",
            *, model: hk.Transformed | None = None) -> Prediction:
  """The model's H, D(H), F[D(H)] and E[D(H)] for a molecule in any orientation.

  The molecule is moved to its canonical frame, predicted there, and every AO matrix is rotated
  back, M_lab = R_ao M_can R_aoᵀ (`frame.ao_matrix_to_lab`); AO matrices are translation invariant.

  Args:
    params: the QPT's parameters (e.g. `checkpoint.load_params(workdir)`).
    molecule: a `Molecule` or a `pyscf.gto.Mole` (whose basis is used if `basis` is None).
    basis, xc, grid_level, eri, dtype: as in `build_problem`; use the level the model was trained at.
    model: the Haiku transform; default: the QPT whose shapes `params` have.
  """
  if model is None:
    model = model_lib.make_model(model_lib.config_from_params(params))
  if isinstance(molecule, gto.Mole):
    if molecule.cart:
      raise InputError("pyscf Mole uses Cartesian d/f functions; QPT uses spherical ones")
    basis = basis or molecule.basis
    molecule = Molecule.from_pyscf(molecule)
  basis = basis or "def2-svp"
  canonical, rotation, _ = frame.to_canonical(molecule)
  problem = build_problem(canonical, basis, xc, grid_level, eri, dtype)
  model_lib.check_supported(problem)
  h, d, f, delta = jax.device_get(_predict_device(model, params, problem))
  n = int(np.sum(problem.ao_mask))
  real = lambda m: np.asarray(m, np.float64)[:n, :n]
  r_ao = frame.rotation_matrix_ao(np.asarray(problem.orbital_labels)[:n], rotation)
  to_lab = lambda m: r_ao @ real(m) @ r_ao.T
  eps, c = scipy.linalg.eigh(real(f), real(problem.overlap))
  return Prediction(hamiltonian=to_lab(h), density=to_lab(d), fock=to_lab(f),
                    energy=reference_energy(problem) + float(delta), mo_energy=eps,
                    mo_coeff=r_ao @ c,
                    mo_occ=np.asarray(problem.occupation, np.float64)[:n], molecule=molecule,
                    basis=basis)


def to_pyscf_dm0(prediction: Prediction) -> np.ndarray:
  """The predicted density as PySCF's starting guess: (nao, nao) float64, symmetric, in PySCF's AO
  order for the original molecule — `mf.kernel(dm0=to_pyscf_dm0(p))`."""
  d = np.asarray(prediction.density, np.float64)
  return 0.5 * (d + d.T)
