"""device-ao: AO values evaluated on the device from the basis, against the step they would feed.

Today the host evaluates φ and ∇φ on every grid point (PySCF's `eval_ao`), transforms them to the
orthonormal basis (φX, float64) and ships them: most of a problem's bytes and a large part of its
build. Issue 12 asks for them on the device instead, from the basis (exponents, contraction
coefficients, l) and the grid. This measures that trade before anything is built on it:

  ao_pass_seconds   one jitted float32 evaluation of φ and ∇φ on every grid point, chunk by chunk
                    (`ao_values` below) — what each pass over the grid would add to the step,
                    where today it reads values the host shipped;
  step_seconds      today's k = 0 E + ∇ (as `energy` times it), and ao_pass_over_step;
  host_ao_seconds   what the host build spends on AO values today: eval_ao + φX, one thread;
  problem_bytes     what a worker ships today, and problem_bytes_without_ao: the same problem
                    with the grid's coordinates (float32 hi + lo) in place of the AO values;
  accuracy          ao_max_rel_error: max |φ_device − φ_PySCF| / max |φ| per AO (float32);
                    energy_error_uha: our SCF's energy − PySCF's with today's problem, and
                    energy_error_device_ao_uha with φX formed on the device in float32;
  screening         screen_kept_4096 / screen_kept_128: the mean fraction of AO columns a
                    (grid block × AO) screen keeps (max over the block of |φ|·√|w| > 1e-7), per
                    4096-point chunk and per 128-point block; *_max the worst block, which is
                    what a static-shape (padded) screen must hold.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import pickle
import sys

import jax
import jax.numpy as jnp
import numpy as np
from pyscf import dft, gto, scf

import qpt
from qpt import integrals, labels, threads
from .common import Command, comma_list, median_seconds, stamp, timed
from .energy import build_as_a_worker, energy_arguments, loss_and_gradient

SCREEN_THRESHOLD = 1e-7  # |φ|·√|w| below it: the AO column is negligible on that block of points


# ---- the evaluator --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShellGroup:
  """Contracted shells of one angular momentum l with K primitives each (s shells).

  atoms (s,) the atom of each shell; exponents (s, K) Bohr⁻²; coefficients (s, K) PySCF's
  normalised contraction coefficients; cart_to_sph ((l+1)(l+2)/2, 2l+1) PySCF's Cartesian →
  real-spherical matrix (its s and p normalisation included).
  """

  l: int
  atoms: np.ndarray
  exponents: np.ndarray
  coefficients: np.ndarray
  cart_to_sph: np.ndarray


def shell_groups(mol: gto.Mole) -> tuple[list[ShellGroup], np.ndarray]:
  """`mol`'s basis as arrays, shells grouped by (l, K), and the order `ao_values` returns AOs in:
  its AO j is PySCF's AO order[j] (within a group m-major, then shell)."""
  groups, start = {}, 0
  for shell in range(mol.nbas):
    l, exponents = mol.bas_angular(shell), mol.bas_exp(shell)
    coefficients = mol._libcint_ctr_coeff(shell)  # (K, n_ctr), PySCF's normalisation
    for column in coefficients.T:  # a general contraction: one shell per column
      group = groups.setdefault((l, len(exponents)), ([], [], [], []))
      for part, value in zip(group, (mol.bas_atom(shell), exponents, column, start)):
        part.append(value)
      start += 2 * l + 1
  out, order = [], []
  for (l, _), (atoms, exponents, coefficients, starts) in sorted(groups.items()):
    out.append(ShellGroup(l, np.array(atoms), np.array(exponents), np.array(coefficients),
                          gto.cart2sph(l)))
    order.append((np.array(starts)[None, :] + np.arange(2 * l + 1)[:, None]).ravel())
  return out, np.concatenate(order)


