"""Plot a run's training curves: python tools/plot.py WORKDIR  → WORKDIR/training_curves.png."""

import sys

from qpt import cli, plot


def main(argv=None) -> int:
  parser = cli.OneLineParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir", help="a training run's directory (it holds metrics.jsonl)")
  args = parser.parse_args(argv)
  try:
    print(plot.training_curves(args.workdir))
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
