"""Backends: the only part of QPT that knows about devices, meshes, shardings and precision.

  backends.create(config) ──▶ Backend: mesh (data × model), precision policy, put_batch,
                              data_parallel (shard_map over `data`), compile_step (jit),
                              training_loop (host memory while the steps run)

`config.backend.name` picks the kind — cpu, gpu, tpu, ipu, or auto (what JAX sees). Creating a
backend also does what must happen before JAX touches a device: fake CPU devices
(`backend.cpu_devices`) and, for multi-process runs, `jax.distributed.initialize` — from
`backend.coordinator_address` / `num_processes` / `process_id`, from the QPT_COORDINATOR_ADDRESS,
QPT_NUM_PROCESSES, QPT_PROCESS_ID environment (set by tools/launch_local.py), or, under SLURM,
Open MPI or on a TPU pod, from the environment JAX detects itself.

float64 on the device is switched here and nowhere else: by `create` for a run's config, or by
`enable_float64()` / `device_dtype(dtype)` for library use (float64 reference problems).
"""

from __future__ import annotations

import contextlib
import os

import jax

from qpt.backends import cpu, gpu, ipu, tpu
from qpt.backends.base import DATA, MODEL, Backend, Policy  # noqa: F401  (public API)
from qpt.errors import InputError

KINDS = {"cpu": cpu, "gpu": gpu, "tpu": tpu, "ipu": ipu}
NAMES = ("auto", *KINDS)


def create(config) -> Backend:
  """The backend `config` asks for (config.backend, config.mesh, config.dtype), set up.

  Call it before anything else touches JAX devices in this process.
  """
  b = config.backend
  if b.name not in NAMES:
    raise InputError(f"backend.name={b.name!r}: choose one of {', '.join(NAMES)}")
  if b.cpu_devices:
    _set_cpu_devices(int(b.cpu_devices))
  if b.layout_independent:
    cpu.fix_intra_op_threads()  # before JAX starts; only XLA:CPU reads it
  _initialize_distributed(b)
  name = jax.default_backend() if b.name == "auto" else b.name
  if name not in KINDS:
    raise InputError(f"JAX runs on {name!r}, which has no QPT backend; set backend.name")
  kind = KINDS[name]
  try:
    devices = kind.devices(b)
  except RuntimeError:  # JAX's own message is a traceback's last line about plugins
    raise InputError(f"backend.name={name}: JAX sees no {name} devices here (it runs on "
                     f"{jax.default_backend()}); set backend.name=auto, or install jax's "
                     f"{name} plugin") from None
  backend = Backend(kind.POLICY, devices, config.mesh.data, config.mesh.model,
                    b.layout_independent)
  backend.check_dtype(config.dtype)
  # float64 device arrays need x64; a float32-only policy switches it off so nothing can sneak in.
  if config.dtype == "float64":
    enable_float64()
  elif not kind.POLICY.float64:
    enable_float64(False)
  return backend


def enable_float64(enabled: bool = True) -> None:
  """Switches JAX's float64 on (or off) for this process.

  Without it JAX silently computes float64 problems in float32; with it, float32 arrays still
  compute in float32. Call it before building float64 problems outside a run (`create` does it
  for a float64 config).
  """
  jax.config.update("jax_enable_x64", bool(enabled))


def float64_enabled() -> bool:
  """Whether float64 arrays compute in float64 in this process (`enable_float64`)."""
  return bool(jax.config.jax_enable_x64)


def whole_on_one_local_device(shapes):
  """`shapes` (a pytree of leaves with .shape and .dtype) as jax.ShapeDtypeStructs whose arrays
  sit whole on this process's first device: a target that a checkpoint written on any mesh,
  by any number of processes, restores into and np.asarray then reads."""
  here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=here), shapes)


@contextlib.contextmanager
def device_dtype(dtype: str):
  """A context in which `dtype` problems compute exactly as a run of that dtype would: float64
  switched on for "float64", off for "float32" (so no stray float64 constant raises the precision
  being measured)."""
  with jax.enable_x64(dtype == "float64"):
    yield


def _set_cpu_devices(n: int) -> None:
  if n < 1:
    raise InputError(f"backend.cpu_devices={n}: must be at least 1 (or 0 for JAX's default)")
  if jax.config.jax_num_cpu_devices == n:
    return
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:
    raise InputError(f"backend.cpu_devices={n} must be set before JAX starts: this process "
                     f"already has {len(jax.devices('cpu'))} CPU devices") from None


def _initialize_distributed(b) -> None:
  """Joins the multi-process run this process belongs to, if any (once per process)."""
  if jax.distributed.is_initialized():
    return
  address = b.coordinator_address or os.environ.get("QPT_COORDINATOR_ADDRESS", "")
  if address:
    try:
      count = int(b.num_processes or os.environ["QPT_NUM_PROCESSES"])
      index = int(b.process_id if b.process_id >= 0 else os.environ["QPT_PROCESS_ID"])
    except (KeyError, ValueError):
      raise InputError(f"coordinator {address}: also set backend.num_processes and "
                       "backend.process_id (or QPT_NUM_PROCESSES and QPT_PROCESS_ID)") from None
    host, _, port = address.rpartition(":")
    if not (host and port.isdigit()):
      raise InputError(f"backend.coordinator_address={address!r}: give host:port of process 0")
    if not 0 <= index < count:
      raise InputError(f"backend.process_id={index} of backend.num_processes={count}: must be "
                       f"0..{count - 1}")
    # CPU processes exchange gradients through gloo (the CPU client has no collectives otherwise).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(address, num_processes=count, process_id=index)
  elif _cluster_environment():
    jax.distributed.initialize()  # SLURM, Open MPI or a TPU pod: JAX reads its environment


def _cluster_environment() -> bool:
  several = lambda name: int(os.environ.get(name, "1") or 1) > 1
  return (several("SLURM_NTASKS") or several("OMPI_COMM_WORLD_SIZE")
          or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""))