def hi_lo(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """float64 → two float32 arrays whose sum is x to ~1e-14 relative: coordinates differenced on a
  float32 device keep their float64 accuracy (r − A near a nucleus would otherwise lose ~5e-5)."""
  hi = x.astype(np.float32)
  return hi, (x - hi).astype(np.float32)


def _cartesians(l: int) -> list[tuple[int, int, int]]:
  """PySCF's Cartesian order of degree l: (lx, ly, lz) with lx, then ly, descending."""
  return [(lx, ly, l - lx - ly) for lx in range(l, -1, -1) for ly in range(l - lx, -1, -1)]


def ao_values(points: tuple[jax.Array, jax.Array], atoms: tuple[jax.Array, jax.Array],
              groups: list[ShellGroup]) -> list[jax.Array]:
  """φ and ∂φ/∂x, ∂φ/∂y, ∂φ/∂z: four (n, g) arrays, AOs in `shell_groups`' order.

  points: (3, g) grid coordinates as (hi, lo) float32 pairs (`hi_lo`), Bohr; atoms: (a, 3) alike.
  φ = R(r²)·Y(d) with d = point − atom, R = Σ_k c_k exp(−α_k r²) and Y a real solid harmonic (a
  few Cartesian monomials); ∂φ/∂x = R·∂Y/∂x + R'·x·Y with R' = −2 Σ_k c_k α_k exp(−α_k r²).
  Points are the fastest axis, so every operation is a wide elementwise one XLA fuses.
  """
  values = [[] for _ in range(4)]
  for group in groups:
    a_hi, a_lo = atoms[0][group.atoms], atoms[1][group.atoms]  # (s, 3)
    d = (points[0][None] - a_hi[:, :, None]) + (points[1][None] - a_lo[:, :, None])  # (s, 3, g)
    r2 = jnp.sum(d * d, axis=1)  # (s, g)
    radial = slope = 0.0
    for k in range(group.exponents.shape[1]):
      e = jnp.exp(-r2 * group.exponents[:, k:k + 1].astype(np.float32))
      radial = radial + group.coefficients[:, k:k + 1].astype(np.float32) * e
      slope = slope + (-2.0 * group.coefficients[:, k:k + 1]
                       * group.exponents[:, k:k + 1]).astype(np.float32) * e
    powers = [[jnp.ones_like(r2)] for _ in range(3)]
    for _ in range(group.l):
      for axis in range(3):
        powers[axis].append(powers[axis][-1] * d[:, axis])
    monomial = lambda e: powers[0][e[0]] * powers[1][e[1]] * powers[2][e[2]]
    cartesians = _cartesians(group.l)
    for m in range(2 * group.l + 1):
      terms = [(float(c), e) for c, e in zip(group.cart_to_sph[:, m], cartesians) if c]
      harmonic = sum(c * monomial(e) for c, e in terms)
      values[0].append(radial * harmonic)
      for axis in range(3):
        lowered = [(c * e[axis], tuple(p - (i == axis) for i, p in enumerate(e)))
                   for c, e in terms if e[axis]]
        derivative = slope * d[:, axis] * harmonic
        if lowered:
          derivative = derivative + radial * sum(c * monomial(e) for c, e in lowered)
        values[1 + axis].append(derivative)
  return [jnp.concatenate(v, axis=0) for v in values]


# ---- the measurement ------------------------------------------------------------------------


def arguments(parser: argparse.ArgumentParser):
  """`energy`'s options, with this measurement's own default molecules and basis."""
  energy_arguments(parser)
  parser.set_defaults(molecules="ethanol,uracil", basis="def2-svp")


def run(args: argparse.Namespace) -> list[dict]:
  if args.repeats < 1:
    raise qpt.InputError(f"--repeats {args.repeats}: need at least 1")
  molecules = [qpt.molecules.get(m) for m in comma_list(args.molecules)]
  theories = [qpt.Level(b, args.xc, args.grid_level, args.eri) for b in comma_list(args.basis)]
  for m in molecules:
    for theory in theories:
      m.to_pyscf(theory.basis)  # a missing basis fails now
  where, rows = stamp(), []
  for molecule in molecules:
    for theory in theories:
      row = case(molecule, theory, args.repeats)
      print(f"# {row['molecule']} {row['basis']}: AO pass {row['ao_pass_seconds']:.4f} s, "
            f"step {row['step_seconds']:.4f} s", file=sys.stderr, flush=True)
      rows.append(dict(row, **where))
  return rows


def case(molecule: qpt.Molecule, theory: qpt.Level, repeats: int) -> dict:
  """Every figure of the module docstring for one molecule at one level."""
  mol = molecule.to_pyscf(theory.basis)
  problem, _ = build_as_a_worker(molecule, theory)
  problem_bytes = len(pickle.dumps(problem, protocol=pickle.HIGHEST_PROTOCOL))
  grids = labels.pyscf_rks(mol, theory, density_ref=scf.hf.init_guess_by_minao(mol)).grids
  n_grid, chunk = len(grids.weights), problem.xc_chunk
  padded = problem.weights.shape[0]
  coordinate_bytes = 2 * 3 * padded * 4  # float32 hi + lo per coordinate
  without_ao = problem_bytes - problem.ao_orth.nbytes + coordinate_bytes
  x = integrals.orthogonalizer_of(mol.intor_symmetric("int1e_ovlp"))
  with threads.one_thread():
    ao, host_seconds = timed(lambda: _host_ao(mol, grids.coords, x))

  groups, order = shell_groups(mol)
  points = np.zeros((padded, 3))
  points[:n_grid] = grids.coords
  points = tuple(jnp.asarray(p.T.copy()) for p in hi_lo(points))
  atoms = tuple(jnp.asarray(a) for a in hi_lo(mol.atom_coords()))
  pass_seconds = median_seconds(_ao_pass(points, atoms, groups, chunk), repeats)

  device = [np.asarray(v, np.float64).T for v in
            jax.jit(functools.partial(ao_values, groups=groups))(points, atoms)]
  reference = ao[:, :, order]
  rel_error = max(float(np.max(np.abs(d[:n_grid] - r) / np.abs(r).max(axis=0)))
                  for d, r in zip(device, reference))

  on_device = jax.tree.map(jnp.asarray, problem)
  h = jax.block_until_ready(jax.jit(qpt.dft.initial_fock)(on_device))
  step_seconds = loss_and_gradient(on_device, h, 0, 0.0, repeats)[2]
  del on_device, h
  pyscf_energy = labels.converge(labels.pyscf_rks(mol, theory, 1e-10)).e_tot
  today = qpt.dft.scf(problem).energy
  x_device = jnp.asarray(x[order], jnp.float32)
  orth = np.zeros(problem.ao_orth.shape, np.float32)
  for c, values in enumerate(device):
    orth[c, :n_grid, :mol.nao] = jnp.matmul(jnp.asarray(values[:n_grid], jnp.float32), x_device,
                                            precision=jax.lax.Precision.HIGHEST)
  device_ao = qpt.dft.scf(dataclasses.replace(problem, ao_orth=jnp.asarray(orth))).energy

  magnitude = np.abs(ao).max(axis=0) * np.sqrt(np.abs(grids.weights))[:, None]
  kept = {size: _kept(magnitude, size) for size in (4096, 128)}
  return dict(molecule=molecule.name, basis=theory.basis, eri=theory.eri, n_ao=mol.nao,
              n_grid=n_grid, ao_pass_seconds=pass_seconds, step_seconds=step_seconds,
              ao_pass_over_step=pass_seconds / step_seconds, host_ao_seconds=host_seconds,
              problem_bytes=problem_bytes, problem_bytes_without_ao=without_ao,
              problem_mb=problem_bytes / 2**20, problem_mb_without_ao=without_ao / 2**20,
              ao_max_rel_error=rel_error, energy_error_uha=(today - pyscf_energy) * 1e6,
              energy_error_device_ao_uha=(device_ao - pyscf_energy) * 1e6,
              screen_kept_4096=kept[4096][0], screen_kept_4096_max=kept[4096][1],
              screen_kept_128=kept[128][0], screen_kept_128_max=kept[128][1])


def _host_ao(mol: gto.Mole, coords: np.ndarray, x: np.ndarray) -> np.ndarray:
  """PySCF's φ and ∇φ (4, g, n) float64, and φX as the host build forms it today (its time only)."""
  ao = dft.numint.NumInt().eval_ao(mol, coords, deriv=1)
  for start in range(0, ao.shape[1], 4096):
    ao[:, start:start + 4096] @ x
  return ao


def _ao_pass(points, atoms, groups, chunk: int):
  """A call that evaluates φ and ∇φ on every point once, a chunk at a time, and blocks."""
  @jax.jit
  def every_chunk(points, atoms):
    def one(total, k):
      block = tuple(jax.lax.dynamic_slice_in_dim(p, k * chunk, chunk, axis=1) for p in points)
      return total + sum(jnp.sum(v) for v in ao_values(block, atoms, groups)), None
    return jax.lax.scan(one, jnp.float32(0), jnp.arange(points[0].shape[1] // chunk))[0]

  call = lambda: jax.block_until_ready(every_chunk(points, atoms))
  call()  # compile and warm up
  return call


def _kept(magnitude: np.ndarray, block: int) -> tuple[float, float]:
  """(mean, max) over blocks of `block` points of the fraction of AO columns above threshold."""
  n_blocks = len(magnitude) // block
  largest = magnitude[:n_blocks * block].reshape(n_blocks, block, -1).max(axis=1)
  fraction = (largest > SCREEN_THRESHOLD).mean(axis=1)
  return float(fraction.mean()), float(fraction.max())


def plot(rows: list[dict], path: str) -> None:
  """Per molecule/basis: one device AO pass, today's whole k = 0 step, and the host's AO time."""
  from .common import pyplot, save_figure
  plt = pyplot()
  figure, axis = plt.subplots(figsize=(7, 4))
  labels_ = [f"{r['molecule']}\n{r['basis']}" for r in rows]
  x = np.arange(len(rows))
  for i, (key, name) in enumerate((("step_seconds", "k = 0 E + ∇ today"),
                                   ("ao_pass_seconds", "one device AO pass (float32)"),
                                   ("host_ao_seconds", "host eval_ao + φX (1 thread)"))):
    axis.bar(x + (i - 1) * 0.27, [r[key] for r in rows], width=0.27, label=name)
  axis.set_xticks(x, labels_)
  axis.set_ylabel("seconds")
  axis.set_yscale("log")
  axis.legend(fontsize=8)
  axis.set_title("AO values on the device: what one pass over the grid costs")
  save_figure(figure, path)


COMMAND = Command(
    help="AO values evaluated on the device: their cost against today's step, their float32 "
         "accuracy, and what screening would keep",
    add_arguments=arguments, run=run,
    columns=(("molecule", "molecule", "s"), ("basis", "basis", "s"), ("n_ao", "n_ao", "d"),
             ("grid", "n_grid", "d"), ("AO pass s", "ao_pass_seconds", ".4f"),
             ("step s", "step_seconds", ".4f"), ("pass/step", "ao_pass_over_step", ".2f"),
             ("host AO s", "host_ao_seconds", ".3f"), ("MB today", "problem_mb", ".1f"),
             ("MB no AO", "problem_mb_without_ao", ".1f"),
             ("φ rel err", "ao_max_rel_error", ".1e"), ("ΔE µHa", "energy_error_uha", ".2f"),
             ("ΔE dev µHa", "energy_error_device_ao_uha", ".2f"),
             ("kept 4096", "screen_kept_4096", ".2f"), ("kept 128", "screen_kept_128", ".2f")),
    plot=plot)
