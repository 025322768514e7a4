"""The host builder: a molecule at a level of theory → a padded, bucketed `DFTProblem`.

  molecule ──PySCF (integrals.py, float64)──▶ HostIntegrals ──orthonormal basis, cast, pad──▶ DFTProblem

`build_problem` is the one way to make a problem: streams, evaluation, prediction and the tools all
call it. Shapes are rounded up to size buckets (`bucket`), so conformers and molecules of similar
size share one compiled program; `grow` pads an existing problem further, bit for bit as a larger
`pad_to` would have, so problems of one batch can share a shape.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
import scipy.linalg.blas
from pyscf import gto

from qpt import backends, integrals
from qpt.errors import InputError
from qpt.level import Level
from qpt.molecule import Molecule
from qpt.problem import DEFAULT_XC_CHUNK, LAYOUT, DFTProblem, Shape, as_shape

_AO_BLOCK = 4096  # grid points per block of the AO transform: its float64 result stays in cache


def build_problem(molecule: Molecule | gto.Mole, basis: str | Level | None = None,
                  xc: str | None = None, grid_level: int | None = None, eri: str | None = None,
                  dtype: str | None = None, *, level: Level | None = None,
                  xc_chunk: int = DEFAULT_XC_CHUNK, pad_to: Shape | None = None,
                  min_shape: Shape | None = None, ao_on_device: bool = False) -> DFTProblem:
  """The padded DFT problem for one conformer.

  The level of theory is either a `Level` (`level=`, or in place of `basis`) or given field by
  field; fields left out take `Level`'s defaults (def2-SVP, B3LYP5, grid level 3, dense ERIs,
  float32).

  Args:
    molecule: a `qpt.Molecule` or a `pyscf.gto.Mole` (whose basis is used if none is given).
    basis: basis set name as PySCF spells it ("def2-svp", "sto-3g", "6-31g").
    xc: "lda,vwn", "pbe", "b3lyp5" or "b3lyp", with PySCF's meanings.
    grid_level: PySCF grid level (0..9).
    eri: "dense" (exact integrals, Cholesky-factored) or "df" (density fitting, JK-fit basis).
    dtype: device precision. float64 needs JAX's float64 switched on first
      (`qpt.backends.enable_float64()`): without it JAX would silently compute in float32.
    level: the whole level of theory at once.
    xc_chunk: grid points per XC chunk (bounds device memory).
    pad_to: exact padded (n_ao, n_grid, n_aux, n_atoms, n_occ, n_cart, n_atom_prim,
      n_atom_cart); a problem larger than it is an error (the last four 0 or left out: the
      problem's own bucket).
    min_shape: pad at least to this shape, each size the larger of it and the problem's own bucket
      (a stream's running shape).
    ao_on_device: ship the grid's points and the basis, and let the device evaluate the AO
      values chunk by chunk (`qpt.ao_values`), instead of the host's φ X on every point
      (`ao_orth`): a fifth of the bytes, no g × n arrays in memory and no AO values on the host
      at all (the device sums the whole E_xc, `integrals.compute`), for the cost of evaluating
      them in the step (docs/results.md §2 measures the trade).
  """
  molecule, level = molecule_and_level(molecule, basis, xc, grid_level, eri, dtype, level)
  if isinstance(xc_chunk, bool) or not (isinstance(xc_chunk, numbers.Integral) and xc_chunk > 0):
    raise InputError(f"xc_chunk={xc_chunk!r}: must be a positive whole number of grid points")
  if level.dtype == "float64" and not backends.float64_enabled():
    raise InputError("dtype=float64 needs JAX's float64: call qpt.backends.enable_float64() first "
                     "(a float64 config does it through its backend)")
  if not isinstance(ao_on_device, bool):
    raise InputError(f"ao_on_device={ao_on_device!r}: must be True or False")
  host = integrals.compute(molecule.to_pyscf(level.basis), level,
                           ao_values_on_host=not ao_on_device)
  sizes = (len(host.occupation), len(host.weights), len(host.eri_factor), len(host.positions),
           int(np.count_nonzero(host.occupation))) + host.basis.sizes
  own = default_shape(sizes, xc_chunk)
  if pad_to is None:
    shape = own if min_shape is None else tuple(max(a, b) for a, b in zip(own, as_shape(min_shape)))
  else:
    shape = as_shape(pad_to)
    shape = shape[:4] + tuple(s or o for s, o in zip(shape[4:], own[4:]))
  if any(p < s for p, s in zip(shape, sizes)) or shape[1] % xc_chunk or shape[4] > shape[0]:
    raise InputError(f"pad_to={shape} is smaller than the problem {sizes}, n_grid is not a "
                     f"multiple of xc_chunk={xc_chunk}, or n_occ exceeds n_ao")
  return _pad(host, level, xc_chunk, shape, ao_on_device)


def molecule_and_level(molecule: Molecule | gto.Mole, basis: str | Level | None = None,
                       xc: str | None = None, grid_level: int | None = None,
                       eri: str | None = None, dtype: str | None = None,
                       level: Level | None = None,
                       defaults: Level = Level()) -> tuple[Molecule, Level]:
  """A `Molecule` and a `Level` from `build_problem`'s arguments (a Mole's basis if none given);
  fields not given are those of `defaults`."""
  if isinstance(basis, Level):
    basis, level = None, basis
  if isinstance(molecule, gto.Mole):
    if molecule.cart:
      raise InputError("pyscf Mole uses Cartesian d/f functions; QPT uses spherical ones")
    if level is None and basis is None:
      if not isinstance(molecule.basis, str):
        raise InputError("pyscf Mole has a per-element basis; pass basis= with one basis name")
      basis = molecule.basis
    molecule = Molecule.from_pyscf(molecule)
  if not isinstance(molecule, Molecule):
    hint = " (a built-in one: qpt.molecules.get(name))" if isinstance(molecule, str) else ""
    raise InputError(f"molecule={molecule!r:.40}: give a qpt.Molecule or a pyscf Mole{hint}")
  given = {k: v for k, v in dict(basis=basis, xc=xc, grid_level=grid_level, eri=eri,
                                 dtype=dtype).items() if v is not None}
  if level is None:
    return molecule, dataclasses.replace(defaults, **given)  # validated and normalised by Level
  if given:
    raise InputError(f"give the level of theory once: level= or {', '.join(given)}, not both")
  return molecule, level


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


def default_shape(sizes: Shape, xc_chunk: int) -> Shape:
  """The bucketed padded shape for unpadded sizes (`problem.SHAPE_NAMES`).

  n_occ never exceeds n_ao: the energy reads the n_occ lowest of n_ao orbitals.
  """
  shape = tuple(bucket(s, m) for s, m in zip(sizes, (4, xc_chunk, 16, 4, 8, 4, 4, 4)))
  return shape[:4] + (min(shape[4], shape[0]),) + shape[5:]


def max_shape(*shapes: Shape) -> Shape:
  """The element-wise largest of padded shapes: the smallest shape every one of them fits."""
  return tuple(int(max(sizes)) for sizes in zip(*(as_shape(s) for s in shapes)))


def grow_alike(problems: list[DFTProblem], at_least: Shape | None = None) -> list[DFTProblem]:
  """`problems` padded to one shape, the largest of theirs (and of `at_least`): one compiled
  program then serves them all."""
  shape = max_shape(*(p.shapes for p in problems), *([at_least] if at_least else []))
  return [grow(p, shape) for p in problems]


def grow(problem: DFTProblem, shape: Shape) -> DFTProblem:
  """`problem` padded (further) to `shape`, each size ≥ the current one; bitwise as a build with
  that `pad_to` would be."""
  shape = as_shape(shape)
  if problem.shapes == shape:
    return problem
  arrays = {name: np.asarray(getattr(problem, name)) for name in LAYOUT
            if getattr(problem, name) is not None}
  return dataclasses.replace(problem, **{name: _padded(name, a, shape, a.dtype)
                                         for name, a in arrays.items()})


def _pad(host: integrals.HostIntegrals, level: Level, xc_chunk: int, shape: Shape,
         ao_on_device: bool) -> DFTProblem:
  """Transforms host integrals to the device's representation, casts them, pads to `shape`.

  Each field is written once, cast on the way, into its padded array: the AO values are the bulk
  of a problem (ethanol/def2-SVP: 115 of 137 MB), and a float64 copy of φ X plus a second padded
  copy cost the worker more than the integrals themselves. With `ao_on_device` they are left out:
  the device evaluates them from the points and the basis through T = C X (Cartesian → real
  spherical → orthonormal), formed here in float64.
  """
  dtype = level.dtype
  x, x_inv = host.orthogonalizer, np.linalg.inv(host.orthogonalizer)
  energy_hi = np.float32(host.energy_ref) if dtype == "float32" else host.energy_ref
  basis = host.basis
  real = dict(
      overlap=host.overlap, hcore=host.hcore, density_ref=host.density_ref,
      orthogonalizer=x, orthogonalizer_inv=x_inv,
      fock_ref_nonxc_orth=x.T @ host.fock_ref_nonxc @ x,
      exchange_ref_orth=x.T @ host.exchange_ref @ x,
      density_ref_orth=x_inv @ host.density_ref @ x_inv.T,
      atom_exponents=basis.atom_exponents, atom_radial=basis.atom_radial,
      cart_to_orth=basis.cart_to_sph @ x,
      positions_lo=_low_part(host.positions, dtype),
      points=np.stack([host.coords.T, _low_part(host.coords.T, dtype)]),
      weights=host.weights, exc_ref=host.exc_ref,
      occupation=host.occupation[:np.count_nonzero(host.occupation)],
      ao_mask=np.ones(len(host.occupation)),
      energy_ref=np.array([energy_hi, host.energy_ref - np.float64(energy_hi)]),
      positions=host.positions)
  arrays = {name: _padded(name, a, shape, dtype) for name, a in real.items()}
  arrays["eri_orth"] = _padding("eri_orth", host.eri_factor.shape, shape, dtype)
  _write_orthonormal_factor(host.eri_factor, x, arrays["eri_orth"])
  integer = dict(orbital_labels=host.orbital_labels, atomic_numbers=host.atomic_numbers,
                 cart_atoms=basis.cart_atoms, cart_locals=basis.cart_locals,
                 cart_powers=basis.cart_powers)
  arrays.update({name: _padded(name, a, shape, np.int32) for name, a in integer.items()})
  if not ao_on_device:
    c, n_grid, n_ao = host.ao.shape
    arrays["ao_orth"] = ao_orth = _padding("ao_orth", (c, n_ao, n_grid), shape, dtype)
    for start in range(0, n_grid, _AO_BLOCK):  # φ X a block of points at a time, cast as written
      block = slice(start, min(start + _AO_BLOCK, n_grid))
      for component in range(c):  # the device's layout: points the fastest axis
        ao_orth[component, :n_ao, block] = _times_upper(host.ao[component, block], x).T
  return DFTProblem(**arrays, level=level, xc_chunk=xc_chunk)


def _low_part(a: np.ndarray, dtype) -> np.ndarray:
  """What casting float64 `a` to `dtype` loses: `a` = cast + this, to ~1e-14 relative in float32
  pairs (a point 0.01 Bohr from a nucleus keeps its displacement's float64 accuracy)."""
  return a - a.astype(dtype).astype(np.float64)


def _times_upper(a: np.ndarray, x: np.ndarray) -> np.ndarray:
  """a @ x (m, n) for an upper triangular x (n, n), float64: BLAS's triangular product does half
  a matmul's multiplications (X = L⁻ᵀ is triangular; docs/results.md §13)."""
  if a.flags.c_contiguous:  # a C-ordered a is the Fortran matrix aᵀ: (a X)ᵀ = Xᵀ aᵀ, Xᵀ lower
    return scipy.linalg.blas.dtrmm(1.0, x.T, a.T, side=0, lower=1).T
  return scipy.linalg.blas.dtrmm(1.0, x, a, side=1, lower=0)  # Fortran-ordered (PySCF's AOs)


def _write_orthonormal_factor(b: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
  """out[P, :n, :n] = Xᵀ B_P X, cast to out's dtype, for symmetric B_P (n_aux, n, n) float64.

  One BLAS call gives every Xᵀ B_P at once, then one call per P multiplies by X and the result is
  cast into `out` as it is written: no transposed copy of the whole float64 factor, which took
  longer than both products (docs/results.md §13). Per P, (n, n) operands stay in cache.
  """
  n_aux, n, _ = b.shape
  # A C-ordered (n_aux·n, n) array is the Fortran (n, n_aux·n) matrix [B_1, …, B_P] (each B_P
  # symmetric); Xᵀ times it is [Xᵀ B_1, …], column block P Fortran-ordered.
  xt_b = scipy.linalg.blas.dtrmm(1.0, x.T, b.reshape(n_aux * n, n).T, side=0, lower=1)
  for p in range(n_aux):
    xt_b_x = scipy.linalg.blas.dtrmm(1.0, x, xt_b[:, p * n:(p + 1) * n], side=1, lower=0)
    out[p, :n, :n] = xt_b_x


def _padding(name: str, real_shape: tuple[int, ...], shape: Shape, dtype) -> np.ndarray:
  """The padded array of field `name` for real data of `real_shape`, holding only its padding."""
  axes, fill = LAYOUT[name]
  target = tuple(n if axis is None else shape[axis] for n, axis in zip(real_shape, axes))
  # zeros: fresh zero pages from the OS, where full(0) writes every byte (of the AO values too)
  new = (np.zeros(target, dtype) if fill in (0, "identity") else np.full(target, fill, dtype))
  if fill == "identity":  # padded AOs: orthonormal, decoupled functions
    idx = np.arange(real_shape[-1], target[-1])
    new[idx, idx] = 1
  return new


def _padded(name: str, real: np.ndarray, shape: Shape, dtype) -> np.ndarray:
  """`real` cast to `dtype` and padded as `LAYOUT` says for field `name`."""
  new = _padding(name, real.shape, shape, dtype)
  new[tuple(slice(0, n) for n in real.shape)] = real
  return new
