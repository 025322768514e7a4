"""The CPU backend's fixed thread pool for layout-independent runs (`cpu.fix_intra_op_threads`).

XLA:CPU sizes its intra-op pool by the process's fake devices, and Eigen's matmul rounds some
rows of a product by the pool's size. Each process here is fresh (the pool is made when JAX
starts) and computes the product that showed it: f32[7, 1024]ᵀ · f32[7, 256], whose rows 978,
979, 1022 and 1023 differ between 1 and 4 unfixed devices on a 2-core AMD EPYC (not on a 2-core
Intel Xeon with AVX-512, where the test passes either way).
"""

import subprocess
import sys

import numpy as np

from tests.processes import ENV, ROOT

PRODUCT = """
import sys
import jax, numpy as np
from qpt import backends
from experiments.configs import md17

config = md17.get_config("water")
config.backend.cpu_devices = int(sys.argv[1])
config.backend.layout_independent = sys.argv[2] == "fixed"
backends.create(config)
rng = np.random.default_rng(0)
a = rng.standard_normal((7, 1024)).astype(np.float32)
b = rng.standard_normal((7, 256)).astype(np.float32)
product = jax.jit(lambda a, b: jax.numpy.einsum("tk,tn->kn", a, b, precision="highest"))(a, b)
np.save(sys.argv[3], np.asarray(product))
"""


def product(tmp_path, devices, pool):
  out = tmp_path / f"{devices}_{pool}.npy"
  env = {k: v for k, v in ENV.items() if k != "NPROC"}  # the pool's size is the backend's to fix
  result = subprocess.run([sys.executable, "-c", PRODUCT, str(devices), pool, str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return np.load(out)


def test_layout_independent_products_have_the_same_bits_on_1_and_4_devices(tmp_path):
  one, four = product(tmp_path, 1, "fixed"), product(tmp_path, 4, "fixed")
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal(s).astype(np.float32).astype(np.float64) for s in ((7, 1024),
                                                                                 (7, 256)))
  reference = np.einsum("tk,tn->kn", a, b)
  np.testing.assert_allclose(one, reference, atol=1e-5)  # the right product, in float32
  np.testing.assert_array_equal(one, four)


def test_the_pool_cannot_be_fixed_once_jax_has_started():
  script = ("import jax; jax.devices(); from qpt.backends import cpu; from qpt.errors import "
            "InputError\ntry:\n  cpu.fix_intra_op_threads()\nexcept InputError as e:\n  print(e)")
  env = {k: v for k, v in ENV.items() if k != "NPROC"}
  result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.stdout.strip() == ("backend.layout_independent must be set before JAX starts: "
                                   "this process already has its CPU thread pool")

