"""Robustness sweep: the float32 QPT loss and its gradient on random, distorted conformers.

  python tools/stress.py --molecule water --n 1000
  python tools/stress.py --molecule ethanol --n 200 --out stress-ethanol.json

Each case is a thermal conformer (500 K) of a built-in molecule, scaled about its centre by a bond
factor `scale` — a third of the cases at 1, the rest spread over 0.75 (compressed) to 1.6
(stretched), both ends included — and a Hamiltonian: the MINAO Fock matrix H_init, or, in one case
in eight, H_init with its LUMO moved to within `gap_ha` < 0.1 Ha of its HOMO (near-degenerate
frontier orbitals, where the density's derivative is largest). For each, the problem is built at
the level of theory (def2-SVP, B3LYP5, grid level 3, dense ERIs, float32 by default) — or refused
with its one-line error — and the loss E[D_k(H)] − E_ref and ∂/∂H are evaluated (jitted, float32).

The JSON report (--out) has `non_finite`, `refused` and per case `index`, `scale`, `gap_ha` (HOMO–
LUMO gap of H, Hartree), `symbols`, `positions_angstrom`, `loss`, `grad_norm`, `finite` and
`refused` (the error, or null): any case can be replayed from it. The last line printed is
`N conformers: K non-finite, R refused`; the exit code is 1 if K > 0 or R > 1 % of N, 2 for bad
arguments. Everything is seeded (--seed): the same command gives the same cases.
"""

from __future__ import annotations

import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import qpt
from qpt import cli, conformers, dft, level
from qpt.errors import check_writable

SCALE_RANGE = (0.75, 1.6)  # bond factors: compressed to stretched
NEAR_DEGENERATE_EVERY = 8  # one case in eight gets a HOMO–LUMO gap below MAX_GAP
MAX_GAP = 0.1  # Hartree


def parse_args(argv):
  parser = cli.OneLineParser(prog="stress.py", description=__doc__.splitlines()[0])
  parser.add_argument("--molecule", required=True, help="built-in molecule")
  parser.add_argument("--n", type=int, required=True, help="conformers")
  parser.add_argument("--out", help="JSON report")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--basis", default="def2-svp")
  parser.add_argument("--xc", default="b3lyp5")
  parser.add_argument("--grid-level", type=int, default=3)
  parser.add_argument("--eri", choices=level.ERI_MODES, default="dense")
  parser.add_argument("--iterations", type=int, default=0, help="unrolled SCF steps k of the loss")
  return parser.parse_args(argv)


def case_plan(n: int, seed: int) -> list[tuple[float, float | None]]:
  """(scale, target gap or None) per case: a third unscaled, the rest uniform over SCALE_RANGE
  with both ends present; every NEAR_DEGENERATE_EVERY-th case near-degenerate."""
  rng = np.random.default_rng([seed, 1])
  scales = np.where(rng.random(n) < 1 / 3, 1.0, rng.uniform(*SCALE_RANGE, n))
  scales[: min(n, 2)] = SCALE_RANGE[: min(n, 2)]
  gaps = [float(10 ** rng.uniform(-4, np.log10(MAX_GAP))) if i % NEAR_DEGENERATE_EVERY == 3
          else None for i in range(n)]
  return [(float(s), g) for s, g in zip(scales, gaps)]


def scaled(molecule: qpt.Molecule, scale: float) -> qpt.Molecule:
  """Every interatomic distance × scale (positions scaled about the centroid)."""
  centre = molecule.positions.mean(axis=0)
  return molecule.with_positions(centre + scale * (molecule.positions - centre))


