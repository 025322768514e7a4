"""Conformer sources: thermal normal-mode sampling around a geometry, and MD17 trajectories.

A conformer source is any callable `index → Molecule`; conformer i is a pure function of the
source's seed and i, so a stream can be split over workers and processes, and resumed, without
changing what it yields.

Thermal sampling (`ThermalSampler`) draws classical harmonic conformers at temperature T:

  Hessian H (Hartree/Bohr²), once per molecule at RHF/STO-3G, cached
    → mass-weighted  H_mw = M^-½ H M^-½,  restricted to the vibrations (translations and rotations
      projected out exactly, so a non-linear molecule has 3N − 6 modes, a linear one 3N − 5)
    → modes q_k, curvatures λ_k = ω_k²
    → mass-weighted displacement Σ_k ξ_k √(kT)/ω̃_k q_k,  ξ_k ~ N(0, 1),  ω̃_k = max(|ω_k|, ω_min).

The built-in geometries are MMFF94 minima, not RHF/STO-3G ones, so a few curvatures can be small or
negative there. Using |ω| treats an imaginary mode as a stable one of the same stiffness, and the
floor (FLOOR_FREQUENCY_CM) caps the amplitude of soft torsions, where the harmonic picture would
otherwise send atoms arbitrarily far. A draw that breaks a bond or pushes two atoms together
(`bonds_intact`) is rejected and redrawn from the same random stream, so rejection keeps conformers
deterministic. RHF/STO-3G is enough here: it gets the shape of the modes right and overestimates
stiff ones by ~20% (water's O–H stretches: 4350/4650 cm⁻¹ vs 3660/3760 measured), so stretches
move a little less than at a true 500 K; the temperature is a sampling knob, not a thermostat.
RMS atomic displacement at 500 K: water 0.03 Å, ethanol 0.15 Å, malondialdehyde 0.19 Å,
aspirin 0.25 Å; fewer than 1% of draws are rejected.

MD17 files (`load_md17`) hold trajectories in Å, in the sGDML layout (`R`, `z`) or the revised
rMD17 one (`coords`, `nuclear_charges`); `split` draws disjoint train/val/test frame indices and
`FrameSampler` streams the frames of one split as conformers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from typing import Mapping

import numpy as np
from pyscf.data import elements, nist, radii

from qpt import threads
from qpt.errors import InputError
from qpt.files import written_whole
from qpt.molecule import Molecule

DEFAULT_TEMPERATURE = 500.0  # Kelvin; MD17's trajectories were run at 500 K
FLOOR_FREQUENCY_CM = 100.0  # cm⁻¹; softer (or imaginary) modes are sampled as if this stiff
HESSIAN_BASIS = "sto-3g"  # RHF in this basis: cheap; the modes matter more than exact stiffness
MAX_ATTEMPTS = 1000  # redraws before a temperature is declared too high for the molecule
BONDED = 1.25  # pair is bonded at the reference if closer than this × sum of covalent radii
MAX_STRETCH = 1.3  # a bond longer than this × its reference length is broken
MIN_CONTACT = 0.7  # no two atoms closer than this × sum of covalent radii

KB_HARTREE = nist.BOLTZMANN / nist.HARTREE2J  # Hartree per Kelvin
AU_PER_AMU = nist.AMU2AU  # electron masses per atomic mass unit
CM_PER_AU = nist.HARTREE2WAVENUMBER  # cm⁻¹ per atomic unit of angular frequency (ħ = 1)

_HESSIANS: dict[str, np.ndarray] = {}  # in-process cache, keyed like the files in cache_dir


# ---- Hessian and normal modes -------------------------------------------------------------------


def hessian(molecule: Molecule, basis: str = HESSIAN_BASIS,
            cache_dir: str | os.PathLike | None = None) -> np.ndarray:
  """The RHF Hessian (3N, 3N) in Hartree/Bohr², rows and columns ordered (atom, xyz).

  Computed once per geometry, basis and process, and once per `cache_dir` if one is given (a
  `hessian-<name>-<hash>.npy` file), on one thread (`threads.one_thread`): a fresh run samples the
  same conformers bit for bit whatever the machine's thread count.
  """
  key = hashlib.sha256(b"".join([
      np.ascontiguousarray(molecule.atomic_numbers, np.int64).tobytes(),
      np.ascontiguousarray(molecule.positions, np.float64).tobytes(),
      f"{molecule.charge}|rhf|{basis.lower()}".encode()])).hexdigest()[:16]
  path = os.path.join(cache_dir, f"hessian-{molecule.name}-{key}.npy") if cache_dir else None
  h = _HESSIANS.get(key)
  unreadable = False
  if h is None and path and os.path.exists(path):
    h = _readable_hessian(path, 3 * molecule.n_atoms)
    unreadable = h is None
  if h is None:
    with threads.one_thread():
      mf = molecule.to_pyscf(basis).RHF().run()
      if not mf.converged:
        raise InputError(f"{molecule.name}: RHF/{basis} did not converge; cannot build a Hessian")
      n = molecule.n_atoms
      h = mf.Hessian().kernel().transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    h = 0.5 * (h + h.T)
  if path and (unreadable or not os.path.exists(path)):
    os.makedirs(cache_dir, exist_ok=True)
    # concurrent processes never read half a file
    with written_whole(path) as temporary, open(temporary, "wb") as f:
      np.save(f, h)
  _HESSIANS[key] = h
  return h


def _readable_hessian(path: str, n: int) -> np.ndarray | None:
  """The cached (n, n) Hessian at `path`, or None if it cannot be read whole (a copy of the
  workdir cut short): then it is computed again, bit for bit the same, and written over."""
  try:
    h = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError):
    return None
  return h if h.shape == (n, n) and np.isfinite(h).all() else None


def masses(molecule: Molecule) -> np.ndarray:
  """(n_atoms,) standard atomic masses in amu."""
  return np.array([elements.MASSES[z] for z in molecule.atomic_numbers])


def rigid_body_basis(positions: np.ndarray, mass: np.ndarray) -> np.ndarray:
  """Orthonormal mass-weighted translations and rotations, (3N, k): k = 6, 5 (linear) or 3 (atom).

  Args:
    positions: (N, 3) Bohr.
    mass: (N,) any unit (only ratios matter).
  """
  sqrt_m = np.sqrt(mass)[:, None]
  r = positions - (mass[:, None] * positions).sum(0) / mass.sum()
  vectors = [np.broadcast_to(sqrt_m * axis, r.shape) for axis in np.eye(3)]
  vectors += [sqrt_m * np.cross(axis, r) for axis in np.eye(3)]
  u, s, _ = np.linalg.svd(np.stack([v.ravel() for v in vectors], axis=1), full_matrices=False)
  return u[:, s > 1e-6 * s[0]]  # a linear molecule's rotation about its axis has s ≈ 0


@dataclasses.dataclass(frozen=True)
class Vibrations:
  """Harmonic normal modes.

  Attributes:
    frequencies: (n_vib,) cm⁻¹, ascending; negative for an imaginary mode (negative curvature).
    modes: (3N, n_vib) orthonormal mass-weighted displacement vectors, orthogonal to translations
      and rotations.
    masses: (N,) amu.
  """

  frequencies: np.ndarray
  modes: np.ndarray
  masses: np.ndarray


def vibrations(molecule: Molecule, hess: np.ndarray) -> Vibrations:
  """Normal modes of `hess` (3N, 3N) Hartree/Bohr², with rigid-body motion projected out exactly."""
  mass = masses(molecule)
  inv_sqrt_m = np.repeat(1.0 / np.sqrt(mass * AU_PER_AMU), 3)
  h_mw = inv_sqrt_m[:, None] * hess * inv_sqrt_m[None, :]  # Hartree / (Bohr² m_e)
  rigid = rigid_body_basis(molecule.positions, mass)
  # Diagonalising inside the complement of the rigid-body space (rather than P H P) keeps
  # translations and rotations out even where the geometry is not a stationary point.
  q = np.linalg.svd(rigid, full_matrices=True)[0][:, rigid.shape[1]:]
  curvature, v = np.linalg.eigh(q.T @ h_mw @ q)
  frequencies = np.sign(curvature) * np.sqrt(np.abs(curvature)) * CM_PER_AU
  return Vibrations(frequencies, q @ v, mass)


def projected_hessian(molecule: Molecule, hess: np.ndarray) -> np.ndarray:
  """P H_mw P (3N, 3N): the mass-weighted Hessian with translations and rotations projected out."""
  inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses(molecule) * AU_PER_AMU), 3)
  rigid = rigid_body_basis(molecule.positions, masses(molecule))
  p = np.eye(len(inv_sqrt_m)) - rigid @ rigid.T
  return p @ (inv_sqrt_m[:, None] * hess * inv_sqrt_m[None, :]) @ p


# ---- geometry sanity ----------------------------------------------------------------------------


def bonds_intact(reference: Molecule, positions: np.ndarray) -> bool:
  """Whether `positions` (N, 3) Bohr keeps the bonds of `reference` and no atoms collide.

  Bonded pairs are those closer than BONDED × the sum of covalent radii at the reference; each must
  stay shorter than MAX_STRETCH × its reference length. Every pair must stay farther apart than
  MIN_CONTACT × the sum of covalent radii.
  """
  r = radii.COVALENT[reference.atomic_numbers]  # Bohr
  contact = r[:, None] + r[None, :]
  ref = _distances(reference.positions)
  new = _distances(positions)
  upper = np.triu(np.ones_like(ref, dtype=bool), 1)
  bonded = upper & bond_graph(reference)
  return bool((new[bonded] <= MAX_STRETCH * ref[bonded]).all()
              and (new[upper] >= MIN_CONTACT * contact[upper]).all())


def bond_graph(molecule: Molecule) -> np.ndarray:
  """(N, N) bool, symmetric, False on the diagonal: the pairs closer than BONDED × the sum of
  their covalent radii — the bonds every conformer must keep (and the model Hessian's, the graph
  key's)."""
  r = radii.COVALENT[molecule.atomic_numbers]  # Bohr
  bonded = _distances(molecule.positions) < BONDED * (r[:, None] + r[None, :])
  np.fill_diagonal(bonded, False)
  return bonded


def _distances(x: np.ndarray) -> np.ndarray:
  return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))


