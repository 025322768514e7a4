"""Freed host memory is kept while steps run: a compiled program's temporaries stop costing page
faults inside `freed_memory_kept`, and glibc's own settings are back after it.

One fresh process runs the three phases in turn, since malloc's settings are process-wide.
"""

import json
import platform
import subprocess
import sys

import pytest

N = 3200  # an (N, N) float32 product per device: 41 MB, over glibc's 32 MB mmap ceiling
# Four fake devices, each making its own (N, N) product at every call, in XLA's threads: the
# water step's case (docs/results.md §9). Prints the minor page faults per call after warm-up,
# before, inside and after `freed_memory_kept` (nested once: the inner exit must keep them).
PROGRAM = f"""
import json, resource
import jax, jax.numpy as jnp, numpy as np
from qpt.backends import host_memory
jax.config.update("jax_num_cpu_devices", 4)
split = jax.sharding.NamedSharding(jax.make_mesh((4,), ("d",)), jax.sharding.PartitionSpec("d"))
# The product is a buffer of its own: XLA:CPU fuses nothing into a matmul's output here.
f = jax.jit(jax.vmap(lambda x: jnp.sum((x @ x.T) @ x)), in_shardings=split, out_shardings=split)
x = jax.device_put(np.full((4, {N}, 64), 0.01, np.float32), split)

def faults_per_call(fn, calls=10):
  for _ in range(10):  # each of XLA's threads may run a device's program: all have warmed up
    fn()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(calls):
    fn()
  return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls

program = lambda: f(x).block_until_ready()
array = lambda: np.ones({N} * {N}, np.float32)  # the same 41 MB, made on this thread by numpy
# numpy asks for huge pages for large arrays (one fault per 2 MB): off, to count 4 KB pages.
np._core.multiarray._set_madvise_hugepage(False)
out = dict(program=faults_per_call(program), array=faults_per_call(array))
with host_memory.freed_memory_kept() as kept:
  with host_memory.freed_memory_kept():
    pass
  out.update(program_kept=faults_per_call(program), array_kept=faults_per_call(array))
  out["took_effect"] = kept
out["array_after"] = faults_per_call(array)
print(json.dumps(out))
"""
PAGES = N * N * 4 // 4096  # of one product


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_temporaries_are_paged_in_once_while_kept_and_glibcs_settings_return_after():
  out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                       check=True, timeout=300)
  faults = json.loads(out.stdout.splitlines()[-1])
  assert faults["took_effect"]
  # glibc's defaults: the four products come back as fresh pages at every call (40,200–40,900
  # faults per call measured, of 40,000 pages); kept: 0–2,000. With 3 warm-up calls instead of
  # 10, on a loaded machine, a thread's first product could still fall in the count: ~4,100.
  assert faults["program"] > 0.5 * 4 * PAGES, faults
  assert faults["program_kept"] < 0.1 * 4 * PAGES, faults
  # numpy's array likewise, and again once glibc's settings are back: over 32 MB, its own mmap.
  assert faults["array"] > 0.5 * PAGES, faults
  assert faults["array_kept"] < 0.1 * PAGES, faults
  assert faults["array_after"] > 0.5 * PAGES, faults


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_only_a_backend_with_host_buffers_keeps_freed_memory_in_its_training_loop():
  import jax

  from qpt import backends

  for kind, expected in ((backends.cpu, True), (backends.ipu, True), (backends.gpu, None)):
    backend = backends.Backend(kind.POLICY, jax.devices("cpu")[:1])
    with backend.training_loop() as kept:
      assert kept is expected, kind.POLICY.name
