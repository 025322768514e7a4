"""Closed-shell exchange-correlation functionals in JAX, with PySCF's names.

A functional string means exactly what `pyscf.dft.libxc.parse_xc` (PySCF 2.14,
libxc 7.0.0) says it means:

  lda, slater            1.0 Slater exchange                      (libxc 1)
  lda,vwn, svwn          Slater (1) + VWN5 correlation             (libxc 7)
  pbe, pbe,pbe           PBE exchange (101) + PBE correlation      (libxc 130)
  b3lyp5                 0.08 Slater (1) + 0.72 B88 (106) + 0.81 LYP (131)
                         + 0.19 VWN5 (7), 20% exact exchange
  b3lyp                  libxc 402: as b3lyp5 but VWN-RPA (libxc 8), 20% exact
                         exchange (PySCF >= 2.3 meaning)

Formulas follow libxc's Maple sources (maple/lda_exc/lda_x.mpl, vwn.mpl,
lda_c_vwn.mpl, lda_c_vwn_rpa.mpl, lda_c_pw.mpl with the "modified" PW92
parameters, gga_exc/gga_x_b88.mpl, gga_x_pbe.mpl, gga_c_pbe.mpl,
gga_c_lyp.mpl), specialised to zeta = 0. Potentials come from autodiff:
vrho = de/drho, vsigma = de/dsigma. PBE correlation is evaluated in an
algebraically identical form without libxc's cancellation of ec against H at
large t: in density tails libxc's own value is off (1e-6 relative at rho=2e-9,
s=700; percent level near rho=1e-12) while ours stays exact to ~1e-15.

Thresholds, float64 (mirrors libxc 7 exactly; verified against PySCF):
  * Each component has its own density threshold `thr` (1e-15 for Slater,
    B88, PBE-x, VWN5, VWN-RPA; 1e-14 for LYP; 1e-12 for PBE-c). A point with
    rho < thr gives exactly zero energy and potentials for that component.
    Mixtures (b3lyp, libxc 402) apply each component's own threshold.
  * Exchange is additionally screened per spin channel: rho/2 <= thr gives 0,
    so exchange starts strictly above 2*thr.
  * sigma is floored at thr**(8/3) (libxc's sigma_threshold**2). As in libxc,
    the potential is the derivative at the floored point, so the floor is
    applied "straight through" (value clamped, derivative passed unchanged).

Thresholds, float32: every component uses max(thr, 1e-10). At rho = 1e-10,
rho**(8/3) = 2e-27 is still a normal float32, and the largest intermediate of
the backward pass, rho**(-8/3) = 5e26, stays far from float32's 3e38. What is
cut away is negligible: e ~ rho**(4/3) < 5e-14 Hartree/Bohr^3 there. (A higher
cut is *not* harmless: the potential in the density tails sets the energies
of diffuse orbitals; cutting at 1e-7 moved water/def2-SVP's LUMO by 94 µHa.)
The squared reduced gradient x2 = sigma / rho**(8/3) is capped at 1e16.

Second derivatives, float32: the QPT loss with k >= 1 unrolled SCF steps
differentiates the Fock matrix, i.e. takes second derivatives of e; for a GGA
d2e/dsigma2 ~ rho**-4, which is 1e40 at rho = 1e-10 and overflows float32
(seen: NaN gradients for pbe and b3lyp5 at k = 1). Below rho = 1e-7 the
float32 energy density is given a custom derivative there: same value, same
potential, zero curvature (the potential is evaluated at a point constant to
differentiation). Only the XC kernel in the far tails is dropped from gradients of
k >= 1 losses; energies, Fock matrices and orbital energies are untouched.

All masking uses the "double where" pattern: masked points are evaluated at a
harmless stand-in (rho = 1) and then discarded, so their (zero) cotangents
never meet an inf and gradients stay NaN-free at rho = sigma = 0.
"""

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from qpt import errors

