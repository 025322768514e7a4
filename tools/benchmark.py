"""Benchmarks QPT against PySCF, side by side in one process: one sub-command per question.

  energy   The QPT loss and its gradient, E[D_k(H)] − E_ref and ∂/∂H (float32, jitted), for
           k = 0 and k = 3 unrolled SCF steps (mixing (0, 0.5, 0)), against what PySCF spends on
           one SCF iteration (`get_veff` + `energy_tot`) for the same molecule, basis, functional
           and grid; and `build_problem` against PySCF's own setup (grids, MINAO guess, ERIs or
           DF tensors).

  scaling  Against system size: E + ∇ (k = 0, float32) and one PySCF iteration for a series of
           molecule/basis pairs from 24 to 358 AOs, dense ERIs up to --dense-max-ao and DF for
           all, with fitted exponents (log time against log n_ao) and memory: XLA's account of the
           compiled program (device_mb) and the process's peak RSS after QPT's part
           (peak_rss_mb). Against devices: the real compiled train step (tiny model, energy loss,
           k = 0, fixed global batch, make run's config and so its default layout) on 1, 2 and
           4 fake CPU devices: step time and the cost per conformer against one device, each
           count the median of --rounds fresh processes, the counts alternated. On a 2-core
           machine this measures the overhead of sharding (shard_map, collectives, layout), not
           a speed-up. Every case runs in a fresh process.

  throughput  Training as md17.py runs it — thermal stream, host workers, device step — in unique
           conformers/s (a problem reused for mol_repeats steps counts once), and the host-wait
           fraction, against PySCF labels/s (full SCF from minao at the same level) measured in
           the same run.

  economics  The paper's claim at laptop scale: wall time for label-free QPT (and the label-free
           self_consistency loss) to reach held-out targets — energy MAE of E[D(H)] ≤ 300 and
           ≤ 100 µHa, occupied-ε MAE of F[D(H)] ≤ 1000 µHa — against the supervised route with the
           same model, whose PySCF labels are part of its time. Learning curves in economics.png.
           Takes ~20 min for water; run by hand, never by the tests.

  model-scaling  The train step (make run's config) for the tiny, small, base and medium models on
           1, 2 and 4 fake CPU devices, the state replicated or sharded (FSDP, mesh.model = the
           device count): parameters + Adam moments per device (state_bytes_per_device, from
           JAX's shard shapes), XLA's account of the compiled step per device (device_bytes:
           arguments + outputs + temporaries − donated), step time and peak RSS. A case whose
           account would not fit --max-process-gb is compiled and reported, not run.

  transfer  Pre-training's gain: a built-in molecule fine-tuned from a pre-trained run
           (--pretrained, e.g. experiments/qm9.py's workdir) against the same config trained from
           scratch, at the pre-trained run's level of theory and model. The target is the scratch
           run's final validation energy MAE; time to reach it, validation excluded, for each route,
           with the pre-training's own wall time beside (never hidden in the fine-tuned time).

  training-grid  What the optimum of a coarser training grid misses: PySCF's density converged
           on each training grid level (--levels), scored on the evaluation grid as a model's is
           (energy error, occupied-ε MAE of F[D], SCF-cycle ratio), on md17.py's held-out
           conformers: the answer the label-free loss on that grid rewards most.

  inference  `qpt.predict` of a trained run (--workdir) on its held-out conformers, in the lab
           frame, against a full PySCF SCF; PySCF's cycles from the predicted density vs minao,
           and (--shrink λ,...) from D* + λ (D(H_pred) − D*): what a model with λ × this one's
           density error would save.

  .venv/bin/python tools/benchmark.py energy
  .venv/bin/python tools/benchmark.py scaling --devices 1,2,4 --molecules water,ethanol
  .venv/bin/python tools/benchmark.py economics --molecules ethanol --append
  .venv/bin/python tools/benchmark.py energy --molecules water,ethanol --basis sto-3g,def2-svp
  .venv/bin/python tools/benchmark.py energy --eri df --xc pbe --repeats 9 --json
  .venv/bin/python tools/benchmark.py transfer --pretrained workdir/qm9 --molecule ethanol
  .venv/bin/python tools/benchmark.py energy --molecules ethanol --basis def2-svp --ao-on-device

Every sub-command prints a table (or, with --json, a JSON list of row dicts), writes that list to
benchmarks/results/<sub-command>.json and plots it in <sub-command>.png (--out: elsewhere;
--append: after the rows already there, e.g. one molecule at a time). Times are medians of
--repeats runs after a warm-up, so neither side pays one-time costs in the per-iteration numbers:
  * qpt_seconds: one call of the compiled program, to `block_until_ready`; H = MINAO Fock matrix.
  * compile_seconds: trace + XLA compile of that program, as it happened in this process. Programs
    are kept in the persistent cache .jax_cache, so a second run pays only the trace (reported
    alone as trace_seconds: Python-side, no cache can skip it) and a short cache load.
  * pyscf_iteration_seconds: `mf.get_veff(mol, dm)` + `mf.energy_tot(dm, h1e, vhf)` at dm = MINAO,
    with grids, h1e and the 4-index ERIs (dense) or DF tensors (df) built beforehand.
  * build_seconds: `qpt.dft.build_problem`; pyscf_setup_seconds: the same pieces PySCF builds
    before its first iteration (MINAO guess, pruned grids, h1e, ERIs or DF tensors).
Ratios are qpt / PySCF: below 1 means QPT is faster.

Threads: both codes use every core by default (2 on the reference machine): PySCF through OpenMP
(OMP_NUM_THREADS unset → all cores; `pyscf_threads` in the machine record), XLA's CPU client
through its own thread pool. Set OMP_NUM_THREADS only if you also restrict XLA, or the comparison
is no longer like for like. On a shared 2-core machine expect ±2× run-to-run noise
(docs/numerics.md).

Reference (2-core AMD EPYC, b3lyp5, level-3 grid, def2-SVP; docs/numerics.md): a naive dense
float32 E+∇ took 0.02 s (water), 0.26 s (ethanol), 1.2 s (uracil), ratios 0.2–0.8 to one PySCF
iteration; the first uracil compile took ~1 min.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import jax
from bench import (common, economics, energy, model_scaling, pipeline, scaling,
                   training_grid, transfer)  # tools/bench

import qpt
from qpt import cli
from qpt.errors import machine_refusal, make_directory

COMMANDS = {"energy": energy.COMMAND, "scaling": scaling.COMMAND,
            "throughput": pipeline.THROUGHPUT, "inference": pipeline.INFERENCE,
            "economics": economics.COMMAND, "model-scaling": model_scaling.COMMAND,
            "transfer": transfer.COMMAND, "training-grid": training_grid.COMMAND}
JAX_CACHE = os.path.join(common.ROOT, ".jax_cache")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = cli.OneLineParser(prog="benchmark.py", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, command in COMMANDS.items():
    p = sub.add_parser(name, help=command.help, description=command.help)
    p.add_argument("--json", action="store_true", help="print a JSON list of rows, no table")
    p.add_argument("--append", action="store_true",
                   help="add the rows to those already in <sub-command>.json (each keeps its date)")
    p.add_argument("--replot", action="store_true",
                   help="measure nothing: draw <sub-command>.png again from its JSON")
    p.add_argument("--out", default=common.RESULTS_DIR,
                   help="where <sub-command>.json and .png go (default benchmarks/results)")
    command.add_arguments(p)
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  # Compiled programs persist between runs; 0.5 s as in the tests, so small programs are kept too.
  jax.config.update("jax_compilation_cache_dir", JAX_CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  warnings.filterwarnings("ignore", message="Basis may be available")  # our error is enough
  command = COMMANDS[args.command]
  if args.replot:
    return common.replot(args.command, command.plot, args.out)
  try:
    if not (getattr(args, "child", 0) or getattr(args, "case", None)):
      make_directory(args.out)  # before the measurements: they can take an hour
    rows = command.run(args)
    if getattr(args, "child", 0) or getattr(args, "case", None):  # for a parent process: no files
      print(json.dumps(rows))
      return 0
    path, png = common.write_results(args.command, rows, command.plot, args.out, args.append)
  except qpt.InputError as e:
    print(f"benchmark.py {args.command}: error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    print(f"benchmark.py {args.command}: error: {machine_refusal(e, args.out)}", file=sys.stderr)
    return 2
  if args.json:
    print(json.dumps(rows, indent=1))
  else:
    if rows:
      m = rows[0]["machine"]
      cpu = f" ({m['cpu']})" if m.get("cpu") else ""
      print(f"# {m['processor']}{cpu}, {m['cores']} cores, PySCF threads {m['pyscf_threads']}, "
            f"jax {m['jax']}, pyscf {m['pyscf']}, {rows[0]['date']}")
    common.print_table(command.columns, rows)
    print(f"# rows written to {os.path.relpath(path)}, plot to {os.path.relpath(png)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

