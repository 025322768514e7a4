"""Running QPT's command lines in fresh processes from tests (device counts are fixed per process).

Children share the tests' persistent compilation cache, so a program one of them compiled is
loaded, not recompiled, by the next.
"""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(ROOT, ".jax_cache"),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")


def md17_command(*args, config="water", config_file=None):
  """experiments/md17.py with --quiet and `args`, as a subprocess argument list: `config_file`
  (experiments/configs/md17.py if None) with the argument `config` (none if None)."""
  config_file = config_file or os.path.join(ROOT, "experiments", "configs", "md17.py")
  spec = config_file if config is None else f"{config_file}:{config}"
  return [sys.executable, os.path.join(ROOT, "experiments", "md17.py"), f"--config={spec}",
          "--quiet", *args]


def launch_command(processes, *command):
  """tools/launch_local.py: `command` as `processes` local processes of one JAX run."""
  return [sys.executable, os.path.join(ROOT, "tools", "launch_local.py"),
          f"--processes={processes}", "--", *command]


def load_tool(name: str):
  """tools/<name>.py as a module (tools/ holds scripts, not a package), to call its main()."""
  spec = importlib.util.spec_from_file_location(f"{name}_tool",
                                                os.path.join(ROOT, "tools", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
