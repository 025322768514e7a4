"""Validates QPT's SCF against PySCF's RKS over a grid of molecules, basis sets and functionals.

For every (molecule, basis, xc, eri) case PySCF runs once in float64 (`conv_tol` 1e-11, level-3
grid, MINAO start), then `qpt.dft.scf` runs on the same settings in each requested dtype. One row
per case and dtype reports our total energy, HOMO and LUMO minus PySCF's (µHa), both iteration
counts, and PASS/FAIL against the targets:

  float64: |ΔE| ≤ 1 µHa, converged, iterations ≤ PySCF's + 3
  float32: |ΔE|, |ΔHOMO|, |ΔLUMO| ≤ 50 µHa, converged

Too long for the test suite: the full grid is 4 × 3 × 3 = 36 cases (72 rows), dominated by
uracil/def2-SVP, where one PySCF SCF alone takes ~20 s and each dtype builds its own problem. The
12 water rows of the second command below take ~70 s on a 2-core machine. Run it by hand:

  .venv/bin/python tools/validate_pyscf.py                                # the full grid
  .venv/bin/python tools/validate_pyscf.py --molecules water --basis sto-3g,def2-svp
  .venv/bin/python tools/validate_pyscf.py --xc lda,vwn,pbe,b3lyp5,b3lyp  # add VWN-RPA B3LYP
  .venv/bin/python tools/validate_pyscf.py --eri dense,df --dtype float32 --out results.json
  .venv/bin/python tools/validate_pyscf.py --json > rows.json

`--xc` is a comma list whose entries may contain commas themselves ("lda,vwn"): entries are read
greedily, longest known functional name first. Rows are printed (and `--out` rewritten) as each
case finishes. Exit code 0 if every row passes, 1 if any fails, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import jax
import numpy as np

import qpt
from qpt import backends, cli, labels, level, xc
from qpt.errors import check_writable
from qpt.files import written_whole

MOLECULES = ("water", "ethanol", "malondialdehyde", "uracil")  # the default grid
BASES = ("sto-3g", "6-31g", "def2-svp")
FUNCTIONALS = ("lda,vwn", "pbe", "b3lyp5")
PYSCF_CONV_TOL = 1e-11  # Hartree; tight enough that PySCF's own error is ≪ 1 µHa
UHA = 1e6  # µHa per Hartree
JAX_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache")

# Targets per dtype: the largest |error| in µHa, and the allowed extra iterations over PySCF
# (None: not judged; float32 stops on what float32 can resolve, not on PySCF's criterion).
TARGETS = {
    "float64": dict(energy=1.0, orbitals=None, extra_iterations=3),
    "float32": dict(energy=50.0, orbitals=50.0, extra_iterations=None),
}

COLUMNS = (  # (header, width, row key, format)
    ("molecule", 15, "molecule", "s"), ("basis", 8, "basis", "s"), ("xc", 7, "xc", "s"),
    ("eri", 5, "eri", "s"), ("dtype", 7, "dtype", "s"), ("n_ao", 4, "n_ao", "d"),
    ("ΔE µHa", 10, "energy_error_uha", ".3f"), ("ΔHOMO µHa", 10, "homo_error_uha", ".3f"),
    ("ΔLUMO µHa", 10, "lumo_error_uha", ".3f"), ("iter", 4, "iterations", "d"),
    ("pyscf", 5, "pyscf_iterations", "d"), ("conv", 4, "converged", "s"),
    ("result", 6, "result", "s"),
)


# ---- arguments ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  """Command line → Namespace with every grid axis as a checked list."""
  parser = cli.OneLineParser(prog="validate_pyscf.py", description=__doc__.splitlines()[0])
  parser.add_argument("--molecules", default=",".join(MOLECULES),
                      help=f"comma list of built-in molecules (default {','.join(MOLECULES)})")
  parser.add_argument("--basis", default=",".join(BASES), help="comma list of basis sets")
  parser.add_argument("--xc", default=",".join(FUNCTIONALS),
                      help="comma list of functionals, e.g. lda,vwn,pbe,b3lyp5,b3lyp")
  parser.add_argument("--eri", default="dense", help="comma list of dense, df (default dense)")
  parser.add_argument("--dtype", default="float64,float32", help="comma list of float64, float32")
  parser.add_argument("--grid-level", type=int, default=3, help="PySCF grid level (default 3)")
  parser.add_argument("--ao-on-device", action="store_true",
                      help="problems ship the basis; the device evaluates the AO values")
  parser.add_argument("--json", action="store_true", help="print a JSON list of rows, no table")
  parser.add_argument("--out", metavar="FILE", help="also write the JSON list of rows to FILE")
  args = parser.parse_args(argv)
  try:
    args.molecules = _choices(args.molecules, qpt.molecules.names(), "molecule")
    args.basis = _comma_list(args.basis.lower(), "basis")
    args.xc = split_functionals(args.xc)
    args.eri = _choices(args.eri, level.ERI_MODES, "eri")
    args.dtype = _choices(args.dtype, level.DTYPES, "dtype")
  except qpt.InputError as e:
    parser.error(str(e))
  if not 0 <= args.grid_level <= 9:
    parser.error(f"--grid-level {args.grid_level}: PySCF grid levels are 0..9")
  return args


def _comma_list(text: str, what: str) -> list[str]:
  items = [s.strip() for s in text.split(",") if s.strip()]
  if not items:
    raise qpt.InputError(f"--{what}: empty list")
  return list(dict.fromkeys(items))  # de-duplicated, order kept


def _choices(text: str, allowed, what: str) -> list[str]:
  items = _comma_list(text.lower(), what)
  bad = [s for s in items if s not in allowed]
  if bad:
    raise qpt.InputError(f"unknown {what} {bad[0]!r}; choose from {', '.join(allowed)}")
  return items


def split_functionals(text: str) -> list[str]:
  """'lda,vwn,pbe,b3lyp5' → ['lda,vwn', 'pbe', 'b3lyp5'], as PySCF spells each functional.

  Functional names contain commas themselves, so at each position the longest run of up to three
  comma-separated tokens that names a functional wins ("lda,vwn" rather than "lda" then "vwn").
  """
  tokens = [t.strip() for t in text.split(",")]
  names, i = [], 0
  while i < len(tokens):
    for j in range(min(len(tokens), i + 3), i, -1):
      try:
        names.append(xc.functional(",".join(tokens[i:j])).name)
        break
      except qpt.InputError:
        continue
    else:
      xc.functional(tokens[i])  # raises the library's one-line error for this token
    i = j
  return list(dict.fromkeys(names))


# ---- one case -------------------------------------------------------------------------------


def pyscf_reference(mol, theory: qpt.Level) -> dict:
  """PySCF's float64 RKS from its default MINAO start: energy, frontier orbitals, cycles."""
  start = time.perf_counter()
  mf = labels.converge(labels.pyscf_rks(mol, theory, PYSCF_CONV_TOL))
  homo, lumo = _frontier(mf.mo_energy, mf.mo_occ)
  return dict(energy=float(mf.e_tot), homo=homo, lumo=lumo, iterations=int(mf.cycles),
              converged=bool(mf.converged), seconds=time.perf_counter() - start)


