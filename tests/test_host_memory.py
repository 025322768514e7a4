"""Freed host memory is reused: a compiled program's temporaries stop costing page faults.

Each case runs in a fresh process, since malloc's settings are process-wide: the same program
with glibc's defaults (jax alone) and after `import qpt` (which calls `keep_freed_memory`).
"""

import platform
import subprocess
import sys

import pytest

N = 3200  # a (N, N) float32 product per device: 41 MB
# Four fake devices, each making its own (N, N) product at every call, in XLA's threads: the
# water step's case (docs/results.md §9). Prints the minor page faults per call after warm-up.
PROGRAM = f"""
import resource, sys
if sys.argv[1] == "qpt":
  import qpt
  assert qpt.host_memory.keep_freed_memory()
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_num_cpu_devices", 4)
split = jax.sharding.NamedSharding(jax.make_mesh((4,), ("d",)), jax.sharding.PartitionSpec("d"))
# The product is a buffer of its own: XLA:CPU fuses nothing into a matmul's output here.
f = jax.jit(jax.vmap(lambda x: jnp.sum((x @ x.T) @ x)), in_shardings=split, out_shardings=split)
x = jax.device_put(np.full((4, {N}, 64), 0.01, np.float32), split)
for _ in range(3):
  f(x).block_until_ready()
calls, before = 5, resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(calls):
  f(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls)
"""
PAGES = 4 * N * N * 4 // 4096  # of the four products


def faults_per_call(mode: str) -> float:
  out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True,
                       check=True, timeout=300)
  return float(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_programs_temporaries_are_paged_in_once():
  default, kept = faults_per_call("jax"), faults_per_call("qpt")
  # glibc's defaults: the products come back as fresh pages at every call (40,500–40,900 faults
  # per call measured, of 40,000 pages); kept: 40–2,100.
  assert default > 0.5 * PAGES, default
  assert kept < 0.1 * PAGES, kept
