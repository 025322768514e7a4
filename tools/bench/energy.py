"""energy: the QPT loss and gradient against one PySCF SCF iteration; build against setup."""

from __future__ import annotations

import argparse
import functools
import pickle
import resource
import sys

import jax
from pyscf import scf

import qpt
from qpt import backends, labels, level, threads
from .common import Command, comma_list, md17_config, median_seconds, stamp, timed

ENERGY_STEPS = ((0, 0.0), (3, (0.0, 0.5, 0.0)))  # (k, mixing): the paper's unrolled loss and k = 0


def energy_arguments(parser: argparse.ArgumentParser):
  parser.add_argument("--molecules", default="water,ethanol,malondialdehyde,uracil",
                      help="comma list of built-in molecules")
  parser.add_argument("--basis", default="sto-3g,def2-svp", help="comma list of basis sets")
  parser.add_argument("--xc", default="b3lyp5", help="functional, PySCF's name (default b3lyp5)")
  parser.add_argument("--eri", default="dense", choices=level.ERI_MODES)
  parser.add_argument("--grid-level", type=int, default=3, help="PySCF grid level (default 3)")
  parser.add_argument("--repeats", type=int, default=5, help="timed runs per number (median)")
  parser.add_argument("--ao-on-device", action="store_true",
                      help="problems ship the basis; the device evaluates AO values in the step")


def energy_run(args: argparse.Namespace) -> list[dict]:
  """Rows for every molecule × basis × k, measured in that order."""
  if args.repeats < 1:
    raise qpt.InputError(f"--repeats {args.repeats}: need at least 1")
  molecules = [qpt.molecules.get(m) for m in comma_list(args.molecules)]
  bases = comma_list(args.basis)
  for m in molecules:  # a missing basis fails now, not after an hour of timings
    for b in bases:
      m.to_pyscf(b)
  where = stamp()
  rows = []
  theories = [qpt.Level(b, args.xc, args.grid_level, args.eri) for b in bases]  # checked first
  for molecule in molecules:
    for theory in theories:
      for row in energy_case(molecule, theory, args.repeats, ao_on_device=args.ao_on_device):
        rows.append(dict(row, **where))
        print(f"# {row['molecule']} {row['basis']} k={row['k']}: {row['qpt_seconds']:.4f} s",
              file=sys.stderr, flush=True)  # progress; stdout stays the table or the JSON
  return rows


def energy_case(molecule: qpt.Molecule, theory: qpt.Level, repeats: int,
                steps=ENERGY_STEPS, ao_on_device: bool = False) -> list[dict]:
  """Both codes on one molecule at one level of theory: one row per (k, mixing) of `steps`."""
  mol = molecule.to_pyscf(theory.basis)
  problem, build_seconds = build_as_a_worker(molecule, theory, ao_on_device)
  problem_bytes = len(pickle.dumps(problem, protocol=pickle.HIGHEST_PROTOCOL))  # as a worker ships it
  problem = jax.tree.map(jax.numpy.asarray, problem)  # on the device once, not at every call
  h = jax.block_until_ready(jax.jit(qpt.dft.initial_fock)(problem))
  measured = [(k, loss_and_gradient(problem, h, k, mixing, repeats)) for k, mixing in steps]
  # QPT runs first, so in a fresh process this is its own peak (host arrays + CPU device buffers).
  peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  del problem, h
  pyscf_setup, pyscf_seconds, n_grid = pyscf_iteration(mol, theory, repeats)
  rows = []
  for k, (trace_seconds, compile_seconds, qpt_seconds, device_bytes) in measured:
    rows.append(dict(
        molecule=molecule.name, basis=theory.basis, eri=theory.eri, k=k, n_ao=mol.nao, n_grid=n_grid,
        ao_on_device=ao_on_device,
        device_mb=device_bytes / 2**20, peak_rss_mb=peak_rss_mb, problem_bytes=problem_bytes,
        problem_mb=problem_bytes / 2**20,
        qpt_seconds=qpt_seconds, pyscf_iteration_seconds=pyscf_seconds,
        ratio=qpt_seconds / pyscf_seconds, compile_seconds=compile_seconds,
        trace_seconds=trace_seconds,
        build_seconds=build_seconds, pyscf_setup_seconds=pyscf_setup,
        build_ratio=build_seconds / pyscf_setup))
  return rows


def build_as_a_worker(molecule: qpt.Molecule, theory: qpt.Level,
                      ao_on_device: bool = False) -> tuple[qpt.dft.DFTProblem, float]:
  """(the problem, seconds to build it) as a stream worker builds a conformer: on one thread, for a
  geometry never built before. A displaced copy is built first, so that one-time costs (imports,
  basis parsing) are not counted, and no cache of problems or integrals can help."""
  build = functools.partial(qpt.build_problem, level=theory, ao_on_device=ao_on_device)
  with threads.one_thread():
    build(molecule.with_positions(molecule.positions * 1.01))
    return timed(functools.partial(build, molecule))