_PI = math.pi
_RS_FACTOR = (3 / (4 * _PI))**(1 / 3)  # rs = _RS_FACTOR * rho**(-1/3)
_X_FACTOR_C = 3 / 8 * (3 / _PI)**(1 / 3) * 4**(2 / 3)
_SLATER = -0.75 * (3 / _PI)**(1 / 3)  # e_x = _SLATER * rho**(4/3)
_X2S = 1 / (2 * (6 * _PI**2)**(1 / 3))  # s = _X2S * x_sigma
_TWO_23 = 2**(2 / 3)  # x_sigma**2 = 2**(2/3) * x_total**2 at zeta = 0

_F32_DENS_THRESHOLD = 1e-10
_F32_CURVATURE_THRESHOLD = 1e-7  # below: value and potential exact, second derivatives 0
_F32_X2_CAP = 1e16
_F32_SIGMA_FLOOR = 1e-30  # smallest sigma in float32: well inside the normal range
_F64_X2_CAP = 1e100  # only so absurd float64 inputs cannot overflow


# ----------------------------------------------------------------------------
# Components. Each maps (rho, rho**(1/3), x2) to the energy density e = rho*eps
# in Hartree/Bohr^3, elementwise; x2 = sigma / rho**(8/3) is the squared
# (total-density) reduced gradient. Inputs are already screened and safe.
# ----------------------------------------------------------------------------


def _slater(rho, r13, x2):
  """Slater (Dirac) exchange, libxc 1."""
  del x2
  return _SLATER * rho * r13


def _vwn_aux(a, b, c, x0, rs):
  """VWN interpolation formula (libxc maple/vwn.mpl f_aux), Hartree."""
  q = math.sqrt(4 * c - b * b)
  f1 = 2 * b / q
  f2 = b * x0 / (x0 * x0 + b * x0 + c)
  f3 = 2 * (2 * x0 + b) / q
  x = jnp.sqrt(rs)
  fx = rs + b * x + c
  return a * (jnp.log(rs / fx) + (f1 - f2 * f3) * jnp.arctan(q / (2 * x + b))
              - f2 * jnp.log((x - x0)**2 / fx))


def _vwn5(rho, r13, x2):
  """VWN5 correlation, paramagnetic fit, libxc 7."""
  del x2
  return rho * _vwn_aux(0.0310907, 3.72744, 12.9352, -0.10498,
                        _RS_FACTOR / r13)


def _vwn_rpa(rho, r13, x2):
  """VWN-RPA correlation, paramagnetic fit, libxc 8."""
  del x2
  return rho * _vwn_aux(0.0310907, 13.0720, 42.7198, -0.409286,
                        _RS_FACTOR / r13)


def _b88(rho, r13, x2):
  """Becke 88 exchange, libxc 106."""
  beta, gamma = 0.0042, 6.0
  xs2 = _TWO_23 * x2
  # x*asinh(x) = x2 - x2**2/6 + O(x2**3): the series avoids sqrt's infinite
  # slope at x2 = 0 (its truncation error is < 1e-13 relative here).
  small = xs2 < 1e-6
  xs = jnp.sqrt(jnp.where(small, 1.0, xs2))
  h = jnp.where(small, xs2 * (1 - xs2 / 6), xs * jnp.arcsinh(xs))
  enhancement = 1 + beta / _X_FACTOR_C * xs2 / (1 + gamma * beta * h)
  return _SLATER * rho * r13 * enhancement


def _pbe_x(rho, r13, x2):
  """PBE exchange, libxc 101."""
  kappa, mu = 0.8040, 0.2195149727645171
  s2 = _X2S**2 * _TWO_23 * x2
  enhancement = 1 + kappa * (1 - kappa / (kappa + mu * s2))
  return _SLATER * rho * r13 * enhancement


def _pw92_mod(rs):
  """Paramagnetic PW92 correlation per particle (libxc's 'modified' PW)."""
  a, alpha1 = 0.0310907, 0.21370
  b1, b2, b3, b4 = 7.5957, 3.5876, 1.6382, 0.49294
  sqrt_rs = jnp.sqrt(rs)
  g = b1 * sqrt_rs + b2 * rs + b3 * rs * sqrt_rs + b4 * rs * rs
  # log1p keeps float32 accurate at low density, where 1/(2a g) << 1.
  return -2 * a * (1 + alpha1 * rs) * jnp.log1p(1 / (2 * a * g))