def hamiltonian(problem, gap: float | None) -> tuple[np.ndarray, float]:
  """(H (n, n) AO basis, its HOMO–LUMO gap in Hartree): H_init, or H_init with its LUMO placed
  `gap` above its HOMO (in the orthonormal basis, eigenvectors kept)."""
  h = np.asarray(jax.jit(dft.initial_fock)(problem), np.float64)
  x = np.asarray(problem.orthogonalizer, np.float64)
  x_inv = np.asarray(problem.orthogonalizer_inv, np.float64)
  n_real = int(np.sum(problem.ao_mask))
  n_occ = int(np.sum(np.asarray(problem.occupation) > 0))
  eps, u = np.linalg.eigh((x.T @ h @ x)[:n_real, :n_real])
  if gap is not None:
    eps[n_occ] = eps[n_occ - 1] + gap  # below the old LUMO: the order is kept
    h_real = x_inv.T[:n_real, :n_real] @ (u * eps) @ u.T @ x_inv[:n_real, :n_real]
    h[:n_real, :n_real] = 0.5 * (h_real + h_real.T)
  return h, float(eps[n_occ] - eps[n_occ - 1])


@functools.cache
def loss_and_gradient(iterations: int):
  loss = functools.partial(dft.loss_energy_delta, iterations=iterations,
                           mixing=(0.0,) * iterations)
  return jax.jit(jax.value_and_grad(loss, argnums=1))


def run_case(molecule: qpt.Molecule, theory: qpt.Level, iterations: int, scale: float,
             gap: float | None) -> dict:
  geometry = scaled(molecule, scale)
  row = dict(scale=scale, gap_ha=None, symbols=geometry.symbols,
             positions_angstrom=geometry.positions_angstrom.tolist(), loss=None, grad_norm=None,
             finite=None, refused=None)
  try:
    problem = qpt.build_problem(geometry, theory)
  except qpt.InputError as e:
    return dict(row, refused=str(e))
  h, row["gap_ha"] = hamiltonian(problem, gap)
  value, grad = loss_and_gradient(iterations)(problem, jnp.asarray(h, problem.dtype))
  value, grad_norm = float(value), float(jnp.linalg.norm(grad))
  return dict(row, loss=value, grad_norm=grad_norm,
              finite=bool(np.isfinite(value) and np.isfinite(grad_norm)))


def run(args) -> dict:
  if args.n < 1:
    raise qpt.InputError(f"--n {args.n}: need at least one conformer")
  if args.iterations < 0:
    raise qpt.InputError(f"--iterations {args.iterations}: must be ≥ 0")
  if args.out:
    check_writable(args.out)
  theory = qpt.Level(args.basis, args.xc, args.grid_level, args.eri, "float32")
  molecule = qpt.molecules.get(args.molecule)
  molecule.to_pyscf(theory.basis)  # a basis missing for an element fails now
  sampler = conformers.ThermalSampler(molecule, seed=args.seed)
  cases = []
  for index, (scale, gap) in enumerate(case_plan(args.n, args.seed)):
    cases.append(dict(index=index, **run_case(sampler(index), theory, args.iterations, scale, gap)))
    if (index + 1) % 50 == 0:
      print(f"# {index + 1} of {args.n}", file=sys.stderr, flush=True)
  return dict(molecule=args.molecule, level=str(theory), iterations=args.iterations, n=args.n,
              non_finite=sum(c["finite"] is False for c in cases),
              refused=sum(c["refused"] is not None for c in cases), cases=cases)


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    report = run(args)
  except qpt.InputError as e:
    print(f"stress.py: error: {e}", file=sys.stderr)
    return 2
  if args.out:
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1)
  near = sum(c["gap_ha"] is not None and c["gap_ha"] < MAX_GAP for c in report["cases"])
  print(f"# {report['level']}, k = {report['iterations']}: {near} cases with a HOMO–LUMO gap "
        f"below {MAX_GAP} Ha, scales {min(c['scale'] for c in report['cases']):.2f}–"
        f"{max(c['scale'] for c in report['cases']):.2f}")
  print(f"{report['n']} conformers: {report['non_finite']} non-finite, {report['refused']} refused")
  return 1 if report["non_finite"] or report["refused"] > 0.01 * report["n"] else 0


if __name__ == "__main__":
  sys.exit(main())
