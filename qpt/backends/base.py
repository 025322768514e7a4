"""The Backend: devices, the mesh, the precision policy, sharded batches, state and the step.

Everything in QPT that touches devices goes through one Backend object; the kinds (cpu, gpu, tpu,
ipu) differ only in their policy (`Policy`). The mesh is (data, model); every device computes
whole conformers, and the two axes differ only in what they do to the training state:

  host batch (this process's b_local conformers, numpy)
    ──put_batch──▶ one global jax.Array per field, split over every device (data × model)
    ──step──▶ shard_map: each device takes its conformers' loss and gradient; the model reads
              its parameters through `gather_parameter`, which all-gathers a sharded one over
              `model` where its layer uses it (its transpose reduce-scatters the gradient);
              gradients are averaged over the batch's devices
    ──▶ the optimizer update, each device on its own slice of the parameters and moments

  mesh.model = 1: parameters, gradients and Adam moments replicated — plain data parallelism,
    the fastest layout while the state fits on devices that each have their own cores.
  mesh.model = 0 (default): the backend's choice, `default_model_size` — replicated, except where
    the devices of a process share its cores (XLA:CPU's fake devices): FSDP over them there.
  mesh.model = N: FSDP (ZeRO-3). Every large weight matrix of the state (`state_spec`: ≥ 2 dims,
    ≥ SHARD_MIN_SIZE elements — all transformer-block matrices) and its Adam moments are split N
    ways along one dimension; small arrays (biases, norms, embeddings, counters) stay replicated.
    Per device the state then costs ~1/N, at the price of one all-gather of each layer's weights
    and one reduce-scatter of its gradient per step.

  backend.layout_independent: every sum of the gradient (over a device's conformers, over
    devices) and of its norm runs in one fixed order (`reduction`), and XLA:CPU's thread pool
    has one size whatever the fake devices (`cpu.fix_intra_op_threads`), so that layouts agree
    bit for bit; otherwise XLA's reductions, whose order depends on the layout (agreement to
    ~1e-6 Ha over 12 tiny-model steps, docs/results.md §9).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import distributed  # the runtime's keyed barrier has no public name yet
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qpt.backends import host_memory, reduction
from qpt.errors import InputError

DATA, MODEL = "data", "model"  # mesh axis names
BATCH = (DATA, MODEL)  # the batch is split over every device of the mesh
SHARD_MIN_SIZE = 2 ** 16  # elements: smaller arrays of the state stay replicated under FSDP
BARRIER_TIMEOUT_MS = 60 * 60 * 1000  # a process may compile or validate this long while others wait


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
      (The model is mapped alike, unless the sums are layout-independent: `Backend.map_model`.)
      The devices then also share the cores, so work every device repeats (the optimizer's
      update of a replicated state) costs N times over: the default layout shards the state
      over the process's devices instead (`default_model_size`).
    host_buffers: whether a compiled step's buffers are host memory from malloc (XLA:CPU's).
      Then the loop of steps keeps freed memory for reuse (`Backend.training_loop`).
  Matmul precision is not a policy: the energy and the model pin full float32 themselves
  (`qpt.precision`), on every device and whatever the caller's JAX setting.
  """

  name: str
  float64: bool = True
  host_callbacks: bool = True
  static_shapes: bool = False
  shared_thread_pool: bool = False
  host_buffers: bool = False


