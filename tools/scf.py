"""Run one Kohn–Sham SCF with QPT's JAX DFT and print the result.

  python tools/scf.py --xyz water.xyz --basis def2-svp --xc b3lyp5 --grid-level 3 \
      --dtype float32 --eri dense --json
  python tools/scf.py --molecule uracil --basis sto-3g          # a built-in geometry
  python tools/scf.py --xyz new.xyz --init-from workdir/qm9      # zero-shot: start from a model

With `--init-from WORKDIR` (a training run's workdir) the SCF is at that model's basis and
functional unless given (another is refused, and so is a molecule with an element or a total
charge the model never trained on), and starts from the density of its predicted Hamiltonian,
D(H_pred), and once more from MINAO's: `iterations` against
`iterations_minao` (and both energies) say how many cycles the model saved on this molecule.

Prints one JSON object (`--json`) or a short summary: energy (Hartree, float64 even in float32 mode),
converged, iterations, homo, lumo (Hartree), nao (real AOs), seconds (wall time: host build + SCF,
compilation included). Bad input: one line on stderr and exit code 2.
"""

import sys
import time

import numpy as np

import qpt
from qpt import backends, cli, level


def parse_args(argv):
  parser = cli.OneLineParser(description=__doc__.splitlines()[0])
  cli.add_molecule_arguments(parser)
  parser.add_argument("--basis", help="default: def2-svp, or the --init-from model's")
  parser.add_argument("--xc", help="default: b3lyp5, or the --init-from model's")
  parser.add_argument("--grid-level", type=int, default=3)
  parser.add_argument("--dtype", choices=level.DTYPES, default="float32")
  parser.add_argument("--eri", choices=level.ERI_MODES, default="dense")
  parser.add_argument("--max-iterations", type=int, default=50)
  parser.add_argument("--init-from", default="",
                      help="a QPT workdir: start from its model's prediction (and from MINAO)")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  return parser.parse_args(argv)


def run(args) -> dict:
  # float64 switched on only for a float64 SCF, and back as it was afterwards: a caller in the
  # same process (a test, a notebook) keeps its own setting.
  with backends.device_dtype(args.dtype):
    return _run(args)


def _run(args) -> dict:
  start = time.perf_counter()
  mol = cli.molecule_from_arguments(args)
  trained = qpt.load_model(args.init_from) if args.init_from else None
  learnt = trained.level if trained and trained.level else qpt.Level()
  theory = qpt.Level(args.basis or learnt.basis, args.xc or learnt.xc, args.grid_level, args.eri,
                     args.dtype)
  problem = qpt.build_problem(mol, theory)
  extra, density0 = {}, None
  if trained:
    # refuses another basis or xc, or an element or a charge the model never trained on
    prediction = qpt.predict(trained, mol, level=theory)
    density0 = prediction.density  # the lab frame and PySCF's AO order, as `problem`'s
    minao = qpt.dft.scf(problem, max_iterations=args.max_iterations)
    extra = dict(init_from=args.init_from, iterations_minao=minao.iterations,
                 energy_minao=minao.energy, energy_predicted=prediction.energy)
  result = qpt.dft.scf(problem, max_iterations=args.max_iterations, density0=density0)
  return dict(molecule=mol.name, charge=mol.charge, basis=theory.basis, xc=theory.xc,
              grid_level=args.grid_level, dtype=args.dtype, eri=args.eri, energy=result.energy,
              converged=result.converged, iterations=result.iterations, homo=result.homo,
              lumo=result.lumo,
              nao=int(np.sum(problem.ao_mask)), **extra, seconds=time.perf_counter() - start)


def summary(out: dict) -> str:
  state = "converged" if out["converged"] else "NOT converged"
  charge = f" (charge {out['charge']:+d})" if out["charge"] else ""
  return (f"{out['molecule']}{charge} {out['basis']} {out['xc']} ({out['dtype']}, "
          f"eri={out['eri']}): "
          f"E = {out['energy']:.10f} Ha, {state} in {out['iterations']} iterations, "
          f"HOMO {out['homo']:.6f} Ha, LUMO {out['lumo']:.6f} Ha, {out['nao']} AOs, "
          f"{out['seconds']:.1f} s"
          + (f"; from MINAO {out['iterations_minao']} iterations (E[D(H_pred)] = "
             f"{out['energy_predicted']:.6f} Ha)" if "iterations_minao" in out else ""))


def main(argv=None) -> int:
  out = cli.run_and_print(run, parse_args(argv), summary)
  if out is None:
    return 2
  return 0 if out["converged"] else 1


if __name__ == "__main__":
  sys.exit(main())
