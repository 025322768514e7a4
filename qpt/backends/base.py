"""The Backend: devices, the mesh, the precision policy, sharded batches and the compiled step.

Everything in QPT that touches devices goes through one Backend object; the kinds (cpu, gpu, tpu,
ipu) differ only in their policy (`Policy`). The parallel layout is plain data parallelism:

  host batch (this process's b_local conformers, numpy)
    ──put_batch──▶ one global jax.Array per field, sharded over the mesh's `data` axis
    ──step──▶ shard_map over `data`: each device takes its conformers' loss and gradient,
              gradients averaged with pmean ──▶ optimizer update on replicated parameters

Parameters and optimizer state are replicated (P()): the model (~5M–300M parameters) is small
next to the DFT intermediates. The mesh already has a `model` axis (size 1 by default) where
FSDP-style parameter sharding would go: give the state a PartitionSpec over `model` in
`state_sharding` and let XLA insert the all-gathers; nothing else changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qpt.errors import InputError

DATA, MODEL = "data", "model"  # mesh axis names


@dataclasses.dataclass(frozen=True)
class Policy:
  """What a kind of device allows.

  Attributes:
    name: the backend's name in config.backend.name.
    float64: whether float64 device arrays are allowed (reference runs).
    host_callbacks: whether a compiled step may call back into Python.
    static_shapes: whether every step must have the first step's shapes (no recompilation).
    shared_thread_pool: whether the devices of one process share one intra-op thread pool (XLA:CPU's
      fake devices do). Then, with more than one device in the process, each device works through
      its conformers in sequence (`lax.map`) instead of as one batch (`vmap`): jaxlib's batched
      LAPACK kernels (the eigh of a batch of conformers) split their batch into tasks on that pool
      and wait for them there, and when every pool thread is such a waiting kernel — two fake
      devices on two cores, two or more conformers each — no task ever runs and the step hangs.
      In sequence each kernel has one matrix and nothing to wait for. One device keeps the batch.
  Matmul precision is not a policy: the energy and the model pin full float32 themselves
  (`qpt.precision`), on every device and whatever the caller's JAX setting.
  """

  name: str
  float64: bool = True
  host_callbacks: bool = True
  static_shapes: bool = False
  shared_thread_pool: bool = False


class Backend:
  """Devices of one kind, arranged as a `(data, model)` mesh, with a precision policy."""

  def __init__(self, policy: Policy, devices: list, mesh_data: int = -1, mesh_model: int = 1):
    """Builds the mesh over `devices` (all processes' devices, in JAX's global order).

    Args:
      policy: the kind's rules.
      devices: the global devices to use.
      mesh_data: size of the data axis; -1 = all devices / mesh_model.
      mesh_model: size of the model axis (parameter sharding; 1 = replicated parameters).
    """
    self.policy = policy
    n = len(devices)
    if mesh_model < 1 or n % mesh_model:
      raise InputError(f"mesh.model={mesh_model} does not divide the {n} devices")
    data = n // mesh_model if mesh_data == -1 else mesh_data
    if data < 1 or data * mesh_model > n:
      raise InputError(f"mesh.data={mesh_data} × mesh.model={mesh_model} does not fit {n} devices")
    # Mesh(...) with the default (Auto) axis types: shard_map then accepts replicated inputs.
    self.mesh = Mesh(np.array(devices[:data * mesh_model]).reshape(data, mesh_model), (DATA, MODEL))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P(DATA))
    self._first_shapes = None

  # ---- where we are ------------------------------------------------------------------------------

  @property
  def name(self) -> str:
    return self.policy.name

  @property
  def data_size(self) -> int:
    return self.mesh.shape[DATA]

  @property
  def process_index(self) -> int:
    return jax.process_index()

  @property
  def process_count(self) -> int:
    return jax.process_count()

  @property
  def is_primary(self) -> bool:
    """The process that writes metrics, plots and evaluations (orbax picks its own primary)."""
    return jax.process_index() == 0

  def describe(self) -> str:
    return (f"{self.name}: {self.mesh.devices.size} devices (data {self.data_size} × model "
            f"{self.mesh.shape[MODEL]}), process {self.process_index} of {self.process_count}")

  # ---- policy ------------------------------------------------------------------------------------

  def check_dtype(self, dtype: str) -> None:
    """One-line InputError if the policy forbids `dtype` on the device."""
    if dtype == "float64" and not self.policy.float64:
      raise InputError(f"backend {self.name} computes in float32 only: dtype=float64 is refused "
                       "(use backend.name=cpu or gpu for float64 reference runs)")

  def check_batch_size(self, global_batch: int) -> int:
    """This process's share of the global batch; it must split evenly over devices and processes."""
    if global_batch % self.data_size or global_batch % self.process_count:
      raise InputError(f"train.batch_size={global_batch} does not divide over the {self.data_size} "
                       f"devices of the data axis ({self.process_count} processes)")
    return global_batch // self.process_count

  # ---- moving data -------------------------------------------------------------------------------

  def put_batch(self, local: Any) -> Any:
    """This process's slice of a batch (numpy, leading axis b_local) → global arrays on `data`."""
    if local is None:
      return None
    self._check_static(jax.tree.map(np.shape, local))
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(a)),
        local)

  def put_replicated(self, tree: Any) -> Any:
    """A pytree every process holds whole (e.g. fresh parameters) → replicated global arrays."""
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(self.replicated, np.asarray(a)), tree)

  def abstract(self, tree: Any) -> Any:
    """Shapes, dtypes and the replicated sharding of `tree`: a target for orbax restores, which
    then lands on this mesh whatever mesh wrote the checkpoint."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype,
                                                       sharding=self.replicated), tree)

  def to_host(self, tree: Any) -> Any:
    """Replicated global arrays → numpy, from this process's own copy (no communication)."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)

  def max_across_processes(self, values: tuple[int, ...]) -> tuple[int, ...]:
    """Element-wise maximum of a small integer tuple over processes (a host collective)."""
    if self.process_count == 1:
      return tuple(values)
    gathered = multihost_utils.process_allgather(np.asarray(values, np.int64))
    return tuple(int(v) for v in np.max(gathered, axis=0))

  # ---- compiling ---------------------------------------------------------------------------------

  @property
  def one_conformer_at_a_time(self) -> bool:
    """Whether a device's conformers are mapped in sequence (see `Policy.shared_thread_pool`)."""
    local = [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]
    return self.policy.shared_thread_pool and len(local) > 1

  def map_conformers(self, fn: Callable, *batched: Any) -> Any:
    """fn over the leading (conformer) axis of each of `batched`, stacked: as one batch, or one
    conformer at a time where batched kernels could deadlock (traced inside a device's program)."""
    if self.one_conformer_at_a_time:
      return jax.lax.map(lambda args: fn(*args), batched)
    return jax.vmap(fn)(*batched)

  def data_parallel(self, local_gradients: Callable) -> Callable:
    """(params, batch, labels) → (gradients, per_conformer) over the global batch.

    `local_gradients` sees one device's conformers and returns the gradient of their mean loss
    and their per-conformer losses; gradients are averaged over `data` (equal shares, so the
    mean of means is the global mean).
    """

    def per_device(params, batch, labels):
      grads, per_conformer = local_gradients(params, batch, labels)
      return jax.lax.pmean(grads, DATA), per_conformer

    # check_vma=False: with it on, differentiating w.r.t. the replicated params inside the map
    # already psums the gradient over `data` (the transpose of the implicit broadcast), and the
    # pmean above would then return the sum — n_devices × the mean. Off, the one reduction is ours.
    return jax.shard_map(per_device, mesh=self.mesh, in_specs=(P(), P(DATA), P(DATA)),
                         out_specs=(P(), P(DATA)), check_vma=False)

  def compile_step(self, step: Callable) -> Callable:
    """jit of step(state, batch, labels) → (state, metrics): state replicated and donated, batch
    and labels sharded over `data`, metrics replicated (small: every process can log them)."""
    compiled = jax.jit(step, in_shardings=(self.replicated, self.batch_sharding,
                                           self.batch_sharding),
                       out_shardings=(self.replicated, self.replicated), donate_argnums=0)
    if self.policy.host_callbacks:
      return compiled
    checked = []

    def step_without_callbacks(state, batch, labels):
      if not checked:  # once: the program is the same for every later call
        primitives = _primitives(compiled.trace(state, batch, labels).jaxpr)
        callbacks = sorted(p for p in primitives if "callback" in p)
        if callbacks:
          raise InputError(f"backend {self.name} cannot run host callbacks; the step uses "
                           f"{', '.join(callbacks)}")
        checked.append(True)
      return compiled(state, batch, labels)

    return step_without_callbacks

  def _check_static(self, shapes: Any) -> None:
    if not self.policy.static_shapes:
      return
    if self._first_shapes is None:
      self._first_shapes = shapes
    elif shapes != self._first_shapes:
      changed = next(f"{jax.tree_util.keystr(k)} {a} → {b}" for (k, a), b in zip(
          jax.tree_util.tree_leaves_with_path(self._first_shapes, is_leaf=_is_shape),
          jax.tree.leaves(shapes, is_leaf=_is_shape)) if a != b)
      raise InputError(f"backend {self.name} needs static shapes, but a batch changed shape "
                       f"({changed}); pad every conformer alike (data.pad_to)")


def _is_shape(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(i, int) for i in x)


def _primitives(jaxpr) -> set[str]:
  """Names of every primitive in a (closed) jaxpr, sub-jaxprs (scan, cond, pjit, …) included."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
          names |= _primitives(sub)
  return names
