"""`DFTProblem`: one conformer's DFT, as a pytree of padded, static-shape device arrays.

Two bases, and why. What a model reads (S, Hcore, D0, X) is in the AO basis, as PySCF has it.
What the energy reads is in the orthonormal basis φ' = φ X (X = L⁻ᵀ, S = L Lᵀ), transformed here
on the host in float64: the device then builds the density as P = U diag(occ) Uᵀ straight from the
eigenvectors, with no float32 X·P·Xᵀ. That product cancels badly when S is ill-conditioned and its
rounding errors enter the energy at first order (uracil/def2-SVP, cond S ≈ 5e3: 59 µHa).

Shapes are rounded up to size buckets (`bucket`), so conformers and molecules of similar size share
one compiled program. Padding is inert by construction (`LAYOUT` says how each field pads):
  * padded AOs have S = X = X⁻¹ = 1 on their diagonal and zero everywhere else (AO values, ERI
    factor, reference density), and occupation 0;
  * padded grid points have weight 0, AO values 0 and ρ0 = 0;
  * padded auxiliary functions have a zero ERI factor.
`dft.py` masks padded rows/columns of every Hamiltonian and pins their eigenvalues far above the
real spectrum, so padded orbitals are never occupied and get zero gradient.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from pyscf import gto

from qpt import integrals, xc as xc_lib
from qpt.errors import InputError
from qpt.molecule import Molecule

DTYPES = ("float32", "float64")
DEFAULT_XC_CHUNK = 4096  # grid points per XC chunk: bounds device memory at chunk × n_ao × 4 values


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DFTProblem:
  """A padded DFT problem. n = n_ao (padded), g = n_grid (padded, a multiple of xc_chunk), c = 1 or 4.

  AO basis (device dtype; meanings as in `integrals.HostIntegrals`):
    overlap (n, n), hcore (n, n) Hartree, density_ref (n, n) the MINAO density D0,
    orthogonalizer (n, n) X, orthogonalizer_inv (n, n) X⁻¹ = Lᵀ.
  Orthonormal basis (what the energy reads):
    eri_orth (n_aux, n, n) Xᵀ B_P X; fock_ref_nonxc_orth (n, n) Xᵀ G0 X, Hartree;
    density_ref_orth (n, n) P0 = X⁻¹ D0 X⁻ᵀ; ao_orth (c, g, n) φ X and its gradients.
  Grid and bookkeeping:
    weights (g,) Bohr³, rho_ref (c, g) ρ0 (and ∇ρ0), occupation (n,), ao_mask (n,) 1 for real AOs;
    energy_ref (2,): E_nuc + E[D0] in Hartree split as hi + lo so float32 carries it to ~1e-13
      relative; `reference_energy` adds them in float64 on the host.
  What a model reads besides (a = n_atoms, padded):
    orbital_labels (n, 4) int32 (atom, shell, l, m; padding −1); atomic_numbers (a,) int32
    (padding 0); positions (a, 3) Bohr.
  Static fields (part of the compiled program's identity):
    xc: functional name, as `xc.functional` normalises it.
    xc_chunk: grid points per chunk of the XC quadrature.
  """

  overlap: jax.Array
  hcore: jax.Array
  density_ref: jax.Array
  orthogonalizer: jax.Array
  orthogonalizer_inv: jax.Array
  eri_orth: jax.Array
  fock_ref_nonxc_orth: jax.Array
  density_ref_orth: jax.Array
  ao_orth: jax.Array
  weights: jax.Array
  rho_ref: jax.Array
  occupation: jax.Array
  ao_mask: jax.Array
  energy_ref: jax.Array
  orbital_labels: jax.Array
  atomic_numbers: jax.Array
  positions: jax.Array
  xc: str = dataclasses.field(metadata=dict(static=True), default="b3lyp5")
  xc_chunk: int = dataclasses.field(metadata=dict(static=True), default=DEFAULT_XC_CHUNK)

  @property
  def functional(self) -> xc_lib.Functional:
    return xc_lib.functional(self.xc)

  @property
  def dtype(self):
    return self.overlap.dtype

  @property
  def shapes(self) -> tuple[int, int, int, int]:
    """(n_ao, n_grid, n_aux, n_atoms), padded: the program's static shape."""
    return (self.overlap.shape[-1], self.weights.shape[-1], self.eri_orth.shape[-3],
            self.positions.shape[-2])


def reference_energy(problem: DFTProblem | np.ndarray) -> float | np.ndarray:
  """E_nuc + E[D0] in Hartree, float64 on the host (an array for a batch of problems).

  `problem` may also be the `energy_ref` array itself, (..., 2) hi and lo parts.
  """
  hi_lo = np.asarray(getattr(problem, "energy_ref", problem), dtype=np.float64)
  total = hi_lo[..., 0] + hi_lo[..., 1]
  return float(total) if total.ndim == 0 else total


def bucket(n: int, multiple: int = 1) -> int:
  """The smallest size ≥ n in a geometric ladder of 8 steps per octave (≤ 12.5% padding).

  Sizes are multiples of `multiple`; conformers of one molecule, and molecules of similar size, land
  on the same rung and so reuse one compiled program.
  """
  k = max(1, math.ceil(n / multiple))
  if k > 16:
    step = 2 ** (k.bit_length() - 4)  # k in [8·step, 16·step)
    k = math.ceil(k / step) * step
  return k * multiple


def build_problem(molecule: Molecule | gto.Mole, basis: str | None = None, xc: str = "b3lyp5",
                  grid_level: int = 3, eri: str = "dense", dtype: str = "float32", *,
                  xc_chunk: int = DEFAULT_XC_CHUNK,
                  pad_to: tuple[int, int, int, int] | None = None) -> DFTProblem:
  """The padded DFT problem for one conformer.

  Args:
    molecule: a `qpt.Molecule` or a `pyscf.gto.Mole` (whose basis is used if `basis` is None).
    basis: basis set name as PySCF spells it ("def2-svp", "sto-3g", "6-31g"); default def2-SVP.
    xc: "lda,vwn", "pbe", "b3lyp5" or "b3lyp", with PySCF's meanings.
    grid_level: PySCF grid level (0..9).
    eri: "dense" (exact integrals, Cholesky-factored) or "df" (density fitting, JK-fit basis).
    dtype: device precision. "float64" switches on `jax_enable_x64` (otherwise JAX would silently
      compute in float32).
    xc_chunk: grid points per XC chunk (bounds device memory).
    pad_to: exact padded (n_ao, n_grid, n_aux, n_atoms) — e.g. the largest in a batch; default:
      `bucket`s.
  """
  if dtype not in DTYPES:
    raise InputError(f"dtype={dtype!r}: choose float32 or float64")
  if isinstance(molecule, gto.Mole):
    basis = basis or molecule.basis
    molecule = Molecule.from_pyscf(molecule)
  mol = molecule.to_pyscf(basis or "def2-svp")
  host = integrals.compute(mol, xc, grid_level, eri)
  if dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  return pad(host, xc_lib.functional(xc).name, dtype, xc_chunk, pad_to)


Shape = tuple[int, int, int, int]  # (n_ao, n_grid, n_aux, n_atoms)
_AO, _GRID, _AUX, _ATOM = range(4)
LAYOUT = dict(  # field → (which size each axis has, None = fixed; what padding holds)
    overlap=((_AO, _AO), "identity"), hcore=((_AO, _AO), 0), density_ref=((_AO, _AO), 0),
    orthogonalizer=((_AO, _AO), "identity"), orthogonalizer_inv=((_AO, _AO), "identity"),
    eri_orth=((_AUX, _AO, _AO), 0), fock_ref_nonxc_orth=((_AO, _AO), 0),
    density_ref_orth=((_AO, _AO), 0), ao_orth=((None, _GRID, _AO), 0), weights=((_GRID,), 0),
    rho_ref=((None, _GRID), 0), occupation=((_AO,), 0), ao_mask=((_AO,), 0),
    energy_ref=((None,), 0), orbital_labels=((_AO, None), -1), atomic_numbers=((_ATOM,), 0),
    positions=((_ATOM, None), 0))


assert set(LAYOUT) == {f.name for f in dataclasses.fields(DFTProblem)
                       if not f.metadata.get("static")}, "LAYOUT must cover every DFTProblem array"


def default_shape(sizes: Shape, xc_chunk: int) -> Shape:
  """The bucketed padded shape for unpadded sizes (n_ao, n_grid, n_aux, n_atoms)."""
  return tuple(bucket(s, m) for s, m in zip(sizes, (4, xc_chunk, 16, 4)))


def pad(host: integrals.HostIntegrals, xc: str, dtype: str, xc_chunk: int,
        pad_to: Shape | None = None) -> DFTProblem:
  """Transforms host integrals to the device's representation, casts them, pads to static shapes.

  Each field is written once, cast on the way, into its padded array: the AO values are the bulk
  of a problem (ethanol/def2-SVP: 120 of 150 MB), and a float64 copy of φ X plus a second padded
  copy cost the worker more than the integrals themselves.
  """
  x, x_inv = host.orthogonalizer, np.linalg.inv(host.orthogonalizer)
  sizes = (len(host.occupation), len(host.weights), len(host.eri_factor), len(host.positions))
  pad_to = default_shape(sizes, xc_chunk) if pad_to is None else tuple(pad_to)
  if any(p < s for p, s in zip(pad_to, sizes)) or pad_to[1] % xc_chunk:
    raise InputError(f"pad_to={pad_to} is smaller than the problem {sizes} or n_grid is "
                     f"not a multiple of xc_chunk={xc_chunk}")
  energy_hi = np.float32(host.energy_ref) if dtype == "float32" else host.energy_ref
  real = dict(
      overlap=host.overlap, hcore=host.hcore, density_ref=host.density_ref,
      orthogonalizer=x, orthogonalizer_inv=x_inv,
      eri_orth=np.einsum("ki,pkl,lj->pij", x, host.eri_factor, x, optimize=True),
      fock_ref_nonxc_orth=x.T @ host.fock_ref_nonxc @ x,
      density_ref_orth=x_inv @ host.density_ref @ x_inv.T,
      weights=host.weights, rho_ref=host.rho_ref,
      occupation=host.occupation, ao_mask=np.ones(len(host.occupation)),
      energy_ref=np.array([energy_hi, host.energy_ref - np.float64(energy_hi)]),
      positions=host.positions)
  arrays = {name: _padded(name, a, pad_to, dtype) for name, a in real.items()}
  arrays.update(orbital_labels=_padded("orbital_labels", host.orbital_labels, pad_to, np.int32),
                atomic_numbers=_padded("atomic_numbers", host.atomic_numbers, pad_to, np.int32))
  arrays["ao_orth"] = ao_orth = _padding("ao_orth", host.ao.shape, pad_to, dtype)
  n_ao, n_grid = sizes[:2]
  for start in range(0, n_grid, _AO_BLOCK):  # φ X a block of points at a time, cast as written
    block = slice(start, min(start + _AO_BLOCK, n_grid))
    ao_orth[:, block, :n_ao] = host.ao[:, block] @ x
  return DFTProblem(**arrays, xc=xc, xc_chunk=xc_chunk)


_AO_BLOCK = 4096  # grid points per block of the AO transform: its float64 result stays in cache


def _padding(name: str, real_shape: tuple[int, ...], shape: Shape, dtype) -> np.ndarray:
  """The padded array of field `name` for real data of `real_shape`, holding only its padding."""
  axes, fill = LAYOUT[name]
  target = tuple(n if axis is None else shape[axis] for n, axis in zip(real_shape, axes))
  new = np.full(target, 0 if fill == "identity" else fill, dtype=dtype)
  if fill == "identity":  # padded AOs: orthonormal, decoupled functions
    idx = np.arange(real_shape[-1], target[-1])
    new[idx, idx] = 1
  return new


def _padded(name: str, real: np.ndarray, shape: Shape, dtype) -> np.ndarray:
  """`real` cast to `dtype` and padded as `LAYOUT` says for field `name`."""
  new = _padding(name, real.shape, shape, dtype)
  new[tuple(slice(0, n) for n in real.shape)] = real
  return new


def grow(problem: DFTProblem, shape: Shape) -> DFTProblem:
  """`problem` padded (further) to `shape`, each size ≥ the current one; bitwise as `pad` would."""
  if problem.shapes == tuple(shape):
    return problem
  arrays = {name: np.asarray(getattr(problem, name)) for name in LAYOUT}
  return dataclasses.replace(problem, **{name: _padded(name, a, shape, a.dtype)
                                         for name, a in arrays.items()})
