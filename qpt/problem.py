"""`DFTProblem`: one conformer's DFT, as a pytree of padded, static-shape device arrays.

Shapes are rounded up to size buckets (`bucket`), so conformers and molecules of similar size share
one compiled program. Padding is inert by construction:
  * padded AOs have S = X = 1 on their diagonal and zero everywhere else (AO values, ERI factor,
    reference density), and occupation 0;
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

  Array fields (device dtype unless said otherwise) — see `integrals.HostIntegrals` for meanings:
    overlap (n, n), orthogonalizer (n, n), eri_factor (n_aux, n, n), density_ref (n, n),
    fock_ref_nonxc (n, n) Hartree, ao (c, g, n), weights (g,) Bohr³, rho_ref (c, g),
    occupation (n,), ao_mask (n,) 1 for real AOs, 0 for padding,
    energy_ref (2,): E_nuc + E[D0] in Hartree split as hi + lo so float32 carries it to ~1e-13
      relative; `reference_energy` adds them in float64 on the host.
  What a model reads besides (a = n_atoms, padded):
    hcore (n, n) Hartree; orbital_labels (n, 4) int32 (atom, shell, l, m; padding −1);
    atomic_numbers (a,) int32 (padding 0); positions (a, 3) Bohr.
  Static fields (part of the compiled program's identity):
    xc: functional name, as `xc.functional` normalises it.
    xc_chunk: grid points per chunk of the XC quadrature.
  """

  overlap: jax.Array
  orthogonalizer: jax.Array
  eri_factor: jax.Array
  density_ref: jax.Array
  fock_ref_nonxc: jax.Array
  ao: jax.Array
  weights: jax.Array
  rho_ref: jax.Array
  occupation: jax.Array
  ao_mask: jax.Array
  energy_ref: jax.Array
  hcore: jax.Array
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
    return (self.overlap.shape[-1], self.weights.shape[-1], self.eri_factor.shape[-3],
            self.positions.shape[-2])


def reference_energy(problem: DFTProblem) -> float | np.ndarray:
  """E_nuc + E[D0] in Hartree, float64 on the host (an array for a batch of problems)."""
  hi_lo = np.asarray(problem.energy_ref, dtype=np.float64)
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


def pad(host: integrals.HostIntegrals, xc: str, dtype: str, xc_chunk: int,
        pad_to: tuple[int, int, int, int] | None = None) -> DFTProblem:
  """Pads host integrals to static shapes and casts them to the device dtype."""
  sizes = (host.overlap.shape[0], host.weights.shape[0], host.eri_factor.shape[0],
           len(host.atomic_numbers))
  if pad_to is None:
    pad_to = tuple(bucket(s, m) for s, m in zip(sizes, (4, xc_chunk, 16, 4)))
  if any(p < s for p, s in zip(pad_to, sizes)) or pad_to[1] % xc_chunk:
    raise InputError(f"pad_to={tuple(pad_to)} is smaller than the problem {sizes} or n_grid is "
                     f"not a multiple of xc_chunk={xc_chunk}")
  n, g = sizes[:2]
  n_pad, g_pad, aux_pad, atoms_pad = pad_to

  def padded(a: np.ndarray, shape, identity: bool = False, fill=0) -> np.ndarray:
    out = np.full(shape, fill, dtype=a.dtype if fill else np.float64)
    out[tuple(slice(0, s) for s in a.shape)] = a
    if identity:  # padded AOs: orthonormal, decoupled functions
      idx = np.arange(a.shape[-1], shape[-1])
      out[..., idx, idx] = 1.0
    return out

  energy_hi = np.float32(host.energy_ref) if dtype == "float32" else host.energy_ref
  energy_ref = np.array([energy_hi, host.energy_ref - np.float64(energy_hi)])
  c = host.ao.shape[0]
  arrays = dict(
      overlap=padded(host.overlap, (n_pad, n_pad), identity=True),
      orthogonalizer=padded(host.orthogonalizer, (n_pad, n_pad), identity=True),
      eri_factor=padded(host.eri_factor, (aux_pad, n_pad, n_pad)),
      density_ref=padded(host.density_ref, (n_pad, n_pad)),
      fock_ref_nonxc=padded(host.fock_ref_nonxc, (n_pad, n_pad)),
      ao=padded(host.ao, (c, g_pad, n_pad)),
      weights=padded(host.weights, (g_pad,)),
      rho_ref=padded(host.rho_ref, (c, g_pad)),
      occupation=padded(host.occupation, (n_pad,)),
      ao_mask=padded(np.ones(n), (n_pad,)),
      energy_ref=energy_ref,
  )
  arrays = {k: np.asarray(v, dtype=dtype) for k, v in arrays.items()}
  arrays.update(
      hcore=padded(host.hcore, (n_pad, n_pad)).astype(dtype),
      orbital_labels=padded(host.orbital_labels, (n_pad, 4), fill=-1).astype(np.int32),
      atomic_numbers=padded(host.atomic_numbers, (atoms_pad,)).astype(np.int32),
      positions=padded(host.positions, (atoms_pad, 3)).astype(dtype),
  )
  return DFTProblem(**arrays, xc=xc, xc_chunk=xc_chunk)
