"""backends.create: a kind of device this machine lacks (CI's and ours have CPUs only), or a
multi-process setting that cannot join, is a one-line InputError, not JAX's traceback."""

import jax
import pytest

from experiments.configs import md17
from qpt import backends
from qpt.errors import InputError


@pytest.mark.parametrize("name", ["gpu", "tpu"])
def test_a_missing_kind_of_device_is_named(name):
  if any(d.platform == name for d in jax.devices()):
    pytest.skip(f"this machine has {name} devices")
  config = md17.get_config("water")
  config.backend.name = name
  with pytest.raises(InputError, match=f"backend.name={name}: JAX sees no {name} devices"):
    backends.create(config)


@pytest.mark.parametrize("address, processes, index, message", [
    ("localhost", 1, 0, "coordinator_address='localhost': give host:port"),  # was an IndexError
    ("localhost:23456", 2, 5, "process_id=5 of backend.num_processes=2: must be 0..1"),
])
def test_a_multi_process_setting_that_cannot_join_is_named(address, processes, index, message):
  """Refused before `jax.distributed.initialize`, whose own errors are 25-line tracebacks."""
  config = md17.get_config("water")
  b = config.backend
  b.coordinator_address, b.num_processes, b.process_id = address, processes, index
  with pytest.raises(InputError, match=message):
    backends.create(config)
  assert not jax.distributed.is_initialized()
