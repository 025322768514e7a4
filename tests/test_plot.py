"""Training curves are written as a real PNG from metrics.jsonl."""

import json

import pytest

from qpt import plot
from tests.processes import load_tool


def test_png_from_metrics(tmp_path):
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for step in range(1, 6):
      validation = dict(val_energy_mae_uha=1e3 / step) if step % 2 == 0 else {}  # some steps
      f.write(json.dumps(dict(step=step, loss=-76.3 - 0.001 * step, grad_norm=1.0 / step, lr=1e-4,
                              unique_conformers_per_s=0.5, **validation)) + "\n")
  out = plot.training_curves(str(tmp_path))
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_empty_metrics_is_a_clear_error(tmp_path):
  (tmp_path / "metrics.jsonl").write_text("")
  with pytest.raises(ValueError, match="no metrics"):
    plot.training_curves(str(tmp_path))


def test_the_plot_tool_has_help_and_one_line_errors(capsys):
  """`tools/plot.py --help` used to look for --help/metrics.jsonl."""
  tool = load_tool("plot")
  with pytest.raises(SystemExit) as exit_:
    tool.main(["--help"])
  assert exit_.value.code == 0 and "WORKDIR/training_curves.png" in capsys.readouterr().out
  assert tool.main(["/nonexistent-run"]) == 2
  assert capsys.readouterr().err.strip() == (
      "error: /nonexistent-run/metrics.jsonl: cannot read (No such file or directory)")
