"""IPU-style accelerators: float32 only, no host callbacks, static shapes (every step compiles to
the first step's program), small per-core memory.

With the IPU JAX plugin installed the devices are the plugin's ("ipu" platform). Without it,
`backend.emulate=True` applies the same policy to the CPU — float32 with x64 disabled, callbacks
and shape changes refused — so the policy is exercised on every machine.
"""

import jax

from qpt.backends.base import Policy
from qpt.errors import InputError

# shared_thread_pool, host_buffers: emulated on the CPU, its devices are XLA:CPU's.
POLICY = Policy("ipu", float64=False, host_callbacks=False, static_shapes=True,
                shared_thread_pool=True, host_buffers=True)


def devices(backend_config) -> list:
  try:
    return jax.devices("ipu")
  except RuntimeError:
    if backend_config.emulate:
      return jax.devices("cpu")
    raise InputError("backend.name=ipu: no IPU platform (the IPU JAX plugin is not installed); "
                     "set backend.emulate=True to run the IPU policy on the CPU") from None
