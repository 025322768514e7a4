"""Training curves from workdir/metrics.jsonl as a PNG (matplotlib, no display needed)."""

import json
import os

import matplotlib

matplotlib.use("Agg")  # files only: works on headless machines and in worker processes
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (("loss", "loss (Hartree for loss=energy)"), ("grad_norm", "gradient norm"),
          ("lr", "learning rate"), ("unique_conformers_per_s", "unique conformers / s"))


def training_curves(workdir: str) -> str:
  """Writes workdir/training_curves.png from workdir/metrics.jsonl; returns the PNG's path."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  if not records:
    raise ValueError(f"{path} holds no metrics yet")
  steps = [r["step"] for r in records]
  figure, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
  for ax, (key, label) in zip(axes, PANELS):
    ax.plot(steps, [r.get(key, float("nan")) for r in records])
    ax.set_xlabel("step")
    ax.set_title(label, fontsize=10)
  figure.tight_layout()
  out = os.path.join(workdir, "training_curves.png")
  figure.savefig(out, dpi=100)
  plt.close(figure)
  return out
