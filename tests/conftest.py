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

# The files that take longest (worker-seconds in `make test`, docs/results.md §11), first. xdist
# (`--dist loadfile --no-loadscope-reorder`) hands a worker the next file as it runs out, so the
# long ones start at once and the short ones fill in: the two workers finish together. Its own
# order (files with the most tests first) left the 6-test multi-process file to the end, alone on
# one worker for two minutes.
SLOWEST_FIRST = ("tests/test_experiment.py", "tests/backends/test_data_parallel.py",
                 "tests/test_dft_gradients.py", "tests/test_ao_values.py", "tests/test_dft.py",
                 "tests/test_md17_cli.py")


def pytest_collection_modifyitems(items):
  file_of = lambda item: item.nodeid.split("::")[0]
  rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(file_of(item), len(SLOWEST_FIRST)))  # stable otherwise