class Backend:
  """Devices of one kind, arranged as a `(data, model)` mesh, with a precision policy."""

  def __init__(self, policy: Policy, devices: list, mesh_data: int = -1, mesh_model: int = 1,
               layout_independent: bool = False):
    """Builds the mesh over `devices` (all processes' devices, in JAX's global order).

    Args:
      policy: the kind's rules.
      devices: the global devices to use.
      mesh_data: size of the data axis; -1 = all devices / mesh_model.
      mesh_model: size of the model axis (parameter sharding; 1 = replicated parameters; 0 = the
        backend's choice, `default_model_size`).
      layout_independent: sum the gradient and its norm in one fixed order (`reduction`), so that
        layouts agree bit for bit, at a cost (docs/results.md §9).
    """
    self.policy = policy
    self.layout_independent = bool(layout_independent)
    n = len(devices)
    # Chosen, not asked for: a matrix that cannot be split stays replicated instead of an error.
    self.model_chosen = mesh_model == 0
    if self.model_chosen:
      mesh_model = default_model_size(policy, devices, mesh_data)
    if mesh_model < 1 or n % mesh_model:
      raise InputError(f"mesh.model={mesh_model} does not divide the {n} devices")
    data = n // mesh_model if mesh_data == -1 else mesh_data
    if data < 1 or data * mesh_model > n:
      raise InputError(f"mesh.data={mesh_data} × mesh.model={mesh_model} does not fit {n} devices")
    # Mesh(...) with the default (Auto) axis types: shard_map then accepts replicated inputs.
    self.mesh = Mesh(np.array(devices[:data * mesh_model]).reshape(data, mesh_model), (DATA, MODEL))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P(BATCH))
    self._first_shapes = None
    self._barriers = 0

  # ---- where we are ------------------------------------------------------------------------------

  @property
  def name(self) -> str:
    return self.policy.name

  @property
  def data_size(self) -> int:
    """Devices the batch is split over: all of the mesh's (data × model)."""
    return self.mesh.devices.size

  @property
  def model_size(self) -> int:
    """Ways the training state is sharded (1: replicated)."""
    return self.mesh.shape[MODEL]

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
    return (f"{self.name}: {self.mesh.devices.size} devices (data {self.mesh.shape[DATA]} × model "
            f"{self.model_size}), process {self.process_index} of {self.process_count}")

  def barrier(self, name: str, timeout_ms: int = BARRIER_TIMEOUT_MS) -> None:
    """Waits until every process of a multi-process run gets here (a no-op with one process).

    Why not a device collective: processes that reach a collective far apart in time fail. The
    first collective over a set of devices creates its gloo (CPU) communicator, whose rendezvous
    gives up after 30 s — and one process may compile a program or validate for longer than that
    while the others wait (seen: `Connect timeout` at the first step of a 2-process run on a busy
    machine). The distributed runtime's keyed barrier waits `timeout_ms` (BARRIER_TIMEOUT_MS).
    Every process calls the same barriers in the same order, so their running numbers agree.
    """
    if self.process_count == 1:
      return
    self._barriers += 1
    key = f"qpt/{name}/{self._barriers}"
    _while_signals_run(lambda: distributed.global_state.client.wait_at_barrier(key, timeout_ms))

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
                       f"devices of the mesh ({self.process_count} processes)")
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

  # ---- the training state -------------------------------------------------------------------

  def state_spec(self, name: str, shape: tuple[int, ...]) -> P:
    """Where an array of the training state lives: replicated (P()), or under FSDP split over
    `model` along its outermost dimension after the first that divides evenly: for a layer
    stack's (layers, rows, columns) matrix the rows, so the all-gather and reduce-scatter of one
    layer's slice move contiguous blocks, several times faster than the strided pieces of a split
    along the last axis (docs/results.md §13).

    A large matrix no dimension of which divides is a one-line InputError naming it (`name`), or
    replicated where the backend chose the layout (`mesh.model = 0`).
    """
    n = self.model_size
    if n == 1 or len(shape) < 2 or math.prod(shape) < SHARD_MIN_SIZE:
      return P()
    # The leading axis may be a layer stack (hk.layer_stack: biases (layers, d) as well as
    # matrices): it is scanned over and each layer's slice is gathered where it is used
    # (`gather_parameter`), so it is never the one split.
    fits = [d for d in range(1, len(shape)) if shape[d] % n == 0]
    if not fits and self.model_chosen:
      return P()
    if not fits:
      raise InputError(f"mesh.model={n} cannot shard parameter {name} of shape {tuple(shape)}: "
                       f"no dimension after the first divides by {n}")
    axis = fits[0]
    return P(*(MODEL if d == axis else None for d in range(len(shape))))

  def state_specs(self, tree: Any) -> Any:
    """`state_spec` of every array of `tree` (arrays or shape-dtype structs)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, a: self.state_spec(jax.tree_util.keystr(path), np.shape(a)), tree)

  def state_shardings(self, tree: Any) -> Any:
    return jax.tree.map(lambda spec: NamedSharding(self.mesh, spec), self.state_specs(tree),
                        is_leaf=lambda x: isinstance(x, P))

  def state_bytes_per_device(self, tree: Any) -> int:
    """Bytes one device holds of `tree` (arrays or shape-dtype structs) laid out as the state is,
    by JAX's own shard shapes."""
    return sum(int(np.prod(sharding.shard_shape(np.shape(a)))) * np.dtype(a.dtype).itemsize
               for a, sharding in zip(jax.tree.leaves(tree),
                                      jax.tree.leaves(self.state_shardings(tree))))

  def put_state(self, tree: Any) -> Any:
    """A pytree every process holds whole (numpy: fresh or loaded parameters) → global arrays laid
    out as the state is (`state_spec`)."""
    return jax.tree.map(lambda a, sharding: jax.make_array_from_callback(
        np.shape(a), sharding, lambda index: np.asarray(a)[index]), tree,
        self.state_shardings(tree))

  def make_state(self, fn: Callable, *args: Any) -> Any:
    """fn(*args), compiled, its outputs created directly in the state's layout (e.g. Adam's
    moments of placed parameters: no replicated copy of them is ever made)."""
    shardings = self.state_shardings(jax.eval_shape(fn, *args))
    return jax.jit(fn, out_shardings=shardings)(*args)

  def abstract(self, tree: Any) -> Any:
    """Shapes, dtypes and this mesh's state layout of `tree`: a target for orbax restores, which
    then lands on this mesh whatever mesh (or sharding) wrote the checkpoint."""
    return jax.tree.map(lambda a, sharding: jax.ShapeDtypeStruct(np.shape(a), a.dtype,
                                                                 sharding=sharding),
                        tree, self.state_shardings(tree))

  def to_host(self, tree: Any) -> Any:
    """Global arrays → numpy. Replicated ones are read from this process's own copy; sharded ones
    are gathered, which in a multi-process run is a collective: every process must call it."""
    def fetch(a):
      if a.is_fully_replicated:
        return np.asarray(a.addressable_data(0))
      if a.is_fully_addressable:
        return np.asarray(a)
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    if any(not (a.is_fully_replicated or a.is_fully_addressable) for a in jax.tree.leaves(tree)):
      self.barrier("gather")
    return jax.tree.map(fetch, tree)

  def max_across_processes(self, values: tuple[int, ...]) -> tuple[int, ...]:
    """Element-wise maximum of a small integer tuple over processes (a host collective)."""
    if self.process_count == 1:
      return tuple(values)
    self.barrier("max")
    gathered = multihost_utils.process_allgather(np.asarray(values, np.int64))
    return tuple(int(v) for v in np.max(gathered, axis=0))

  # ---- running -----------------------------------------------------------------------------------

  def training_loop(self) -> contextlib.AbstractContextManager:
    """The context a loop of steps runs in. Where the step's buffers are host memory
    (`Policy.host_buffers`), glibc keeps the memory each step frees for the next, instead of
    paging it in anew (`host_memory`; docs/results.md §9); glibc's own settings return when the
    loop ends."""
    if self.policy.host_buffers:
      return host_memory.freed_memory_kept()
    return contextlib.nullcontext()

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

  def map_model(self, fn: Callable, params: Any, batch: Any) -> Any:
    """fn(params, problem) over a device's conformers (traced inside a device's program),
    stacked: the model's map.

    By default as `map_conformers` maps the loss: one device batches its conformers (the model's
    matmuls take them all as rows, much faster than one at a time: docs/results.md §13).
    Layout-independent, one at a time, over copies of the parameters (`reduction.copies`).
    Batched, a matmul's rows change the last bits of each conformer's result with how many
    conformers share the device (XLA:CPU sums a row differently for another row count, ~1e-6 Ha
    of an untrained model's E, docs/results.md §9), and the copies keep each conformer's
    gradient its own until the fixed tree sums it.
    """
    if self.layout_independent:
      b = jax.tree.leaves(batch)[0].shape[0]
      return jax.lax.map(lambda args: fn(*args), (reduction.copies(params, b), batch))
    return self.map_conformers(lambda problem: fn(params, problem), batch)

  def data_parallel(self, local_gradients: Callable) -> Callable:
    """(params, batch, labels) → (gradient, its global 2-norm, per_conformer) over the batch.

    `local_gradients` sees one device's conformers and its shards of the parameters, and returns
    the gradient of the sum of their losses w.r.t. those shards (its model mapped over them by
    `map_model`) and their per-conformer values. Its model must read every parameter through
    `gather_parameter`, which all-gathers a sharded one where it is used (its transpose
    reduce-scatters that conformer's gradient). The gradient returned is the mean over the
    global batch.

    Layout-independent (`backend.layout_independent`), every sum over conformers and devices,
    and the norm, run in one fixed order (`reduction`), and XLA:CPU's thread pool has one size
    (`cpu.fix_intra_op_threads`): the same bits on every power-of-two layout with one conformer
    per device — not just the same value. (With several per device the loss's batched kernels may
    round a conformer otherwise: docs/results.md §9.) Otherwise XLA's own reductions (psum,
    reduce-scatter), whose order depends on the layout.
    """

    def gradients(params, batch, labels):
      specs = self.state_specs(params)  # from the global shapes, at trace time
      split = [_model_axis(spec) for spec in jax.tree.leaves(specs,
                                                            is_leaf=lambda x: isinstance(x, P))]
      n_batch = jax.tree.leaves(batch)[0].shape[0]  # the global batch (shapes at trace time)

      def per_device(shards, batch, labels):
        local, per_conformer = local_gradients(shards, batch, labels)
        leaves, tree = jax.tree.flatten(local)
        # A sharded leaf was already summed over `model` (per conformer, by the gather's
        # transpose); the rest of the batch is on the other devices of `data`. A replicated
        # leaf is summed over every device.
        total = [None] * len(leaves)
        for sharded, axes, n in ((True, DATA, self.mesh.shape[DATA]),
                                 (False, BATCH, self.data_size)):
          group = [i for i, axis in enumerate(split) if (axis is not None) == sharded]
          if not group:
            continue
          if self.layout_independent:
            summed = _unconcat(reduction.sum_over_devices(
                jnp.concatenate([leaves[i].reshape(-1) for i in group]), axes, n),
                [leaves[i] for i in group])
          else:
            summed = [jax.lax.psum(leaves[i], axes) for i in group]
          for i, leaf in zip(group, summed):
            total[i] = leaf / n_batch
        if self.layout_independent:
          squares = reduction.squared_norm(total, split, MODEL)
        else:
          sums = [jnp.sum(jnp.square(leaf)) for leaf in total]
          squares = (sum(s for s, axis in zip(sums, split) if axis is None)
                     + jax.lax.psum(sum(s for s, axis in zip(sums, split) if axis is not None),
                                    MODEL))
        return jax.tree.unflatten(tree, total), jnp.sqrt(squares), per_conformer

      # check_vma=False: with it on, differentiating w.r.t. the replicated params inside the map
      # already psums the gradient (the transpose of the implicit broadcast); off, every
      # reduction is ours.
      return jax.shard_map(per_device, mesh=self.mesh, in_specs=(specs, P(BATCH), P(BATCH)),
                           out_specs=(specs, P(), P(BATCH)), check_vma=False)(params, batch,
                                                                               labels)

    return gradients

  def gather_parameter(self, next_getter: Callable, value: jax.Array, context: Any) -> jax.Array:
    """A Haiku custom getter: a parameter arriving as this device's shard (smaller than the shape
    its module asks for along one dimension) is all-gathered over `model` where it is used; the
    gather's transpose reduce-scatters its gradient (layout-independent: in a fixed order,
    `reduction.gather`).

    Inside `hk.layer_stack` that is one layer's slice per scan step, so under FSDP a device holds
    one layer's full weights at a time (with `model.remat`, also in the backward pass, which
    gathers again) — not the whole model. Replicated parameters pass through untouched.
    """
    wanted = tuple(context.original_shape)
    if value.shape != wanted:
      axis = next(d for d, (a, b) in enumerate(zip(value.shape, wanted)) if a != b)
      if self.layout_independent:
        value = reduction.gather(value, MODEL, axis, self.model_size)
      else:
        value = jax.lax.all_gather(value, MODEL, axis=axis, tiled=True)
    return next_getter(value)

  def compile_step(self, step: Callable) -> CompiledStep:
    """jit of step(state, batch, labels) → (state, metrics): the state in its layout
    (`state_spec`) and donated, batch and labels split over the devices, metrics replicated (small:
    every process can log them)."""
    return CompiledStep(self, step)

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


