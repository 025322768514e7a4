"""`DFTProblem`: one conformer's DFT, as a pytree of padded, static-shape device arrays.

This is the device side's input type; `qpt.build` makes it on the host (PySCF, float64) and nothing
here imports the host side.

Two bases, and why. What a model reads (S, Hcore, D0, X) is in the AO basis, as PySCF has it.
What the energy reads is in the orthonormal basis φ' = φ X (X = L⁻ᵀ, S = L Lᵀ), transformed on the
host in float64 (AO values on the grid too, or on the device through a transform made in float64
on the host, `qpt.ao_values`): the device then builds the density as P = U diag(occ) Uᵀ straight
from the eigenvectors, with no float32 X·P·Xᵀ. That product cancels badly when S is
ill-conditioned and its rounding errors enter the energy at first order (uracil/def2-SVP,
cond S ≈ 5e3: 59 µHa; docs/numerics.md).

Shapes are rounded up to size buckets (`build.bucket`), so conformers and molecules of similar size
share one compiled program. Padding is inert by construction (`LAYOUT` says how each field pads):
  * padded AOs have S = X = X⁻¹ = 1 on their diagonal and zero everywhere else (AO values, ERI
    factor, reference density and exchange; `cart_to_orth`'s column is zero);
  * padded Cartesian functions have no place in any atom's block (`NO_PLACE`), so their radial
    part is 0; padded primitives (per atom) have exponent 0 and no coefficient: both add 0 to
    every AO value;
  * padded grid points have weight 0, AO values 0 (they lie `FAR` away) and e_xc(ρ0) = 0;
  * padded auxiliary functions have a zero ERI factor;
  * padded occupied orbitals have occupation 0 (the energy reads only the `n_occ` lowest orbitals,
    so its cost follows the electrons, not the basis).
`eigen.masked` masks padded rows/columns of every Hamiltonian and pins their eigenvalues far
above the real spectrum, so padded orbitals are never occupied and get zero gradient.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from qpt import xc
from qpt.errors import InputError
from qpt.level import Level

FAR = 1e3  # Bohr: where padded grid points lie, hi and lo; every Gaussian underflows to 0 there
NO_PLACE = 2**30  # `cart_locals` of a padded Cartesian function: past every atom's block
DEFAULT_XC_CHUNK = 4096  # grid points per XC chunk: bounds device memory at chunk × n_ao × 4 values


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DFTProblem:
  """A padded DFT problem. n = n_ao (padded), g = n_grid (padded, a multiple of xc_chunk), c = 1 or 4,
  m = n_occ (padded number of occupied orbitals).

  AO basis (device dtype, `level.dtype`; meanings as in `integrals.HostIntegrals`):
    overlap (n, n), hcore (n, n) Hartree, density_ref (n, n) the MINAO density D0,
    orthogonalizer (n, n) X, orthogonalizer_inv (n, n) X⁻¹ = Lᵀ.
  Orthonormal basis (what the energy reads):
    eri_orth (n_aux, n, n) Xᵀ B_P X; fock_ref_nonxc_orth (n, n) Xᵀ G0 X, Hartree;
    exchange_ref_orth (n, n) K[P0] = Xᵀ K[D0] X, Hartree;
    density_ref_orth (n, n) P0 = X⁻¹ D0 X⁻ᵀ.
  The basis, for AO values on the grid (`qpt.ao_values`; q = n_cart Cartesian functions, a =
  n_atoms, k = n_atom_prim primitives and c = n_atom_cart Cartesian functions per atom; in blocks
  per atom, as `integrals.CartesianBasis` says why):
    atom_exponents (a, k) Bohr⁻²; atom_radial (a, c, k) the contraction coefficient of the atom's
    primitive k in its Cartesian function c (PySCF's normalisation);
    cart_atoms (q,) int32, cart_locals (q,) int32: function q's atom and place in its block;
    cart_powers (q, 3) int32 the (a, b, c) of xᵃ yᵇ zᶜ;
    cart_to_orth (q, n) T with φ X = φ_cart T (Cartesian → real spherical → orthonormal, formed
    in float64 on the host); positions_lo (a, 3) Bohr, what float32 `positions` lost.
  Grid and bookkeeping:
    points (2, 3, g) Bohr, hi and lo parts (hi + lo is the float64 coordinate);
    weights (g,) Bohr³; exc_ref (g,) e_xc(ρ0) per point, Hartree/Bohr³ (float64 libxc values,
      cast), or 0 in a problem built with `ao_on_device`, whose E_ref leaves E_xc[D0] out;
    occupation (m,) of the m lowest orbitals (2, or 0 for padding); ao_mask (n,) 1 for real AOs;
    energy_ref (2,): E_nuc + E[D0] in Hartree split as hi + lo so float32 carries it to ~1e-13
      relative; `reference_energy` adds them in float64 on the host.
  What a model reads besides (a = n_atoms, padded):
    orbital_labels (n, 4) int32 (atom, shell, l, m; padding −1); atomic_numbers (a,) int32
    (padding 0); positions (a, 3) Bohr.
  Static fields (part of the compiled program's identity):
    level: the level of theory the arrays were built at (`qpt.level.Level`).
    xc_chunk: grid points per chunk of the XC quadrature.
  AO values on the grid, or None:
    ao_orth (c, n, g) φ X and its gradients on every point (components as PySCF's eval_ao
    orders them; points the fastest axis, as the device's products read them), formed by the
    host in float64; None in a problem built with `ao_on_device`, whose device
    evaluates them chunk by chunk from the basis above (`qpt.ao_values`), or holds them for a
    step that walks the grid several times (`xc_quadrature.with_ao_values`).
  """

  overlap: jax.Array
  hcore: jax.Array
  density_ref: jax.Array
  orthogonalizer: jax.Array
  orthogonalizer_inv: jax.Array
  eri_orth: jax.Array
  fock_ref_nonxc_orth: jax.Array
  exchange_ref_orth: jax.Array
  density_ref_orth: jax.Array
  atom_exponents: jax.Array
  atom_radial: jax.Array
  cart_atoms: jax.Array
  cart_locals: jax.Array
  cart_powers: jax.Array
  cart_to_orth: jax.Array
  positions_lo: jax.Array
  points: jax.Array
  weights: jax.Array
  exc_ref: jax.Array
  occupation: jax.Array
  ao_mask: jax.Array
  energy_ref: jax.Array
  orbital_labels: jax.Array
  atomic_numbers: jax.Array
  positions: jax.Array
  level: Level = dataclasses.field(metadata=dict(static=True), default=Level())
  xc_chunk: int = dataclasses.field(metadata=dict(static=True), default=DEFAULT_XC_CHUNK)
  ao_orth: jax.Array | None = None

  @property
  def functional(self) -> xc.Functional:
    return self.level.functional

  @property
  def dtype(self):
    return self.overlap.dtype

  @property
  def shapes(self) -> Shape:
    """(n_ao, n_grid, n_aux, n_atoms, n_occ, n_cart, n_atom_prim, n_atom_cart), padded: the
    program's static shape."""
    return (self.overlap.shape[-1], self.weights.shape[-1], self.eri_orth.shape[-3],
            self.positions.shape[-2], self.occupation.shape[-1], self.cart_atoms.shape[-1],
            self.atom_radial.shape[-1], self.atom_radial.shape[-2])


def reference_energy(problem: DFTProblem | np.ndarray) -> float | np.ndarray:
  """E_nuc + E[D0] in Hartree, float64 on the host (an array for a batch of problems).

  `problem` may also be the `energy_ref` array itself, (..., 2) hi and lo parts.
  """
  hi_lo = np.asarray(getattr(problem, "energy_ref", problem), dtype=np.float64)
  total = hi_lo[..., 0] + hi_lo[..., 1]
  return float(total) if total.ndim == 0 else total


def mo_occupations(problem: DFTProblem) -> np.ndarray:
  """(n_real,) float64 on the host: the occupation of every real orbital, lowest energy first."""
  n_real = int(np.sum(problem.ao_mask))
  occ = np.zeros(n_real)
  occupied = np.asarray(problem.occupation, np.float64)
  occ[:min(len(occupied), n_real)] = occupied[:n_real]
  return occ


Shape = tuple[int, int, int, int, int, int, int, int]  # SHAPE_NAMES
SHAPE_NAMES = ("n_ao", "n_grid", "n_aux", "n_atoms", "n_occ", "n_cart", "n_atom_prim",
               "n_atom_cart")
_AO, _GRID, _AUX, _ATOM, _OCC, _CART, _ATOM_PRIM, _ATOM_CART = range(8)
LAYOUT = dict(  # field → (which size each axis has, None = fixed; what padding holds)
    overlap=((_AO, _AO), "identity"), hcore=((_AO, _AO), 0), density_ref=((_AO, _AO), 0),
    orthogonalizer=((_AO, _AO), "identity"), orthogonalizer_inv=((_AO, _AO), "identity"),
    eri_orth=((_AUX, _AO, _AO), 0), fock_ref_nonxc_orth=((_AO, _AO), 0),
    exchange_ref_orth=((_AO, _AO), 0), density_ref_orth=((_AO, _AO), 0),
    atom_exponents=((_ATOM, _ATOM_PRIM), 0), atom_radial=((_ATOM, _ATOM_CART, _ATOM_PRIM), 0),
    cart_atoms=((_CART,), 0), cart_locals=((_CART,), NO_PLACE), cart_powers=((_CART, None), 0),
    cart_to_orth=((_CART, _AO), 0),
    positions_lo=((_ATOM, None), 0), points=((None, None, _GRID), FAR),
    ao_orth=((None, _AO, _GRID), 0), weights=((_GRID,), 0), exc_ref=((_GRID,), 0),
    occupation=((_OCC,), 0), ao_mask=((_AO,), 0), energy_ref=((None,), 0),
    orbital_labels=((_AO, None), -1), atomic_numbers=((_ATOM,), 0),
    positions=((_ATOM, None), 0))


def as_shape(sizes) -> Shape:
  """A padded shape from 8 sizes, or from what checkpoints and configs written before some were
  sizes hold (0 for those: each problem's own bucket): 4 or 5 (before n_occ, n_cart and the
  basis's), or 7 (…, n_cart, n_prim: before the basis came in blocks per atom; its n_prim, a
  count of all primitives, is dropped)."""
  try:
    sizes = tuple(int(s) for s in sizes)
  except (TypeError, ValueError):
    raise InputError(f"a padded shape is ({', '.join(SHAPE_NAMES)}); got {sizes!r}") from None
  if len(sizes) == 7:
    sizes = sizes[:6] + (0, 0)
  if len(sizes) in (4, 5):
    sizes += (0,) * (8 - len(sizes))
  if len(sizes) != 8 or min(sizes) < 0:
    raise InputError(f"a padded shape is ({', '.join(SHAPE_NAMES)}); got {sizes}")
  return sizes


assert set(LAYOUT) == {f.name for f in dataclasses.fields(DFTProblem)
                       if not f.metadata.get("static")}, "LAYOUT must cover every DFTProblem array"