# ---- thermal sampling ---------------------------------------------------------------------------


class ThermalSampler:
  """Classical harmonic conformers of one molecule at a temperature: `sampler(i)` → Molecule.

  Conformer i is drawn from `np.random.default_rng([seed, i])`, so it depends on (seed, i) only,
  bitwise (given the same Hessian: pass `cache_dir` to pin it across runs).
  """

  def __init__(self, molecule: Molecule, temperature: float = DEFAULT_TEMPERATURE, seed: int = 0,
               *, floor_frequency: float = FLOOR_FREQUENCY_CM, hess: np.ndarray | None = None,
               hessian_basis: str = HESSIAN_BASIS, cache_dir: str | os.PathLike | None = None):
    """Prepares the sampler; computes (or loads) the Hessian unless `hess` is given.

    Args:
      molecule: reference geometry (Bohr inside), e.g. `qpt.molecules.get("ethanol")`.
      temperature: Kelvin, ≥ 0 (0 yields the reference geometry).
      seed: non-negative int naming the stream.
      floor_frequency: cm⁻¹; lower |frequencies| are raised to this (see module docstring).
      hess: optional (3N, 3N) Hessian, Hartree/Bohr², instead of computing one.
      hessian_basis: basis of the RHF Hessian.
      cache_dir: optional directory for the Hessian file.
    """
    if not (np.isfinite(temperature) and temperature >= 0):
      raise InputError(f"temperature={temperature}: must be a non-negative number of Kelvin")
    if int(seed) != seed or seed < 0:
      raise InputError(f"seed={seed}: must be a non-negative integer")
    if not floor_frequency > 0:
      raise InputError(f"floor_frequency={floor_frequency}: must be positive (cm⁻¹)")
    self.molecule, self.temperature, self.seed = molecule, float(temperature), int(seed)
    n3 = 3 * molecule.n_atoms
    if hess is None:
      hess = (hessian(molecule, hessian_basis, cache_dir) if molecule.n_atoms > 1
              else np.zeros((3, 3)))  # an atom has nothing to vibrate
    hess = np.asarray(hess, dtype=np.float64)
    if hess.shape != (n3, n3):
      raise InputError(f"{molecule.name}: Hessian has shape {hess.shape}, expected ({n3}, {n3})")
    with threads.one_thread():  # LAPACK's eigh and BLAS: the same bits on any machine's threads
      self.vibrations = vibrations(molecule, hess)
      omega = np.maximum(np.abs(self.vibrations.frequencies), floor_frequency) / CM_PER_AU
      sigma = np.sqrt(KB_HARTREE * self.temperature) / omega  # Bohr·√m_e per mode
      u = self.vibrations.modes
      # The symmetric square root U σ Uᵀ of the covariance (not U σ alone): unique, so a sign flip
      # or a rotation among degenerate eigenvectors of a recomputed Hessian cannot change samples.
      inv_sqrt_m = np.repeat(1.0 / np.sqrt(self.vibrations.masses * AU_PER_AMU), 3)
      self._transform = inv_sqrt_m[:, None] * ((u * sigma) @ u.T)  # (3N, 3N): ξ → Bohr

  def displacement(self, rng: np.random.Generator) -> np.ndarray:
    """One unconstrained draw, (N, 3) Bohr."""
    xi = rng.standard_normal(self._transform.shape[1])
    # An elementwise sum rather than BLAS: identical bits whatever the thread count.
    return (self._transform * xi[None, :]).sum(axis=1).reshape(-1, 3)

  def positions(self, index: int) -> np.ndarray:
    """(N, 3) Bohr: conformer `index`, the first draw from rng([seed, index]) that keeps bonds."""
    if int(index) != index or index < 0:
      raise InputError(f"conformer index {index}: must be a non-negative integer")
    rng = np.random.default_rng([self.seed, int(index)])
    for _ in range(MAX_ATTEMPTS):
      x = self.molecule.positions + self.displacement(rng)
      if bonds_intact(self.molecule, x):
        return x
    raise InputError(f"{self.molecule.name}: {MAX_ATTEMPTS} draws at {self.temperature:g} K all "
                     "broke a bond; lower the temperature")

  def __call__(self, index: int) -> Molecule:
    return self.molecule.with_positions(self.positions(index))