class CompiledStep:
  """The train step as `Backend.compile_step` makes it: compiled at the first call, when the
  state's shapes (and so its layout) are known; `lower` gives XLA's program (memory accounts)."""

  def __init__(self, backend: Backend, step: Callable):
    self._backend, self._step, self._program = backend, step, None
    self._compiled = {}  # multi-process: batch shapes → executable

  def program(self, state: Any) -> Any:
    """The jitted step for a state of these shapes (arrays or shape-dtype structs)."""
    if self._program is None:  # once: every later call has the same state shapes
      b = self._backend
      layout = b.state_shardings(state)
      self._program = jax.jit(self._step, in_shardings=(layout, b.batch_sharding, b.batch_sharding),
                              out_shardings=(layout, b.replicated), donate_argnums=0)
    return self._program

  def lower(self, state: Any, batch: Any, labels: Any) -> Any:
    return self.program(state).lower(state, batch, labels)

  def __call__(self, state: Any, batch: Any, labels: Any) -> tuple[Any, Any]:
    if self._program is None and not self._backend.policy.host_callbacks:
      primitives = _primitives(self.program(state).trace(state, batch, labels).jaxpr)
      if callbacks := sorted(p for p in primitives if "callback" in p):
        self._program = None  # refused every time, not just the first
        raise InputError(f"backend {self._backend.name} cannot run host callbacks; the step uses "
                         f"{', '.join(callbacks)}")
    program = self.program(state)
    if self._backend.process_count == 1:
      return program(state, batch, labels)
    # Several processes: a new batch shape is compiled first, and every process starts it together
    # (`Backend.barrier`), so no process waits in its collectives while another compiles.
    leaves, tree = jax.tree.flatten((batch, labels))
    key = (tree, tuple(np.shape(a) for a in leaves))
    if key not in self._compiled:
      self._compiled[key] = program.lower(state, batch, labels).compile()
      self._backend.barrier("step")
    return self._compiled[key](state, batch, labels)


