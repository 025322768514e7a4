"""Host-side integrals: everything the device needs, computed once per conformer by PySCF in float64.

The device never sees a basis set or a grid builder, only arrays:

  molecule ──PySCF──▶ HostIntegrals (float64, unpadded) ──build.py──▶ DFTProblem (padded, device dtype)

Why each piece is here rather than on the device:
  * S, Hcore, the ERI factor, the grid and AO values need libcint / PySCF's grids. A problem
    built with `ao_on_device` ships the basis instead (`cartesian_basis`): the device evaluates
    its own AO values, and the host none at all (`compute`: no ρ0, E_xc summed on the device).
  * The reference density D0 (MINAO, PySCF's default start) and the energy terms that depend only on
    it — E_nuc + E[D0] and G0 = Hcore + J[D0] − a/2·K[D0] — are large numbers (hundreds of Hartree).
    They are computed here in float64 so that the device only ever handles the *difference*
    ΔD = D − D0, whose energy contribution is ~1 Ha: float32 then keeps µHa accuracy
    (docs/numerics.md: 352 µHa naive vs 4 µHa this way, uracil/def2-SVP).

Electron repulsion reaches the device as one 3-index factor B (n_aux, n_ao, n_ao) with
(μν|λσ) ≈ Σ_P B_Pμν B_Pλσ, so J and K are contracted the same way for both modes:
  * eri="dense": pivoted Cholesky of the exact 4-index ERI matrix (from PySCF's 4-fold packed
    integrals), stopped when the largest remaining diagonal is below the device dtype's
    CHOLESKY_TOL. Every integral is then exact to that tolerance, and B is far smaller than the
    dense tensor (uracil/def2-SVP in float32: 1.2 GB dense, 121 MB as B).
  * eri="df": density fitting with PySCF's JK-fit auxiliary basis (`labels.auxiliary_basis`),
    exactly the tensor the density-fitted PySCF reference (`labels.pyscf_rks`) uses for J and K.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyscf.df
import scipy.linalg
import scipy.linalg.lapack
from pyscf import ao2mo, dft, gto, lib, scf

from qpt import ao_values, labels
from qpt.errors import InputError
from qpt.level import Level

# Hartree: the largest integral error of eri="dense", per device dtype. float32 rounds integrals of
# ~1 Ha at 6e-8 whatever the factor; 1e-8 moves the energy by < 0.1 µHa (ethanol, uracil/def2-SVP)
# with 30 % fewer factor rows than 1e-10 — less host time, fewer bytes, cheaper J and K on the
# device (docs/numerics.md §5). float64 keeps 1e-10.
CHOLESKY_TOL = {"float32": 1e-8, "float64": 1e-10}


@dataclasses.dataclass(frozen=True)
class HostIntegrals:
  """Float64 arrays for one conformer, unpadded. n = n_ao, g = n_grid, c = 1 (LDA) or 4 (GGA).

  Attributes:
    overlap: (n, n) S.
    orthogonalizer: (n, n) X = L⁻ᵀ with S = L Lᵀ, so Xᵀ S X = 1 (upper triangular).
    eri_factor: (n_aux, n, n) B with (μν|λσ) ≈ Σ_P B_Pμν B_Pλσ, Hartree^½.
    density_ref: (n, n) D0, the MINAO density (electrons; tr(D0 S) = n_electrons).
    fock_ref_nonxc: (n, n) G0 = Hcore + J[D0] − a/2·K[D0], Hartree (a: exact-exchange fraction).
    exchange_ref: (n, n) K[D0], Hartree.
    energy_ref: E_nuc + E[D0], Hartree: the total energy of the reference density.
    ao: (c, g, n) AO values and, for GGA, their x, y, z derivatives (Bohr^-3/2, Bohr^-5/2);
      None when the device evaluates them (`compute`'s ao_values_on_host).
    coords: (g, 3) grid points, Bohr; weights: (g,) quadrature weights, Bohr^3.
    basis: the basis as arrays, for AO values on the device (`CartesianBasis`).
    exc_ref: (g,) e_xc(ρ0) = ρ0·ε_xc per grid point, Hartree/Bohr^3 (PySCF's libxc); 0 without
      host AO values.
    occupation: (n,) 2 for the n_electrons/2 lowest orbitals, else 0.
    energy_nuc: nuclear repulsion, Hartree.
    hcore: (n, n) kinetic + nuclear attraction, Hartree.
    orbital_labels: (n, 4) int per AO: atom index, shell index among the atom's shells of the same
      l (1s → 0, 2s → 1, 2p → 0), l, and m as PySCF orders it (0..2l; p: x, y, z).
    atomic_numbers: (n_atoms,) int; positions: (n_atoms, 3) Bohr.
  """

  overlap: np.ndarray
  orthogonalizer: np.ndarray
  eri_factor: np.ndarray
  density_ref: np.ndarray
  fock_ref_nonxc: np.ndarray
  exchange_ref: np.ndarray
  energy_ref: float
  ao: np.ndarray
  coords: np.ndarray
  weights: np.ndarray
  exc_ref: np.ndarray
  occupation: np.ndarray
  energy_nuc: float
  hcore: np.ndarray
  orbital_labels: np.ndarray
  atomic_numbers: np.ndarray
  positions: np.ndarray
  basis: CartesianBasis


@dataclasses.dataclass(frozen=True)
class CartesianBasis:
  """A basis as the device evaluates it (`qpt.ao_values`): q Cartesian functions R(r²) xᵃ yᵇ zᶜ,
  n real-spherical AOs, in blocks per atom (a atoms, at most k primitives and c Cartesian
  functions on one atom).

    atom_exponents (a, k) α of each atom's primitives, Bohr⁻² (0 past the atom's own);
    atom_radial (a, c, k) the coefficient of the atom's primitive in each of its Cartesian
      functions' R = Σ C e^(−α r²) (PySCF's normalised contraction coefficients, so φ_sph =
      φ_cart · cart_to_sph is exactly PySCF's `eval_ao`; 0 past the atom's own);
    cart_atoms (q,) int and cart_locals (q,) int: function q's atom, and its place among that
      atom's c Cartesian functions;
    cart_powers (q, 3) int (a, b, c);
    cart_to_sph (q, n) block-diagonal: PySCF's Cartesian → real-spherical matrices, per shell.

  Why blocks: a Cartesian function reads only its own shell's few primitives (uracil/def2-SVP:
  228 nonzero coefficients in a 144 × 120 Cartesian × primitive matrix), and all of them sit on
  its atom. One (c, k) block per atom keeps the device's radial product small and dense
  (docs/results.md §2).
  """

  atom_exponents: np.ndarray
  atom_radial: np.ndarray
  cart_atoms: np.ndarray
  cart_locals: np.ndarray
  cart_powers: np.ndarray
  cart_to_sph: np.ndarray

  @property
  def sizes(self) -> tuple[int, int, int]:
    """(q, k, c): Cartesian functions, and primitives and Cartesian functions per atom."""
    return len(self.cart_atoms), self.atom_radial.shape[2], self.atom_radial.shape[1]


def cartesian_basis(mol: gto.Mole) -> CartesianBasis:
  """`mol`'s basis as `CartesianBasis` arrays, AOs in PySCF's order (a general contraction's
  functions one after another, each 2l + 1 AOs)."""
  exponents = [[] for _ in range(mol.natm)]  # per atom
  rows = [[] for _ in range(mol.natm)]  # per atom: (first primitive, coefficients)
  cart_atoms, cart_locals, powers, blocks = [], [], [], []
  for shell in range(mol.nbas):
    l, atom = mol.bas_angular(shell), mol.bas_atom(shell)
    if l > ao_values.MAX_L:
      raise InputError(f"basis {mol.basis!r} has l = {l} functions on {mol.atom_symbol(atom)}; "
                       f"AO values on the device go up to l = {ao_values.MAX_L}")
    first = len(exponents[atom])
    exponents[atom] += list(mol.bas_exp(shell))
    for column in mol._libcint_ctr_coeff(shell).T:  # (K,) per contracted function
      for power in ao_values.cartesian_powers(l):
        cart_atoms.append(atom)
        cart_locals.append(len(rows[atom]))
        rows[atom].append((first, column))
        powers.append(power)
      blocks.append(gto.cart2sph(l))
  k = max(len(e) for e in exponents)
  c = max(len(r) for r in rows)
  atom_exponents = np.zeros((mol.natm, k))
  atom_radial = np.zeros((mol.natm, c, k))
  for atom in range(mol.natm):
    atom_exponents[atom, :len(exponents[atom])] = exponents[atom]
    for local, (first, column) in enumerate(rows[atom]):
      atom_radial[atom, local, first:first + len(column)] = column
  return CartesianBasis(atom_exponents, atom_radial, np.array(cart_atoms), np.array(cart_locals),
                        np.array(powers).reshape(-1, 3), scipy.linalg.block_diag(*blocks))


def compute(mol: gto.Mole, level: Level, ao_values_on_host: bool = True) -> HostIntegrals:
  """All host-side arrays for `mol` (a built PySCF Mole, in `level.basis`) at `level`.

  ao_values_on_host=False (a problem whose device evaluates its AO values): no AO values here at
  all, so no ρ0 on the grid either. `ao` is None, `exc_ref` is 0, and `energy_ref` leaves out
  E_xc[D0]: the device then sums the whole E_xc[ρ] (float32 holds it to ~1 µHa as a total,
  docs/numerics.md §1), and E_ref + ΔE is the same total energy.
  """
  functional = level.functional
  overlap = mol.intor_symmetric("int1e_ovlp")
  hcore = mol.intor_symmetric("int1e_kin") + mol.intor_symmetric("int1e_nuc")
  orthogonalizer = orthogonalizer_of(overlap)
  density_ref = scf.hf.init_guess_by_minao(mol)
  n_occ = mol.nelectron // 2
  occupation = np.zeros(mol.nao)
  occupation[:n_occ] = 2.0

  b, (j_ref, k_ref) = repulsion(mol, level.eri, density_ref, CHOLESKY_TOL[level.dtype])
  a = functional.exact_exchange
  fock_ref_nonxc = hcore + j_ref - 0.5 * a * k_ref

  basis = cartesian_basis(mol)
  coords, ao, weights = quadrature(mol, level, density_ref, ao_values_on_host)
  if ao_values_on_host:
    exc_ref = functional_energy_density_host(level.xc, rho_on_grid(ao, density_ref))
  else:
    exc_ref = np.zeros_like(weights)
  e_xc_ref = float(np.dot(weights, exc_ref))
  energy_nuc = mol.energy_nuc()
  energy_ref = (energy_nuc + np.vdot(density_ref, hcore) + 0.5 * np.vdot(density_ref, j_ref)
                - 0.25 * a * np.vdot(density_ref, k_ref) + e_xc_ref)
  return HostIntegrals(overlap, orthogonalizer, b, density_ref, fock_ref_nonxc, k_ref,
                       float(energy_ref), ao, coords, weights, exc_ref, occupation,
                       float(energy_nuc), hcore, orbital_labels(mol), mol.atom_charges(),
                       mol.atom_coords(unit="Bohr"), basis)


def orthogonalizer_of(overlap: np.ndarray) -> np.ndarray:
  """X = L⁻ᵀ (n, n) with S = L Lᵀ, so that Xᵀ S X = 1: the orthonormal basis φ' = φ X.

  X is upper triangular, with exact zeros below the diagonal (a triangular inverse, not a general
  one), so products with it may use BLAS's triangular kernels (`build.py`).
  """
  inverse, info = scipy.linalg.lapack.dtrtri(np.linalg.cholesky(overlap), lower=1)
  if info:
    raise RuntimeError(f"dtrtri: info {info}")
  return inverse.T


def orbital_labels(mol: gto.Mole) -> np.ndarray:
  """(n_ao, 4) int: atom, shell index among the atom's shells of that l, l, m — per AO."""
  labels = []
  seen = {}  # (atom, l) → shells so far
  for shell in range(mol.nbas):
    atom, l = mol.bas_atom(shell), mol.bas_angular(shell)
    for _ in range(mol.bas_nctr(shell)):  # a general contraction holds several shells
      index = seen.get((atom, l), 0)
      seen[(atom, l)] = index + 1
      labels += [(atom, index, l, m) for m in range(2 * l + 1)]
  return np.array(labels, dtype=np.int64).reshape(-1, 4)


