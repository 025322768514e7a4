"""Training curves from workdir/metrics.jsonl as a PNG (matplotlib, no display needed)."""

import os

import matplotlib

matplotlib.use("Agg")  # files only: works on headless machines and in worker processes
import matplotlib.pyplot as plt  # noqa: E402

from qpt import metrics_log  # noqa: E402

PANELS = (("loss", "loss (Hartree for loss=energy)"), ("grad_norm", "gradient norm"),
          ("lr", "learning rate"), ("unique_conformers_per_s", "unique conformers / s"),
          ("val_energy_mae_uha", "validation: energy MAE of E[D(H)] (µHa)"))


def training_curves(workdir: str) -> str:
  """Writes workdir/training_curves.png from workdir/metrics.jsonl; returns the PNG's path."""
  records = metrics_log.read(workdir)
  if not records:
    raise ValueError(f"{os.path.join(workdir, 'metrics.jsonl')} holds no metrics yet")
  panels = [(key, label) for key, label in PANELS if any(key in r for r in records)]
  figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
  for ax, (key, label) in zip(axes[0], panels):
    logged = [(r["step"], r[key]) for r in records if key in r]  # validation: only some steps
    ax.plot(*zip(*logged), marker="o" if len(logged) < 30 else None)
    ax.set_xlabel("step")
    ax.set_title(label, fontsize=10)
    if key.endswith("_uha"):
      ax.set_yscale("log")
  figure.tight_layout()
  out = os.path.join(workdir, "training_curves.png")
  figure.savefig(out, dpi=100)
  plt.close(figure)
  return out
