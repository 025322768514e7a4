"""Test-wide settings: float64 available, a persistent compilation cache, small shared problems."""

import os

import jax

from qpt import backends

# Float64 must be available to tests (float32 arrays stay float32 when it is on).
backends.enable_float64()
# Compiled programs survive between runs: a second `make test` skips most XLA compile time.
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