# ---- electron repulsion ---------------------------------------------------------------------


def repulsion(mol: gto.Mole, eri: str, density: np.ndarray,
              cholesky_tol: float = CHOLESKY_TOL["float64"]
              ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
  """B (n_aux, n, n) with (μν|λσ) ≈ Σ_P B_Pμν B_Pλσ, and (J[D], K[D]) (n, n) of `density`.

  eri="dense": B by pivoted Cholesky of the exact integrals, every integral to `cholesky_tol`
  (Hartree), and J, K from those integrals themselves (PySCF's incore contraction: exact, and
  ~10× cheaper than contracting B).
  eri="df": B from density fitting, and J, K contracted from it as the device will.
  """
  if eri == "df":
    b = lib.unpack_tril(pyscf.df.incore.cholesky_eri(mol, auxbasis=labels.auxiliary_basis(mol)))
    return b, coulomb_exchange(b, density)
  packed = mol.intor("int2e", aosym="s8")  # half the work of the 4-fold matrix Cholesky needs
  j, k = scf.hf.dot_eri_dm(packed, density, hermi=1)
  b = lib.unpack_tril(pivoted_cholesky(ao2mo.restore(4, packed, mol.nao), cholesky_tol))
  return b, (j, k)


def pivoted_cholesky(matrix: np.ndarray, tol: float) -> np.ndarray:
  """Rows L (rank, m) with matrix ≈ Lᵀ L, for a symmetric positive semi-definite (m, m) matrix.

  LAPACK's blocked pivoted Cholesky (dpstrf), stopped when every remaining diagonal is below `tol`;
  then every entry of the residual is below `tol` too (it is positive semi-definite, so
  |R_ij| ≤ √(R_ii R_jj)). Ethanol/def2-SVP: rank 946 of 2628 at 1e-8 (1337 at 1e-10).
  """
  # A symmetric C-ordered matrix is its own Fortran-ordered transpose: no reordering copy.
  factor, pivots, rank, info = scipy.linalg.lapack.dpstrf(matrix.T, tol=tol, lower=1)
  if info < 0:
    raise RuntimeError(f"dpstrf: argument {-info} is invalid")
  rows = np.empty((rank, matrix.shape[0]))
  rows[:, pivots - 1] = np.tril(factor[:, :rank]).T  # PᵀAP = L Lᵀ, pivots 1-based
  return rows


def coulomb_exchange(b: np.ndarray, density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """J[D] and K[D] (n, n) from the factor b (n_aux, n, n) and a symmetric density D, float64 host
  version, one BLAS call per product.

  K goes through D's eigen-decomposition D = V diag(w) Vᵀ, keeping the r non-negligible terms:
  K = Σ_P (B_P V) diag(w) (B_P V)ᵀ costs 2·n_aux·n²·r, where the product B_P D B_P costs
  2·n_aux·n³. The MINAO density has the minimal basis' rank (naphthalene/def2-TZVP: r = 58 of
  n = 358; K ~10× sooner, equal to 5e-13: docs/results.md §3).
  """
  n_aux, n, _ = b.shape
  flat = b.reshape(n_aux, n * n)
  j = (flat.T @ (flat @ density.ravel())).reshape(n, n)
  w, v = np.linalg.eigh(density)
  keep = np.abs(w) > 1e-12 * np.abs(w).max(initial=0.0)
  w, v = w[keep], v[:, keep]
  bv = (b.reshape(n_aux * n, n) @ v).reshape(n_aux, n, len(w))  # B_P V
  bv = bv.transpose(1, 0, 2).reshape(n, n_aux * len(w))  # [B_1 V, …, B_P V], (n, n_aux·r)
  return j, (bv * np.tile(w, n_aux)) @ bv.T


# ---- exchange-correlation quadrature ---------------------------------------------------------


def quadrature(mol: gto.Mole, level: Level, density_ref: np.ndarray,
               with_ao: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
  """Points (g, 3) Bohr, AO values (c, g, n) (None unless `with_ao`) and weights (g,) Bohr³ on
  the grid of the PySCF reference at `level`.

  PySCF drops grid points where the initial density is negligible (`small_rho_cutoff`) when it first
  builds the grid; the reference's RKS (`labels.pyscf_rks`) builds it from the MINAO density, and
  so do we, with that very object: both codes integrate on the same points.
  """
  grids = labels.pyscf_rks(mol, level, density_ref=density_ref).grids
  if not with_ao:
    return np.asarray(grids.coords), None, np.asarray(grids.weights)
  ao = dft.numint.NumInt().eval_ao(mol, grids.coords, deriv=1 if level.functional.is_gga else 0)
  # LDA: (g, n) → (1, g, n). Left in PySCF's memory order (points fastest): every use is a
  # matmul, which reads either order, and a transposing copy would cost more than eval_ao itself.
  ao = ao.reshape(-1, *ao.shape[-2:])
  return np.asarray(grids.coords), ao, np.asarray(grids.weights)


def rho_on_grid(ao: np.ndarray, density: np.ndarray) -> np.ndarray:
  """ρ (and ∇ρ for GGA) on the grid, (c, g), from AO values (c, g, n) and a density matrix.

  Computed on the transposed views (n, g), which are contiguous for PySCF's AO values.
  """
  ao_t = ao.transpose(0, 2, 1)
  d_ao = density @ ao_t[0]  # (n, g); D is symmetric
  rho = np.einsum("ig,ig->g", d_ao, ao_t[0])[None]
  if ao.shape[0] == 1:
    return rho
  grad = 2.0 * np.einsum("xig,ig->xg", ao_t[1:4], d_ao)
  return np.concatenate([rho, grad])


def functional_energy_density_host(xc: str, rho: np.ndarray) -> np.ndarray:
  """e = ρ·ε_xc per grid point (g,), float64, from PySCF's libxc: the host's reference values."""
  exc = dft.libxc.eval_xc(xc, rho if rho.shape[0] > 1 else rho[0], spin=0, deriv=0)[0]
  return rho[0] * exc
