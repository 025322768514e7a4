"""What QPT's command-line tools share: one-line errors, the molecule arguments, the output."""

import argparse
import json
import os
import sys
from typing import Callable

from qpt import molecules
from qpt.errors import InputError, machine_refusal
from qpt.molecule import Molecule


class OneLineParser(argparse.ArgumentParser):
  """argparse, but a usage error is one line on stderr (exit code 2, as argparse's own), and a
  value starting with "~" is a path in the home directory: the shell leaves "--out=~/x" alone."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")

  def parse_known_args(self, args=None, namespace=None):
    parsed, extra = super().parse_known_args(args, namespace)
    for key, value in vars(parsed).items():
      if isinstance(value, str) and value.startswith("~"):
        setattr(parsed, key, os.path.expanduser(value))
    return parsed, extra


def add_molecule_arguments(parser: argparse.ArgumentParser, xyz_help: str = "xyz file (Å)"):
  """--xyz FILE | --molecule NAME (required, one of them), and --charge."""
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--xyz", help=xyz_help)
  source.add_argument("--molecule", help=f"built-in geometry: {', '.join(molecules.names())}")
  parser.add_argument("--charge", type=int,
                      help="total charge (e); default: an xyz file's charge=, else 0")


def molecule_from_arguments(args: argparse.Namespace) -> Molecule:
  """The molecule `add_molecule_arguments` asked for (InputError if it is bad)."""
  if args.xyz:
    return Molecule.from_xyz(args.xyz, charge=args.charge)
  return molecules.get(args.molecule, charge=args.charge or 0)


def run_and_print(run: Callable[[argparse.Namespace], dict], args: argparse.Namespace,
                  summary: Callable[[dict], str]) -> dict | None:
  """`run(args)`, printed as one JSON object (`args.json`) or as `summary` of it; None after a bad
  input or a write the machine refused (`errors.machine_refusal`), which is one line on stderr
  ("error: ...") for the caller to exit with code 2."""
  try:
    out = run(args)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return None
  except OSError as e:
    print(f"error: {machine_refusal(e, 'writing')}", file=sys.stderr)
    return None
  print(json.dumps(out) if args.json else summary(out))
  return out
