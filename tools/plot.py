"""Plot a run's training curves: python tools/plot.py WORKDIR  → WORKDIR/training_curves.png."""

import sys

from qpt import plot

if __name__ == "__main__":
  if len(sys.argv) != 2:
    print("usage: python tools/plot.py WORKDIR", file=sys.stderr)
    sys.exit(2)
  try:
    print(plot.training_curves(sys.argv[1]))
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
