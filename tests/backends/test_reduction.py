"""The fixed-order sums (`qpt.backends.reduction`) against the order they promise, written out.

Across devices and layouts they are tested whole in test_data_parallel.py (trajectories that agree
bit for bit); here, on one device, each piece's order and value."""

import jax
import jax.numpy as jnp
import numpy as np

from qpt import precision
from qpt.backends import reduction


def test_tree_sum_adds_neighbours_then_pairs():
  # Values whose float32 sum depends on the order: 1e8 + 1 rounds away, 1 + 1 does not.
  x = jnp.array([1e8, 1.0, 1.0, -1e8, 1.0], jnp.float32)
  f32 = np.float32
  expected = ((f32(1e8) + f32(1)) + (f32(1) + f32(-1e8))) + (f32(1) + f32(0))
  assert reduction.tree_sum(x) == expected
  assert expected != np.float32(3.0)  # the exact sum: the order really shows
  # Along any axis, element by element.
  rows = jax.random.normal(jax.random.key(0), (8, 3, 5))
  for axis in range(3):
    assert np.allclose(reduction.tree_sum(rows, axis), np.sum(np.asarray(rows, np.float64), axis),
                       rtol=1e-6, atol=1e-6)


def test_the_norm_is_the_two_norm_and_does_not_depend_on_which_rows_are_given():
  leaves = [jax.random.normal(jax.random.key(i), shape)
            for i, shape in enumerate([(), (7,), (5, 6), (3, 8, 4)])]
  exact = sum(np.sum(np.asarray(a, np.float64) ** 2) for a in leaves)
  whole = reduction.squared_norm(leaves, [None] * 4, "model")
  assert abs(float(whole) - exact) <= 1e-6 * exact
  # A device holding some rows of axis 1 (FSDP's slice) sums each of them as the whole leaf's sum
  # does: the whole leaf's norm is the rows' sums, each taken from a slice, summed by halves.
  for a in leaves[2:]:
    rows = jnp.stack([reduction.squared_norm([a[:, i:i + 1]], [None], "model")
                      for i in range(a.shape[1])])
    assert reduction.squared_norm([a], [None], "model") == precision.sum_by_halves(rows, 0)


def test_the_gradient_through_copies_is_each_copy_s_gradient_summed_in_the_tree():
  params = {"w": jax.random.normal(jax.random.key(1), (4, 3))}
  xs = jax.random.normal(jax.random.key(2), (4, 4))
  mapped = lambda stacked: jnp.sum(jax.lax.map(lambda a: jnp.sum(jnp.tanh(a[1] @ a[0]["w"])),
                                               (stacked, xs)))

  grad = jax.grad(lambda p: mapped(reduction.copies(p, 4)))(params)["w"]
  # The same map differentiated w.r.t. the copies themselves: each conformer's own gradient.
  each = jax.grad(mapped)(jax.tree.map(lambda a: jnp.stack([a] * 4), params))["w"]
  assert np.array_equal(grad, (each[0] + each[1]) + (each[2] + each[3]))
  assert np.allclose(grad, jax.grad(lambda p: mapped(jax.tree.map(
      lambda a: jnp.broadcast_to(a, (4, *a.shape)), p)))(params)["w"])  # the gradient it is