def _pbe_c(rho, r13, x2):
  """PBE correlation, libxc 130 (beta = 0.06672455060314922, BB = 1)."""
  beta, gamma = 0.06672455060314922, (1 - math.log(2)) / _PI**2
  rs = _RS_FACTOR / r13
  ec = _pw92_mod(rs)
  e_minus_1 = jnp.expm1(-ec / gamma)  # E - 1, E = exp(-ec/gamma) > 1
  t2 = x2 * r13 / (16 * _TWO_23 * _RS_FACTOR)  # t**2 = x2 / (16 2^(2/3) rs)
  y = (beta / gamma) / e_minus_1 * t2  # A t**2
  z = y * (1 + y)
  # libxc's ec + H, H = gamma*log(1 + f2), f2 = (beta/gamma) f1/(1 + A f1),
  # f1 = t2 + A t2**2, is exactly ec + gamma*log1p((E - 1) z/(1 + z)), and
  # also exactly gamma*log1p(expm1(ec/gamma)/(1 + z)). The first loses digits
  # when z is large (ec cancels H: libxc loses them all in density tails),
  # the second when z is small and E large (log1p near -1). Each is used
  # where it is cancellation-free; double where keeps both branches finite.
  small = z <= 1
  z_small = jnp.where(small, z, 0.0)
  z_large = jnp.where(small, 1.0, z)
  eps_small = ec + gamma * jnp.log1p(e_minus_1 * z_small / (1 + z_small))
  eps_large = gamma * jnp.log1p(jnp.expm1(ec / gamma) / (1 + z_large))
  return rho * jnp.where(small, eps_small, eps_large)


def _lyp(rho, r13, x2):
  """Lee-Yang-Parr correlation, libxc 131 (a, b, c, d as in the paper)."""
  a, b, c, d = 0.04918, 0.132, 0.2533, 0.349
  cf = 0.3 * (3 * _PI**2)**(2 / 3)
  aux6 = 2**(-8 / 3)
  aux4 = aux6 / 4
  aux5 = aux4 / 18
  rr = 1 / r13
  dd = 1 / (1 + d * rr)
  omega = b * jnp.exp(-c * rr) * dd
  delta = (c + d * dd) * rr
  xs2 = _TWO_23 * x2
  # Terms t2..t6 of maple/gga_exc/gga_c_lyp.mpl at zeta = 0 (xs0 = xs1).
  t2 = -x2 * ((47 - 7 * delta) / 72 - 2 / 3)
  t3 = -cf
  t4 = aux4 * (5 / 2 - delta / 18) * 2 * xs2
  t5 = aux5 * (delta - 11) * 2 * xs2
  t6 = -aux6 * (5 / 6) * xs2
  return rho * a * (-dd + omega * (t2 + t3 + t4 + t5 + t6))


@dataclasses.dataclass(frozen=True)
class _Component:
  """One libxc functional: its id, density threshold and kind."""
  libxc_id: int
  dens_threshold: float  # libxc 7 default, electrons/Bohr^3
  is_exchange: bool  # screened per spin channel (rho/2 <= thr gives 0)
  is_gga: bool
  fn: Callable


_COMPONENTS = {
    'slater': _Component(1, 1e-15, True, False, _slater),
    'vwn5': _Component(7, 1e-15, False, False, _vwn5),
    'vwn_rpa': _Component(8, 1e-15, False, False, _vwn_rpa),
    'pbe_x': _Component(101, 1e-15, True, True, _pbe_x),
    'b88': _Component(106, 1e-15, True, True, _b88),
    'pbe_c': _Component(130, 1e-12, False, True, _pbe_c),
    'lyp': _Component(131, 1e-14, False, True, _lyp),
}