def _frontier(mo_energy: np.ndarray, mo_occ: np.ndarray) -> tuple[float, float]:
  return float(mo_energy[mo_occ > 0][-1]), float(mo_energy[mo_occ == 0][0])


def qpt_scf(molecule: qpt.Molecule, theory: qpt.Level, ao_on_device: bool = False) -> dict:
  """Our SCF in `theory.dtype` on a freshly built problem: energy, frontier orbitals, iterations.

  Each dtype runs exactly as a run of that dtype would (`backends.device_dtype`): float32 with
  JAX's float64 off, so a stray float64 constant cannot quietly raise the precision being
  validated; float64 with it on.
  """
  with backends.device_dtype(theory.dtype):
    start = time.perf_counter()
    result = qpt.dft.scf(qpt.build_problem(molecule, theory, ao_on_device=ao_on_device))
    seconds = time.perf_counter() - start
  return dict(energy=result.energy, homo=result.homo, lumo=result.lumo,
              iterations=result.iterations, converged=result.converged, seconds=seconds)


def compare(ours: dict, ref: dict, dtype: str) -> dict:
  """Errors against PySCF in µHa and the PASS/FAIL verdict, with the reasons for a FAIL."""
  errors = {f"{k}_error_uha": (ours[k] - ref[k]) * UHA for k in ("energy", "homo", "lumo")}
  target = TARGETS[dtype]
  reasons = []
  if not ours["converged"]:
    reasons.append("not converged")
  if abs(errors["energy_error_uha"]) > target["energy"]:
    reasons.append(f"|ΔE| > {target['energy']:g} µHa")
  for k in ("homo", "lumo"):
    if target["orbitals"] is not None and abs(errors[f"{k}_error_uha"]) > target["orbitals"]:
      reasons.append(f"|Δ{k.upper()}| > {target['orbitals']:g} µHa")
  extra = target["extra_iterations"]
  if extra is not None and ours["iterations"] > ref["iterations"] + extra:
    reasons.append(f"iterations > PySCF + {extra}")
  return dict(errors, passed=not reasons, result="PASS" if not reasons else "FAIL",
              fail_reasons=reasons)