def loss_and_gradient(problem, h, k: int, mixing,
                      repeats: int) -> tuple[float, float, float, int]:
  """(trace seconds, trace + compile seconds, median seconds of one call, device bytes) for the
  loss and ∂/∂H.

  Tracing is reported on its own because the persistent cache cannot skip it: with a warm cache it
  is most of `compile_seconds`. Device bytes are XLA's own account of the compiled program's
  memory (arguments + outputs + temporaries − aliased): what an accelerator must hold.
  """
  loss = functools.partial(qpt.dft.loss_energy_delta, iterations=k, mixing=mixing)
  step = jax.jit(jax.value_and_grad(loss, argnums=1))
  lowered, trace_seconds = timed(lambda: step.lower(problem, h))
  compiled, xla_seconds = timed(lowered.compile)
  call = lambda: jax.block_until_ready(compiled(problem, h))
  memory = compiled.memory_analysis()
  device_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                  + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  with training_loop():
    call()  # warm-up: first-touch allocations and thread-pool start are not the iteration's cost
    seconds = median_seconds(call, repeats)
  return trace_seconds, trace_seconds + xla_seconds, seconds, device_bytes


@functools.cache
def _default_backend() -> backends.Backend:
  return backends.create(md17_config("water"))


def training_loop():
  """The context training runs its steps in (the default run's `Backend.training_loop`: on
  XLA:CPU, glibc keeps the memory a step frees for the next), so the step is timed as training
  runs it. PySCF's iteration runs outside it, with glibc's own settings, as PySCF users run it."""
  return _default_backend().training_loop()


def pyscf_iteration(mol, theory: qpt.Level, repeats: int) -> tuple[float, float, int]:
  """(setup seconds, median seconds of one SCF iteration, grid points) for PySCF's RKS.

  Setup is what PySCF builds before its first iteration and never again: the MINAO guess, the
  grid (pruned with that guess, as `kernel` does), h1e, and the ERIs — the in-core 8-fold tensor
  `get_jk` would create on first use, or the DF tensors with the JK-fit basis QPT uses.
  """
  def setup():
    dm = scf.hf.init_guess_by_minao(mol)
    mf = labels.pyscf_rks(mol, theory, density_ref=dm)
    h1e = mf.get_hcore(mol)
    if theory.eri == "df":
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


def _case(row: dict) -> tuple[str, str, str, bool]:
  """What a bar stands for: molecule, basis, eri, AO values on the device (rows before the option
  existed: the host's). The latest row of a case wins."""
  return row["molecule"], row["basis"], row.get("eri", "dense"), row.get("ao_on_device", False)


def plot(rows: list[dict], path: str) -> None:
  """Ratios to PySCF per molecule/basis (DF and AO values on the device named): E + ∇ at each k
  against one iteration (left), the host build against PySCF's setup (right). Below the line at
  1, QPT is faster."""
  from .common import pyplot, save_figure
  plt = pyplot()
  cases = list(dict.fromkeys(_case(r) for r in rows))
  ks = sorted({r["k"] for r in rows})
  figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
  width = 0.8 / len(ks)
  for i, k in enumerate(ks):
    ratio = {_case(r): r["ratio"] for r in rows if r["k"] == k}
    left.bar([c + i * width for c in range(len(cases))], [ratio.get(c, 0) for c in cases], width,
             label=f"k = {k}")
  build = {_case(r): r["build_ratio"] for r in rows}
  right.bar(range(len(cases)), [build[c] for c in cases], 0.6)
  labels = [f"{m} / {b}" + (", DF" if e == "df" else "") + (", AO on device" if d else "")
            for m, b, e, d in cases]
  for ax, title in ((left, "E + ∇ (float32) / one PySCF iteration"),
                    (right, "host DFTProblem build / PySCF setup")):
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks([c + (width * (len(ks) - 1) / 2 if ax is left else 0) for c in range(len(cases))],
                  labels, fontsize=7, rotation=35, ha="right")
    ax.set(ylabel="ratio (QPT / PySCF)", title=title)
  left.set_yscale("log")  # k = 0 and k = 3 differ by ~4×
  left.yaxis.set_major_formatter(plt.ScalarFormatter())
  left.legend(fontsize=8)
  save_figure(figure, path)


COMMAND = Command(
    help="loss + gradient (k = 0, 3) vs one PySCF SCF iteration; build vs PySCF setup",
    add_arguments=energy_arguments,
    run=energy_run,
    columns=(("molecule", "molecule", "s"), ("basis", "basis", "s"), ("k", "k", "d"),
             ("AO on device", "ao_on_device", "d"),
             ("n_ao", "n_ao", "d"), ("grid", "n_grid", "d"), ("qpt s", "qpt_seconds", ".4f"),
             ("pyscf iter s", "pyscf_iteration_seconds", ".4f"), ("ratio", "ratio", ".2f"),
             ("compile s", "compile_seconds", ".2f"), ("trace s", "trace_seconds", ".2f"),
             ("build s", "build_seconds", ".3f"), ("pyscf setup s", "pyscf_setup_seconds", ".3f"),
             ("build ratio", "build_ratio", ".2f"), ("device MB", "device_mb", ".0f"),
             ("problem MB", "problem_mb", ".0f")),
    plot=plot,
)


