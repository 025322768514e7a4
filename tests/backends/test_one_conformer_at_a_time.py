"""On CPU every eigendecomposition of the train step is of one matrix: a batched LAPACK eigh waits
for tasks on XLA:CPU's intra-op pool, and with two devices' kernels waiting on a two-thread pool
the step hung (2 fake devices × 2 ethanol/def2-SVP conformers each; see backends.base.Policy)."""

import jax
import numpy as np

import qpt
from experiments.configs import md17
from qpt import backends, model, train


def eigh_operand_shapes(jaxpr) -> list[tuple[int, ...]]:
  """Shapes of the operands of every eigh in a (closed) jaxpr, sub-jaxprs included."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "eigh":
      shapes.append(tuple(eqn.invars[0].aval.shape))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
          shapes += eigh_operand_shapes(sub)
  return shapes


def test_the_cpu_train_step_decomposes_one_matrix_at_a_time():
  config = md17.get_config("water")
  backend = backends.create(config)
  assert backend.policy.one_conformer_at_a_time
  network = model.make_model(model.model_config("tiny", d_model=32, n_layers=1, n_heads=2))
  optimizer, schedule = train.make_optimizer(config.train)
  step = train.make_train_step(network, optimizer, train.conformer_loss("energy", 1, 0.0),
                               schedule, backend)
  problem = qpt.build_problem(qpt.molecules.get("water"), qpt.Level("sto-3g", "lda,vwn", 0),
                              xc_chunk=1024)
  batch = jax.tree.map(lambda a: np.stack([a, a, a]), problem)
  state = train.init_state(network, optimizer, 0, batch, backend)
  shapes = eigh_operand_shapes(jax.make_jaxpr(step)(state, backend.put_batch(batch), None))
  n = problem.overlap.shape[0]
  assert shapes and set(shapes) == {(n, n)}, shapes
