"""energy: the QPT loss and gradient against one PySCF SCF iteration; build against setup."""

from __future__ import annotations

import argparse
import functools
import sys

import jax
import pyscf.df
from pyscf import dft

import qpt
from qpt import xc as xc_lib
from tools.bench.common import Command, comma_list, median_seconds, stamp, timed

ENERGY_STEPS = ((0, 0.0), (3, (0.0, 0.5, 0.0)))  # (k, mixing): the paper's unrolled loss and k = 0


def energy_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--molecules", default="water,ethanol,malondialdehyde,uracil",
                      help="comma list of built-in molecules")
  parser.add_argument("--basis", default="sto-3g,def2-svp", help="comma list of basis sets")
  parser.add_argument("--xc", default="b3lyp5", help="functional, PySCF's name (default b3lyp5)")
  parser.add_argument("--eri", default="dense", choices=("dense", "df"))
  parser.add_argument("--grid-level", type=int, default=3, help="PySCF grid level (default 3)")
  parser.add_argument("--repeats", type=int, default=5, help="timed runs per number (median)")


def energy_run(args: argparse.Namespace) -> list[dict]:
  """Rows for every molecule × basis × k, measured in that order."""
  if args.repeats < 1:
    raise qpt.InputError(f"--repeats {args.repeats}: need at least 1")
  if not 0 <= args.grid_level <= 9:  # checked here: PySCF's setup runs before build_problem
    raise qpt.InputError(f"--grid-level {args.grid_level}: PySCF grid levels are 0..9")
  xc = xc_lib.functional(args.xc).name
  molecules = [qpt.molecules.get(m) for m in comma_list(args.molecules)]
  bases = comma_list(args.basis)
  for m in molecules:  # a missing basis fails now, not after an hour of timings
    for b in bases:
      m.to_pyscf(b)
  where = stamp()
  rows = []
  for molecule in molecules:
    for basis in bases:
      for row in energy_case(molecule, basis, xc, args.eri, args.grid_level, args.repeats):
        rows.append(dict(row, **where))
        print(f"# {row['molecule']} {row['basis']} k={row['k']}: {row['qpt_seconds']:.4f} s",
              file=sys.stderr, flush=True)  # progress; stdout stays the table or the JSON
  return rows


def energy_case(molecule: qpt.Molecule, basis: str, xc: str, eri: str, grid_level: int,
                repeats: int) -> list[dict]:
  """Both codes on one molecule/basis: one row per k."""
  mol = molecule.to_pyscf(basis)
  pyscf_setup, pyscf_seconds, n_grid = pyscf_iteration(mol, xc, eri, grid_level, repeats)
  problem, build_seconds = timed(functools.partial(
      qpt.dft.build_problem, molecule, basis=basis, xc=xc, grid_level=grid_level, eri=eri,
      dtype="float32"))
  problem = jax.tree.map(jax.numpy.asarray, problem)  # on the device once, not at every call
  h = jax.block_until_ready(jax.jit(qpt.dft.initial_fock)(problem))
  rows = []
  for k, mixing in ENERGY_STEPS:
    trace_seconds, compile_seconds, qpt_seconds = loss_and_gradient(problem, h, k, mixing, repeats)
    rows.append(dict(
        molecule=molecule.name, basis=basis, k=k, n_ao=mol.nao, n_grid=n_grid,
        qpt_seconds=qpt_seconds, pyscf_iteration_seconds=pyscf_seconds,
        ratio=qpt_seconds / pyscf_seconds, compile_seconds=compile_seconds,
        trace_seconds=trace_seconds,
        build_seconds=build_seconds, pyscf_setup_seconds=pyscf_setup,
        build_ratio=build_seconds / pyscf_setup))
  return rows


def loss_and_gradient(problem, h, k: int, mixing, repeats: int) -> tuple[float, float, float]:
  """(trace seconds, trace + compile seconds, median seconds of one call) for the loss and ∂/∂H.

  Tracing is reported on its own because the persistent cache cannot skip it: with a warm cache it
  is most of `compile_seconds`.
  """
  loss = functools.partial(qpt.dft.loss_energy_delta, iterations=k, mixing=mixing)
  step = jax.jit(jax.value_and_grad(loss, argnums=1))
  lowered, trace_seconds = timed(lambda: step.lower(problem, h))
  compiled, xla_seconds = timed(lowered.compile)
  call = lambda: jax.block_until_ready(compiled(problem, h))
  call()  # warm-up: first-touch allocations and thread-pool start are not the iteration's cost
  return trace_seconds, trace_seconds + xla_seconds, median_seconds(call, repeats)


def pyscf_iteration(mol, xc: str, eri: str, grid_level: int,
                    repeats: int) -> tuple[float, float, int]:
  """(setup seconds, median seconds of one SCF iteration, grid points) for PySCF's RKS.

  Setup is what PySCF builds before its first iteration and never again: the MINAO guess, the
  grid (pruned with that guess, as `kernel` does), h1e, and the ERIs — the in-core 8-fold tensor
  `get_jk` would create on first use, or the DF tensors with the JK-fit basis QPT uses.
  """
  def setup():
    mf = dft.RKS(mol, xc=xc)
    if eri == "df":
      mf = mf.density_fit(auxbasis=pyscf.df.make_auxbasis(mol))
    mf.grids.level = grid_level
    mf.verbose = 0
    dm = mf.get_init_guess(mol, "minao")
    mf.initialize_grids(mol, dm)
    h1e = mf.get_hcore(mol)
    if eri == "df":
      mf.with_df.build()
    else:
      mf._eri = mol.intor("int2e", aosym="s8")
    return mf, dm, h1e

  (mf, dm, h1e), setup_seconds = timed(setup)

  def iteration():
    vhf = mf.get_veff(mol, dm)
    return mf.energy_tot(dm, h1e, vhf)

  iteration()  # warm-up, as for QPT
  return setup_seconds, median_seconds(iteration, repeats), int(mf.grids.weights.size)


COMMAND = Command(
    help="loss + gradient (k = 0, 3) vs one PySCF SCF iteration; build vs PySCF setup",
    add_arguments=energy_arguments,
    run=energy_run,
    columns=(("molecule", "molecule", "s"), ("basis", "basis", "s"), ("k", "k", "d"),
             ("n_ao", "n_ao", "d"), ("grid", "n_grid", "d"), ("qpt s", "qpt_seconds", ".4f"),
             ("pyscf iter s", "pyscf_iteration_seconds", ".4f"), ("ratio", "ratio", ".2f"),
             ("compile s", "compile_seconds", ".2f"), ("trace s", "trace_seconds", ".2f"),
             ("build s", "build_seconds", ".3f"), ("pyscf setup s", "pyscf_setup_seconds", ".3f"),
             ("build ratio", "build_ratio", ".2f")),
)