def make_row(case: dict, n_ao: int, ours: dict, ref: dict) -> dict:
  """One output row: the case, the errors and verdict, and both codes' raw numbers."""
  return dict(case, n_ao=n_ao, **compare(ours, ref, case["dtype"]),
              iterations=ours["iterations"], pyscf_iterations=ref["iterations"],
              converged=ours["converged"],
              pyscf_converged=ref["converged"], energy=ours["energy"],
              pyscf_energy=ref["energy"], homo=ours["homo"], lumo=ours["lumo"],
              pyscf_homo=ref["homo"], pyscf_lumo=ref["lumo"], seconds=ours["seconds"],
              pyscf_seconds=ref["seconds"])


# ---- output ---------------------------------------------------------------------------------


class Report:
  """Prints rows as they arrive (a table, or a JSON list streamed one row per line)."""

  def __init__(self, as_json: bool, out: str | None):
    self.as_json, self.out, self.rows = as_json, out, []

  def start(self):
    if self.as_json:
      print("[", flush=True)
    else:
      print("  ".join(f"{h:>{w}}" for h, w, _, _ in COLUMNS), flush=True)

  def add(self, row: dict):
    self.rows.append(row)
    if self.as_json:
      print(("" if len(self.rows) == 1 else ",") + json.dumps(row), flush=True)
    else:
      shown = dict(row, converged="yes" if row["converged"] else "no")
      cells = [f"{shown[k]:>{w}{f}}" for _, w, k, f in COLUMNS]
      why = f"  ({'; '.join(row['fail_reasons'])})" if row["fail_reasons"] else ""
      print("  ".join(cells) + why, flush=True)
    if self.out:  # rewritten every row, so a long run interrupted late still leaves its rows
      _write_json(self.out, self.rows)

  def finish(self):
    if self.as_json:
      print("]", flush=True)
    else:
      passed = sum(r["passed"] for r in self.rows)
      print(f"{passed}/{len(self.rows)} rows pass", flush=True)
    if self.out:
      _write_json(self.out, self.rows)


def _write_json(path: str, rows: list[dict]):
  with written_whole(path) as temporary, open(temporary, "w") as f:
    json.dump(rows, f, indent=1)


# ---- main -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> bool:
  """Runs the grid, printing each row as it completes. True if every row passes."""
  # Resolve every molecule × basis first: a missing basis fails in a second, not an hour in.
  molecules = {name: qpt.molecules.get(name) for name in args.molecules}
  moles = {(m, b): molecules[m].to_pyscf(b) for m in args.molecules for b in args.basis}
  if args.out:
    check_writable(args.out)
  report = Report(args.json, args.out)
  report.start()
  for m in args.molecules:
    for b in args.basis:
      for functional in args.xc:
        for eri in args.eri:
          mol = moles[m, b]
          theory = qpt.Level(b, functional, args.grid_level, eri, "float64")
          ref = pyscf_reference(mol, theory)
          for dtype in args.dtype:
            ours = qpt_scf(molecules[m], theory.with_dtype(dtype), args.ao_on_device)
            case = dict(molecule=m, basis=b, xc=functional, eri=eri, dtype=dtype,
                        ao_on_device=args.ao_on_device)
            report.add(make_row(case, mol.nao, ours, ref))
  report.finish()
  return all(r["passed"] for r in report.rows)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  # PySCF suggests installing basis-set-exchange for an unknown basis; our one-line error suffices.
  warnings.filterwarnings("ignore", message="Basis may be available")
  # Each (basis, xc, dtype) shape bucket compiles an SCF program; a rerun reuses them from disk.
  jax.config.update("jax_compilation_cache_dir", JAX_CACHE)
  try:
    return 0 if run(args) else 1
  except qpt.InputError as e:
    print(f"validate_pyscf.py: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