# name -> (exact exchange fraction, ((weight, component name), ...)).
# The b3lyp weights are written as libxc 402 writes them (1 - 0.20 - 0.72).
_FUNCTIONALS = {
    'lda': (0.0, ((1.0, 'slater'),)),
    'lda,vwn': (0.0, ((1.0, 'slater'), (1.0, 'vwn5'))),
    'pbe': (0.0, ((1.0, 'pbe_x'), (1.0, 'pbe_c'))),
    'b3lyp5': (0.2, ((0.08, 'slater'), (0.72, 'b88'), (0.81, 'lyp'),
                     (0.19, 'vwn5'))),
    'b3lyp': (0.2, ((1.0 - 0.20 - 0.72, 'slater'), (0.72, 'b88'),
                    (1.0 - 0.81, 'vwn_rpa'), (0.81, 'lyp'))),
}
_ALIASES = {
    'slater': 'lda',
    'svwn': 'lda,vwn',
    'slater,vwn': 'lda,vwn',
    'lda,vwn5': 'lda,vwn',
    'slater,vwn5': 'lda,vwn',
    'pbe,pbe': 'pbe',
}
NAMES = tuple(_FUNCTIONALS)  # the functionals' normalised names (aliases also accepted)


def _screened_energy(comp, rho, r13, rho43, inv43, sigma, single):
  """Energy density of one component with libxc's screening, (...,)."""
  thr = max(comp.dens_threshold, _F32_DENS_THRESHOLD) if single else (
      comp.dens_threshold)
  mask = (rho > 2 * thr) if comp.is_exchange else (rho >= thr)
  x2 = None
  if comp.is_gga:
    # libxc's floor, from libxc's own threshold even in float32 (a float32 floor from
    # the raised threshold would shift x2 visibly at rho ~ 1e-6); kept a normal float32.
    floor = (comp.dens_threshold**(4 / 3))**2
    if single:
      floor = max(floor, _F32_SIGMA_FLOOR)
    # Straight-through floor: value max(sigma, floor), derivative 1.
    sigma = sigma + jax.lax.stop_gradient(jnp.maximum(sigma, floor) - sigma)
    # Cap x2 with a double where: forming sigma * rho**(-8/3) for a huge
    # sigma would give inf, and inf times the capped branch's zero cotangent
    # is NaN. The mask itself needs no gradient.
    cap = _F32_X2_CAP if single else _F64_X2_CAP
    over = sigma > cap * rho43 * rho43
    x2 = jnp.where(over, cap, jnp.where(over, 0.0, sigma) * inv43 * inv43)
  return jnp.where(mask, comp.fn(rho, r13, x2), 0.0)


