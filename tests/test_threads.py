"""Host threads: numpy's and SciPy's BLAS single-threaded in a QPT process (jaxlib's LAPACK shares
SciPy's OpenBLAS: threaded, it races with host BLAS — jax-ml/jax#38056); one_thread() limits
OpenMP too, and gives it back."""

import json
import subprocess
import sys

from tests.processes import ENV, ROOT

REPORT = """
import json, threadpoolctl
import qpt
from qpt import threads
def pools():
  return {i["internal_api"] + ":" + i["filepath"].split("/")[-1]: i["num_threads"]
          for i in threadpoolctl.threadpool_info()}
before = pools()
with threads.one_thread():
  inside = pools()
print(json.dumps(dict(before=before, inside=inside, after=pools())))
"""


def test_blas_is_single_threaded_and_one_thread_limits_openmp_too():
  env = dict(ENV, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")  # what a user's shell may say
  result = subprocess.run([sys.executable, "-c", REPORT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  blas = {k: v for k, v in out["before"].items() if k.startswith("openblas")}
  assert any("scipy_openblas" in k for k in blas) and set(blas.values()) == {1}, blas
  openmp = {k: v for k, v in out["before"].items() if k.startswith("openmp")}
  assert openmp and set(openmp.values()) == {2}, out["before"]  # PySCF's OpenMP keeps its threads
  assert set(out["inside"].values()) == {1}, out["inside"]
  assert out["after"] == out["before"]
