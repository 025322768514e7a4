"""Sums over conformers and devices in one fixed order, so every layout rounds alike
(`backend.layout_independent`; off by default: it makes make run's step slower, docs/results.md
§13).

Why: float32 addition is not associative, and a gradient summed in another order differs in its
last bits. Adam turns such bits into whole steps wherever the true gradient is near zero (a
component that is rounding noise is normalised to ±1), and an untrained model's E[D(H)] turns a
1e-9 change of a weight into ~1e-7 Ha (docs/results.md §9). XLA's own reductions (a scan's
accumulation, psum, reduce-scatter, jnp.sum) choose their order by layout and shape. So the
training gradient and its norm are summed here with element-wise adds only, in a balanced
pairwise tree over the global batch:

  conformers 0 1 2 3 …  ──▶  (g0 + g1) + (g2 + g3) …

A device's conformers are a contiguous block of the batch, so with power-of-two block sizes each
device's block is a subtree: its conformers summed on the device, then the devices' sums
exchanged (all_to_all: each device receives one slice of every device's sum) and summed in the
same tree, give the bits that one device summing the whole batch gives. Under FSDP a sharded
weight's gradient is reduce-scattered over `model` per conformer (`gather`'s transpose), before
the device's conformers are summed, so the tree matches when each device holds one conformer
(or `model` is 1). Which layouts agree bit for bit is tested in tests/backends/; the sums are
not all it takes (the thread pool's size, `cpu.fix_intra_op_threads`; the loss's batched
kernels, docs/results.md §9).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from qpt.precision import sum_by_halves


def tree_sum(x: jax.Array, axis: int = 0) -> jax.Array:
  """Sum of `x` over `axis` as a balanced pairwise tree of neighbours: (x0 + x1) + (x2 + x3) …
  (a length that is not a power of two is padded with zeros at the end). Element-wise adds only,
  so the bits of each result depend on nothing but its own inputs."""
  x = jnp.moveaxis(x, axis, 0)
  while x.shape[0] > 1:
    if x.shape[0] % 2:
      x = jnp.concatenate([x, jnp.zeros_like(x[:1])])
    x = x[0::2] + x[1::2]
  return x[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def copies(tree: Any, b: int) -> Any:
  """`b` copies of every array of `tree`, stacked (b, …), whose transpose is `tree_sum` over the
  copies. Map a function over the copies and each element's gradient stays its own until that
  sum. Why not map over `tree` itself: autodiff then sums a parameter's gradient over the map's
  elements as the map's transpose goes, ((g3 + g2) + g1) + g0. Maps of two in the tree's order
  were tried and were not bit for bit either (docs/results.md §9): wherever autodiff adds one
  gradient to another where it is made, XLA may fold the addition into the matmul (C = A·B + C
  in one kernel), which rounds unlike one conformer's A·B on a device of its own."""
  return jax.tree.map(lambda a: jnp.broadcast_to(a, (b, *a.shape)), tree)


def _copies_fwd(tree, b):
  return copies(tree, b), None


def _copies_bwd(b, _, cotangents):
  return (jax.tree.map(tree_sum, cotangents),)


copies.defvjp(_copies_fwd, _copies_bwd)


def sum_over_devices(x: jax.Array, axes: str | tuple[str, ...], n: int) -> jax.Array:
  """Σ of `x` over the `n` devices of mesh axes `axes` (inside shard_map), in `tree_sum`'s order
  of the devices' linear index; the result on every device. A reduce-scatter by all_to_all (each
  device receives one slice of everyone's `x` and sums it), then an all-gather: the same bytes
  moved as an all-reduce, in an order that is ours."""
  if n == 1:
    return x
  flat = x.reshape(-1)
  size = flat.shape[0]
  flat = jnp.pad(flat, (0, -size % n)).reshape(n, -1)
  parts = jax.lax.all_to_all(flat, axes, 0, 0, tiled=True)  # row i: device i's slice of mine
  total = jax.lax.all_gather(tree_sum(parts), axes, tiled=True)
  return total[:size].reshape(x.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def gather(shard: jax.Array, axis_name: str, axis: int, n: int) -> jax.Array:
  """all_gather of `shard` along `axis` over the `n` devices of `axis_name` (tiled), whose
  transpose is a reduce-scatter in `tree_sum`'s order of the devices."""
  return jax.lax.all_gather(shard, axis_name, axis=axis, tiled=True)


def _gather_fwd(shard, axis_name, axis, n):
  return gather(shard, axis_name, axis, n), None


def _gather_bwd(axis_name, axis, n, _, cotangent):
  pieces = jnp.moveaxis(cotangent, axis, 0)
  pieces = pieces.reshape(n, pieces.shape[0] // n, *pieces.shape[1:])
  mine = jax.lax.all_to_all(pieces, axis_name, 0, 0, tiled=True)  # row i: device i's of my slice
  return (jnp.moveaxis(tree_sum(mine), 0, axis),)


gather.defvjp(_gather_fwd, _gather_bwd)


def squared_norm(leaves: Sequence[jax.Array], split_axes: Sequence[int | None],
                 axis_name: str) -> jax.Array:
  """Σ of the squares of every element of `leaves` (inside shard_map), with the same bits whether
  a leaf is whole on the device (`split_axes` None) or this device's slice of it along axis 1
  over `axis_name`. Per leaf: squares, summed over every axis but axis 1 by halves (element-wise,
  so a row's sum does not depend on which rows share the device), the rows gathered whole, then
  summed by halves; the leaves' sums by halves in order."""
  sums = []
  for leaf, split in zip(leaves, split_axes):
    if split not in (None, 1):  # sliced along another axis: gather it whole first (exact)
      leaf = jax.lax.all_gather(leaf, axis_name, axis=split, tiled=True)
    squares = jnp.square(leaf)
    for axis in reversed(range(squares.ndim)):
      if axis != 1:
        squares = sum_by_halves(squares, axis)
    if split == 1:
      squares = jax.lax.all_gather(squares, axis_name, tiled=True)
    sums.append(sum_by_halves(squares, 0) if squares.ndim else squares)
  return sum_by_halves(jnp.stack(sums), 0) if sums else jnp.zeros(())