@dataclasses.dataclass(frozen=True)
class Functional:
  """A closed-shell XC functional as PySCF names it.

  Attributes:
    name: normalized name, e.g. "b3lyp5".
    is_gga: whether the energy depends on sigma = |grad rho|^2.
    exact_exchange: fraction of Hartree-Fock exchange to add (0.2 for
      b3lyp/b3lyp5, else 0).
    components: ((weight, component), ...) summed by energy_density.
  """
  name: str
  is_gga: bool
  exact_exchange: float
  components: tuple = dataclasses.field(repr=False)

  def _energy_density(self, rho, sigma):
    """energy_density with libxc's screening; safe to first order (see energy_density)."""
    dtype = _float_dtype(rho, sigma)
    rho = jnp.asarray(rho, dtype)
    if self.is_gga:
      sigma = jnp.asarray(sigma, dtype)
    single = jnp.finfo(dtype).bits < 64

    # Every component's mask lies inside this one, so one safe stand-in
    # (rho = 1, sigma = 0) serves all of them.
    lowest = min(c.dens_threshold for _, c in self.components)
    if single:
      lowest = max(lowest, _F32_DENS_THRESHOLD)
    live = rho >= lowest
    rho_safe = jnp.where(live, rho, 1.0)
    r13 = jnp.cbrt(rho_safe)
    rho43 = rho_safe * r13
    # rho**(-4/3), squared later: never divide by rho**(8/3), whose
    # derivative would need rho**(-16/3) (overflows float32 at 1e-10).
    inv43 = 1 / rho43
    sigma_safe = jnp.where(live, sigma, 0.0) if self.is_gga else None

    total = jnp.zeros_like(rho)
    for weight, comp in self.components:
      total = total + weight * _screened_energy(comp, rho_safe, r13, rho43,
                                                inv43, sigma_safe, single)
    return jnp.where(live, total, 0.0)

  def energy_density(self, rho, sigma=None):
    """e(r) = rho * eps_xc(rho, sigma) in Hartree / Bohr^3, same shape as rho.

    Differentiable: jax.grad of sum(w * e) gives w * vrho and w * vsigma with
    libxc's meaning, and stays finite for any rho >= 0 (including 0); so do
    second derivatives (float32: zero below rho = 1e-7, see module docstring).

    Args:
      rho: (...,) total electron density, electrons / Bohr^3.
      sigma: (...,) |grad rho|^2, electrons^2 / Bohr^8. Ignored for LDA (may
        be None); required for GGAs.

    Returns:
      (...,) energy density; dtype follows the inputs (float32 or float64).
    """
    if self.is_gga and sigma is None:
      raise errors.InputError(f'functional {self.name!r} is a GGA and needs '
                              'sigma = |grad rho|^2')
    dtype = _float_dtype(rho, sigma if self.is_gga else None)
    if jnp.finfo(dtype).bits == 64:
      return self._energy_density(rho, sigma)
    rho = jnp.asarray(rho, dtype)
    sigma = jnp.asarray(sigma, dtype) if self.is_gga else jnp.zeros_like(rho)
    return _flat_curvature_below(self._energy_density, rho, sigma, _F32_CURVATURE_THRESHOLD)


def _float_dtype(rho, sigma):
  """The floating dtype the inputs ask for (integers promote to the default float)."""
  dtype = jnp.result_type(rho) if sigma is None else jnp.result_type(rho, sigma)
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _flat_curvature_below(f, rho, sigma, threshold):
  """f(rho, sigma) with exact value and first derivatives, and zero second derivatives where
  rho < threshold.

  One evaluation of f and of its gradient, whatever the order of differentiation asked: the
  potential (v_rho, v_sigma) is taken at a point that is constant to differentiation below the
  threshold. `where(high, x, stop_gradient(x))` is a select, so the overflowing curvature of the
  low points is dropped, never multiplied by zero (which would give NaN).
  """

  @jax.custom_jvp
  def flat(rho, sigma):
    return f(rho, sigma)

  @flat.defjvp
  def flat_jvp(primals, tangents):
    rho, sigma = primals
    high = rho >= threshold
    at = (jnp.where(high, rho, jax.lax.stop_gradient(rho)),
          jnp.where(high, sigma, jax.lax.stop_gradient(sigma)))
    e, vjp = jax.vjp(f, *at)
    v_rho, v_sigma = vjp(jnp.ones_like(e))
    # The primal through `flat` itself, so that a derivative of this rule uses the rule again;
    # in the forward pass it is the very computation of `e` (XLA evaluates it once).
    return flat(rho, sigma), v_rho * tangents[0] + v_sigma * tangents[1]

  return flat(rho, sigma)


def functional(xc: str) -> Functional:
  """The functional PySCF means by `xc` (case and spaces ignored).

  Args:
    xc: e.g. "lda,vwn", "pbe", "b3lyp", "b3lyp5" (see the module docstring).

  Returns:
    The Functional.

  Raises:
    errors.InputError: if the name is not supported.
  """
  key = ''.join(str(xc).split()).lower()
  key = _ALIASES.get(key, key)
  if key not in _FUNCTIONALS:
    names = ', '.join(repr(n) for n in list(_FUNCTIONALS) + list(_ALIASES))
    raise errors.InputError(
        f'unknown XC functional {xc!r}; supported: {names}')
  hf, parts = _FUNCTIONALS[key]
  components = tuple((w, _COMPONENTS[c]) for w, c in parts)
  return Functional(name=key,
                    is_gga=any(c.is_gga for _, c in components),
                    exact_exchange=hf,
                    components=components)
