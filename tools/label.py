"""Label conformers with PySCF reference results (float64, minao start), cached in an .npz file.

  python tools/label.py --molecule water --basis def2-svp --xc b3lyp5 --n 50 --seed 0 \
      --out water.npz
  python tools/label.py --molecule water --positions conformers.npy --out water.npz  # (n, a, 3) Å
  python tools/label.py --xyz mol.xyz --canonical --out mol.npz      # label in the model's frame

Conformers come from `--positions` (an .npy of shape (n, n_atoms, 3) in Å, e.g. written by a
thermal sampler) or, as a stand-in for one, from the geometry with seeded Gaussian displacements
(`--displacement` Å per coordinate; `--seed`, `--n`). `--canonical` moves every conformer into its
canonical frame (`qpt.frame`) before labelling, which is what evaluating a model needs; the file
stores the positions actually labelled.

If `--out` exists with the same level of theory and positions it is reused and PySCF does not run.
Prints one summary line (or `--json`): conformers, reused, mean SCF cycles, energy range (Hartree),
seconds. Water/def2-SVP/B3LYP5 at grid level 3 takes ~1 s per conformer on 2 cores.
Bad input: one line on stderr and exit code 2.
"""

import sys
import time
import zipfile

import numpy as np

import qpt
from qpt import cli, frame, labels, level

DISPLACEMENT_ANGSTROM = 0.05  # σ of the stand-in sampler, per Cartesian coordinate


def parse_args(argv):
  parser = cli.OneLineParser(description=__doc__.splitlines()[0])
  cli.add_molecule_arguments(parser, "xyz file (Å): the atoms and the geometry to displace")
  parser.add_argument("--positions", help="conformers as .npy (n, n_atoms, 3) Å; overrides --n")
  parser.add_argument("--n", type=int, default=50, help="conformers from the stand-in sampler")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--displacement", type=float, default=DISPLACEMENT_ANGSTROM,
                      help="Gaussian σ per coordinate, Å")
  parser.add_argument("--canonical", action="store_true", help="label in the canonical frame")
  parser.add_argument("--basis", default="def2-svp")
  parser.add_argument("--xc", default="b3lyp5")
  parser.add_argument("--grid-level", type=int, default=3)
  parser.add_argument("--eri", choices=level.ERI_MODES, default="dense")
  parser.add_argument("--conv-tol", type=float, default=labels.CONV_TOL, help="Hartree")
  parser.add_argument("--out", required=True, help="label file (.npz)")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  return parser.parse_args(argv)


def gaussian_conformers(molecule: qpt.Molecule, n: int, seed: int,
                        sigma_angstrom: float = DISPLACEMENT_ANGSTROM) -> np.ndarray:
  """(n, n_atoms, 3) Å: the geometry plus independent N(0, σ²) noise on every coordinate.

  A stand-in for thermal sampling: it gives distinct, physically close conformers, not a Boltzmann
  ensemble.
  """
  noise = np.random.default_rng(seed).normal(0.0, sigma_angstrom, (n, molecule.n_atoms, 3))
  return molecule.positions_angstrom[None] + noise


def conformers(args) -> list[qpt.Molecule]:
  """The molecules to label, from --positions or the stand-in sampler; canonical if asked."""
  base = cli.molecule_from_arguments(args)
  if args.positions:
    try:
      positions = np.load(args.positions, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
      raise qpt.InputError(f"{args.positions}: cannot read ({e})") from None
    if not isinstance(positions, np.ndarray):  # an .npz archive
      positions.close()
      raise qpt.InputError(f"{args.positions}: an .npz archive; give one .npy array (n, n_atoms, "
                           "3) Å")
    if positions.ndim != 3 or positions.shape[1:] != (base.n_atoms, 3):
      raise qpt.InputError(f"{args.positions}: shape {positions.shape}, expected "
                           f"(n, {base.n_atoms}, 3) Å for {base.name}")
  else:
    if args.n < 1:
      raise qpt.InputError(f"--n {args.n}: need at least one conformer")
    if not args.displacement >= 0:  # NaN too
      raise qpt.InputError(f"--displacement {args.displacement}: must be ≥ 0 Å")
    positions = gaussian_conformers(base, args.n, args.seed, args.displacement)
  molecules = [qpt.Molecule(base.symbols, p, base.charge, base.name) for p in positions]
  return [frame.to_canonical(m)[0] for m in molecules] if args.canonical else molecules


def run(args) -> dict:
  start = time.perf_counter()
  theory = qpt.Level(args.basis, args.xc, args.grid_level, args.eri, "float64")
  reference, reused = labels.label_cached(args.out, conformers(args), theory, args.conv_tol)
  return dict(out=args.out, conformers=len(reference), reused=reused, basis=theory.basis,
              xc=theory.xc, grid_level=theory.grid_level, eri=theory.eri,
              converged=int(np.sum(reference.converged)),
              mean_cycles=float(np.mean(reference.cycles)),
              energy_min=float(reference.energy.min()), energy_max=float(reference.energy.max()),
              seconds=time.perf_counter() - start)


def summary(out: dict) -> str:
  how = "reused" if out["reused"] else "labelled"
  return (f"{out['out']}: {out['conformers']} conformers {how} ({out['basis']}, {out['xc']}, "
          f"grid {out['grid_level']}, eri={out['eri']}), {out['converged']} converged, "
          f"{out['mean_cycles']:.1f} SCF cycles on average, E in [{out['energy_min']:.8f}, "
          f"{out['energy_max']:.8f}] Ha, {out['seconds']:.1f} s")


def main(argv=None) -> int:
  out = cli.run_and_print(run, parse_args(argv), summary)
  if out is None:
    return 2
  return 0 if out["converged"] == out["conformers"] else 1


if __name__ == "__main__":
  sys.exit(main())
