"""backends.create: a kind of device this machine lacks is a one-line InputError, not JAX's
traceback (CI and this project's machines have CPUs only)."""

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