def default_model_size(policy: Policy, devices: list, mesh_data: int) -> int:
  """The model axis of `mesh.model = 0`: 1 (replicated), or, where a process's devices share its
  cores (`Policy.shared_thread_pool`) and `mesh.data` is left to follow (-1), the number of this
  process's devices, so the state is sharded (FSDP) within each process and replicated across
  processes.

  Why: replicated, every device runs the optimizer's update of the whole state, and on shared
  cores those runs queue; sharded, each runs a quarter of it. On 4 fake CPU devices water's step
  is faster sharded, on 2 the two are even (docs/results.md §9, §13). Devices with their own
  cores (GPUs, TPUs) run the repeated update side by side, and replicated saves the gathers.
  """
  if not policy.shared_thread_pool or mesh_data != -1:
    return 1
  return sum(d.process_index == jax.process_index() for d in devices)


def _unconcat(flat: jax.Array, like: list) -> list:
  """`flat` cut back into arrays of the shapes of `like`, in order."""
  ends = np.cumsum([a.size for a in like])[:-1]
  return [part.reshape(a.shape) for part, a in zip(jnp.split(flat, ends), like)]


def _model_axis(spec: P) -> int | None:
  """The dimension a state spec splits over `model`, or None if replicated."""
  return next((d for d, name in enumerate(spec) if name == MODEL), None)


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


def _while_signals_run(wait: Callable[[], None]) -> None:
  """wait() on a thread of its own while the calling thread sleeps in short steps, so that a
  signal's Python handler runs at once. Python runs handlers on the main thread between
  bytecodes: one blocked in the C++ barrier heard SIGTERM only when the barrier failed, after
  process 0 had exited, and then aborted with JAX's C++ error lines
  (tests/backends/test_data_parallel.py). wait()'s exception, a barrier's timeout, is raised
  here."""
  failure = []

  def run():
    try:
      wait()
    except BaseException as e:  # re-raised on the caller's thread
      failure.append(e)

  waiter = threading.Thread(target=run, name="qpt-barrier", daemon=True)
  waiter.start()
  while waiter.is_alive():
    waiter.join(timeout=0.2)
  if failure:
    raise failure[0]
