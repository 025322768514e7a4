"""With several fake CPU devices in one process, every eigendecomposition of the train step is of
one matrix: a batched LAPACK eigh waits for tasks on XLA:CPU's shared intra-op pool, and with two
devices' kernels waiting on a two-thread pool the step hung (2 fake devices × 2 ethanol/def2-SVP
conformers each; see backends.base.Policy). One device keeps its batch (vmap: faster)."""

import json
import subprocess
import sys

from tests.processes import ENV, ROOT

EIGH_SHAPES = """
import json, sys
import jax, numpy as np
import qpt
from experiments.configs import md17
from qpt import backends, model, train

def eigh_shapes(jaxpr):
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "eigh":
      shapes.append(list(eqn.invars[0].aval.shape))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
          shapes += eigh_shapes(sub)
  return shapes

config = md17.get_config("water")
config.backend.cpu_devices = int(sys.argv[1])
backend = backends.create(config)
network = model.make_model(model.model_config("tiny", d_model=32, n_layers=1, n_heads=2))
optimizer, schedule = train.make_optimizer(config.train)
step = train.make_train_step(network, optimizer, train.conformer_loss("energy", 1, 0.0), schedule,
                             backend)
problem = qpt.build_problem(qpt.molecules.get("water"), qpt.Level("sto-3g", "lda,vwn", 0),
                            xc_chunk=1024)
batch = jax.tree.map(lambda a: np.stack([a] * 4), problem)
state = train.init_state(network, optimizer, 0, batch, backend)
shapes = eigh_shapes(jax.make_jaxpr(step)(state, backend.put_batch(batch), None))
print(json.dumps(dict(n=problem.overlap.shape[0], shapes=sorted(set(map(tuple, shapes))))))
"""


def eigh_shapes(devices: int) -> dict:
  result = subprocess.run([sys.executable, "-c", EIGH_SHAPES, str(devices)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_fake_devices_decompose_one_matrix_at_a_time():
  out = eigh_shapes(2)
  assert out["shapes"] == [[out["n"], out["n"]]]


def test_one_device_keeps_its_batch():
  out = eigh_shapes(1)
  assert [4, out["n"], out["n"]] in out["shapes"]