# ---- MD17 trajectories --------------------------------------------------------------------------

_LAYOUTS = {"sGDML": ("R", "z"), "rMD17": ("coords", "nuclear_charges")}


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """Frames of one molecule.

  Attributes:
    atomic_numbers: (N,) int.
    positions: (n_frames, N, 3) Bohr.
    name: label for messages (the file name).
  """

  atomic_numbers: np.ndarray
  positions: np.ndarray
  name: str = "trajectory"

  def __len__(self) -> int:
    return self.positions.shape[0]

  def molecule(self, frame: int) -> Molecule:
    return Molecule.from_bohr(self.atomic_numbers, self.positions[frame], name=self.name)


def load_md17(path: str | os.PathLike) -> Trajectory:
  """An MD17 `.npz` (Å): sGDML keys `R`, `z`, or rMD17 keys `coords`, `nuclear_charges`."""
  name = os.path.basename(os.fspath(path))
  try:
    data = np.load(path, allow_pickle=False)
  except ValueError:  # neither a zip nor a .npy header: numpy would offer to unpickle it
    raise InputError(f"{name}: not an .npz archive (MD17 files are numpy .npz)") from None
  except (OSError, zipfile.BadZipFile) as e:
    raise InputError(f"{path}: cannot read as .npz ({e})") from None
  if not isinstance(data, np.lib.npyio.NpzFile):
    raise InputError(f"{name}: a single array, not an .npz archive of MD17 fields")
  with data:
    keys = set(data.files)
    layout = next((k for k in _LAYOUTS.values() if set(k) <= keys), None)
    if layout is None:
      raise InputError(f"{name}: not an MD17 file: expected keys R and z (sGDML) or coords and "
                       f"nuclear_charges (rMD17), found {', '.join(sorted(keys)) or 'none'}")
    try:
      xyz, z = data[layout[0]], data[layout[1]]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
      raise InputError(f"{name}: cannot read {layout[0]}/{layout[1]} ({e})") from None
  z = np.asarray(z).ravel()
  if (not np.issubdtype(z.dtype, np.number) or np.any(z != np.round(z))
      or np.any((z < 1) | (z > 86))):
    raise InputError(f"{name}: {layout[1]} should hold atomic numbers 1..86")
  if xyz.ndim != 3 or xyz.shape[1:] != (len(z), 3) or xyz.shape[0] == 0:
    raise InputError(f"{name}: {layout[0]} has shape {xyz.shape}, expected (n_frames, {len(z)}, 3) "
                     f"for {len(z)} atoms")
  xyz = np.asarray(xyz, dtype=np.float64)
  if not np.isfinite(xyz).all():
    raise InputError(f"{name}: frame {np.flatnonzero(~np.isfinite(xyz).all(axis=(1, 2)))[0]} "
                     "has a non-finite coordinate")
  return Trajectory(z.astype(np.int64), xyz / nist.BOHR, name)


