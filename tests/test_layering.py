"""The code's layering: import-linter's contracts (pyproject.toml), and what they cannot see —
device, sharding and precision switches used only inside qpt/backends."""

import ast
import os
import subprocess
import sys

import pytest

from tests.processes import ROOT

# Device, sharding and precision APIs: only qpt/backends may touch them.
DEVICE_MODULES = ("jax.sharding", "jax.experimental.shard_map", "jax.experimental.multihost_utils",
                  "jax.distributed", "jax.experimental.mesh_utils")
DEVICE_ATTRIBUTES = ("jax.devices", "jax.local_devices", "jax.shard_map", "jax.device_put",
                     "jax.make_array_from_process_local_data", "jax.enable_x64", "jax.distributed",
                     "jax.sharding", "jax.lax.pmean", "jax.lax.psum", "jax.lax.all_gather",
                     "jax.lax.psum_scatter")
DEVICE_SETTINGS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_num_cpu_devices",
                   "jax_cpu_collectives_implementation")


def test_import_linter_contracts_are_kept():
  lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
  result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
  assert "0 broken" in result.stdout and "4 kept" in result.stdout, result.stdout[-2000:]


def _sources():
  """Every .py file of qpt/ (outside qpt/backends), tools/ and experiments/."""
  for top in ("qpt", "tools", "experiments"):
    for folder, _, files in os.walk(os.path.join(ROOT, top)):
      if os.path.relpath(folder, ROOT).startswith(os.path.join("qpt", "backends")):
        continue
      yield from (os.path.join(folder, f) for f in files if f.endswith(".py"))


def _dotted(node) -> str:
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else ""


def _device_uses(path: str) -> list[str]:
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [a.name for a in node.names if a.name.startswith(DEVICE_MODULES)]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [f"{node.module}.{a.name}" for a in node.names]
      found += [n for n in names if n.startswith(DEVICE_MODULES) or n in DEVICE_ATTRIBUTES]
    elif isinstance(node, ast.Attribute) and _dotted(node) in DEVICE_ATTRIBUTES:
      found.append(_dotted(node))
    elif isinstance(node, ast.Constant) and node.value in DEVICE_SETTINGS:
      found.append(node.value)
  return found


@pytest.mark.parametrize("path", sorted(_sources()), ids=lambda p: os.path.relpath(p, ROOT))
def test_only_the_backends_touch_devices_shardings_and_precision(path):
  assert _device_uses(path) == [], f"{os.path.relpath(path, ROOT)}: use qpt.backends instead"


def test_the_check_sees_a_device_use(tmp_path):
  sample = tmp_path / "sample.py"
  sample.write_text("import jax\nfrom jax.sharding import Mesh\n"
                    "jax.config.update('jax_enable_x64', True)\nx = jax.devices()\n")
  assert sorted(_device_uses(str(sample))) == ["jax.devices", "jax.sharding.Mesh", "jax_enable_x64"]