def split(n_frames: int, sizes: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
  """Disjoint frame indices: e.g. sizes={"train": 1000, "val": 500, "test": 1000}.

  One permutation of range(n_frames) from `seed`, cut into consecutive pieces in the order given,
  so each split is fixed by (n_frames, seed, sizes up to and including it).
  """
  total = sum(int(s) for s in sizes.values())
  if any(int(s) < 0 for s in sizes.values()) or total > n_frames:
    raise InputError(f"split sizes {dict(sizes)} (total {total}) do not fit in {n_frames} frames")
  order = np.random.default_rng([int(seed)]).permutation(n_frames)
  ends = np.cumsum([int(s) for s in sizes.values()])
  return {k: np.sort(order[e - int(s):e]) for (k, s), e in zip(sizes.items(), ends)}


def check_split(n_frames: int, indices: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Validates explicit index arrays (e.g. rMD17's index files): in range and disjoint."""
  out, seen = {}, {}
  for key, idx in indices.items():
    idx = np.asarray(idx).ravel()
    if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0
                     or idx.max() >= n_frames):
      raise InputError(f"split {key!r}: indices must be integers in 0..{n_frames - 1}")
    for other, prev in seen.items():
      if np.intersect1d(idx, prev).size:
        raise InputError(f"splits {other!r} and {key!r} share frames")
    out[key] = seen[key] = idx.astype(np.int64)
  return out


class FrameSampler:
  """The frames of one split as an endless conformer source: `sampler(i)` → Molecule.

  Epoch e = i // len(indices) visits the split in the order of a permutation drawn from
  rng([seed, e]), so conformer i depends on (seed, i) only.
  """

  def __init__(self, trajectory: Trajectory, indices: np.ndarray | None = None, seed: int = 0):
    self.trajectory = trajectory
    self.indices = check_split(len(trajectory), {"frames": np.arange(len(trajectory))
                                                 if indices is None else indices})["frames"]
    if not self.indices.size:
      raise InputError(f"{trajectory.name}: no frames to sample")
    if int(seed) != seed or seed < 0:
      raise InputError(f"seed={seed}: must be a non-negative integer")
    self.seed = int(seed)
    self._epoch: tuple[int, np.ndarray] = (-1, np.empty(0, np.int64))

  def frame(self, index: int) -> int:
    """The trajectory frame that conformer `index` is."""
    epoch, k = divmod(int(index), len(self.indices))
    if self._epoch[0] != epoch:  # consecutive conformers share an epoch: one permutation each
      rng = np.random.default_rng([self.seed, epoch])
      self._epoch = (epoch, rng.permutation(len(self.indices)))
    return int(self.indices[self._epoch[1][k]])

  def __call__(self, index: int) -> Molecule:
    return self.trajectory.molecule(self.frame(index))
