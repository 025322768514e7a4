"""Evaluation: metrics are ~0 for the exact answer, the baseline is H_init's, lab-frame predictions
rotate with the molecule and restart PySCF, and labels are cached.

Water in STO-3G on grid level 1 with LDA keeps PySCF (which dominates the time) cheap; two
conformers share one padded shape, so each jitted function compiles once.
"""

import functools
import importlib.util
import os

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pyscf import lib
from scipy.spatial.transform import Rotation

import qpt
from qpt import evaluate as ev, frame, integrals, model as model_lib

BASIS, XC, GRID_LEVEL = "sto-3g", "lda,vwn", 1
ITERATIONS = 1
MODEL = model_lib.make_model(model_lib.model_config("tiny", d_model=32, n_layers=1, n_heads=2))


@pytest.fixture(autouse=True, scope="module")
def one_pyscf_thread():
  """PySCF on one thread: these problems are tiny, and OpenMP threads spinning against XLA's (and
  other jobs') cost ~10× on 2 cores."""
  with lib.with_omp_threads(1):
    yield


def load_tool():
  """tools/label.py as a module (tools/ is not a package)."""
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", "label.py")
  spec = importlib.util.spec_from_file_location("label_tool", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@functools.cache
def labels() -> ev.Labels:
  """Two displaced water conformers, labelled in their canonical frames."""
  water = qpt.molecules.get("water")
  positions = load_tool().gaussian_conformers(water, 2, seed=0)
  molecules = [frame.to_canonical(qpt.Molecule(water.symbols, p))[0] for p in positions]
  return ev.label(molecules, BASIS, XC, GRID_LEVEL)


@functools.cache
def problems() -> list[qpt.dft.DFTProblem]:
  return ev.build_problems(labels())


def padded(matrix: np.ndarray, n: int) -> np.ndarray:
  out = np.zeros((n, n))
  out[: matrix.shape[0], : matrix.shape[1]] = matrix
  return out


@functools.cache
def exact_metrics() -> dict:
  """Metrics of the PySCF Fock matrix itself as the prediction, with the MINAO baseline."""
  by_problem = {id(p): padded(f, p.overlap.shape[0]) for p, f in zip(problems(), labels().fock)}
  return ev.evaluate(lambda p: by_problem[id(p)], problems(), labels(), iterations=ITERATIONS)


def test_labels_are_converged_minao_runs():
  assert len(labels()) == 2 and labels().converged.all()
  assert (labels().cycles > 2).all()
  n_occ = 5  # water: 10 electrons
  np.testing.assert_allclose(np.einsum("cij,cji->c", labels().density,
                                       [p.overlap[:7, :7] for p in problems()]), 2 * n_occ,
                             atol=1e-5)
  for f, d, p in zip(labels().fock, labels().density, problems()):  # self-consistent: FDS = SDF
    fds = f @ d @ np.asarray(p.overlap, np.float64)[:7, :7]
    assert np.abs(fds - fds.T).max() < 1e-4


def test_the_reference_fock_matrix_scores_as_exact():
  m = exact_metrics()
  assert m["n_conformers"] == 2
  assert m["h_mae_uha"] < 1.0  # the label itself, rounded to float32
  for key in ("h_mae_fock_uha", "h_mae_after_k_uha", "eps_occ_mae_uha", "gap_mae_uha"):
    assert m[key] < 20.0, key  # one float32 Fock build from the label density
  assert m["energy_mae_uha"] < 50.0 and m["energy_after_k_mae_uha"] < 50.0
  assert m["energy_mae_mev"] == pytest.approx(m["energy_mae_uha"] * 1e-6 * 27211.386, rel=1e-4)
  assert m["psi_cos_percent"] > 99.999
  assert m["psi_subspace_percent"] == pytest.approx(100.0, abs=1e-3)
  assert m["scf_cycle_ratio"] < 0.6  # PySCF restarted at its own solution only checks it


def test_h_init_scores_as_the_minao_baseline():
  exact = exact_metrics()
  baseline = ev.evaluate(ev.h_init, problems(), labels(),
                         iterations=ITERATIONS, baseline=False, scf_cycles=False)
  for key, value in baseline.items():
    if key != "n_conformers":
      assert value == pytest.approx(exact[key + "_minao"], rel=1e-6), key
  # The baseline is far from the answer, and its SCF start is PySCF's own MINAO guess.
  assert exact["energy_mae_uha_minao"] > 1e3 and exact["psi_subspace_percent_minao"] < 99.99
  assert exact["scf_cycle_ratio_minao"] == pytest.approx(1.0, abs=0.2)


def test_unrolled_steps_are_the_losses():
  p = problems()[0]
  h = ev.h_init(p)
  mixing = (0.5, 0.0)
  energy, loss = jax.jit(lambda p, h: (qpt.dft.delta_energy(p, qpt.dft.unrolled_density(p, h, 2, mixing)),
                                       qpt.dft.loss_energy_delta(p, h, 2, mixing)))(p, h)
  # The loss may add float32 rounding corrections (µHa); a wrong step or mixing costs mHa.
  assert float(energy) == pytest.approx(float(loss), abs=2e-5)
  with pytest.raises(qpt.InputError, match="mixing"):
    ev.evaluate(lambda p: h, problems(), labels(), iterations=3, mixing=(0.5, 0.0))


def test_problems_in_another_frame_are_refused():
  lab = [qpt.dft.build_problem(qpt.molecules.get("water"), BASIS, XC, GRID_LEVEL)] * 2
  with pytest.raises(qpt.InputError, match="differs from the label"):
    ev.evaluate(lambda p: None, lab, labels())


# ---- predictions in the lab frame ------------------------------------------------------------


@functools.cache
def params() -> hk.Params:
  """Random parameters of MODEL's shapes, W's output scale 1: W is O(1 Ha), so rotations bite.

  Any parameters must be equivariant; drawing them on the host skips compiling `init` (~8 s).
  """
  p = problems()[0]
  shapes = jax.eval_shape(MODEL.init, jax.random.key(0), p, jnp.zeros(p.overlap.shape, p.dtype))
  rng = np.random.default_rng(0)
  return hk.data_structures.map(
      lambda module, name, s: np.ones(s.shape, s.dtype) if name == "output_scale"
      else rng.normal(0.0, 0.3, s.shape).astype(s.dtype), shapes)


def test_predict_rotates_with_the_molecule():
  water = labels().molecule(0)
  q = Rotation.random(random_state=1).as_matrix()
  moved = water.with_positions(water.positions @ q.T + np.array([0.3, -1.0, 2.0]))
  theory = dict(basis=BASIS, xc=XC, grid_level=GRID_LEVEL)
  a = ev.predict(params(), water, **theory, model=MODEL)
  b = qpt.predict(params(), moved.to_pyscf(BASIS), xc=XC, grid_level=GRID_LEVEL)  # model from shapes
  r_ao = frame.rotation_matrix_ao(integrals.orbital_labels(water.to_pyscf(BASIS)), q)
  rotate = lambda m: r_ao @ m @ r_ao.T
  assert np.abs(a.hamiltonian - np.asarray(ev.h_init(problems()[0]))[:7, :7]).max() > 0.1  # W ≠ 0
  np.testing.assert_allclose(b.hamiltonian, rotate(a.hamiltonian), atol=1e-4)
  np.testing.assert_allclose(b.density, rotate(a.density), atol=1e-4)
  np.testing.assert_allclose(b.fock, rotate(a.fock), atol=1e-4)
  np.testing.assert_allclose(b.mo_energy, a.mo_energy, atol=1e-4)
  assert b.energy == pytest.approx(a.energy, abs=1e-5)
  # Orbitals: the rotated ones, up to sign, S-orthonormal in the moved molecule's AO basis.
  s = moved.to_pyscf(BASIS).intor("int1e_ovlp")
  np.testing.assert_allclose(b.mo_coeff.T @ s @ b.mo_coeff, np.eye(7), atol=1e-6)
  np.testing.assert_allclose(np.abs(np.sum(b.mo_coeff * (s @ r_ao @ a.mo_coeff), axis=0)), 1.0,
                             atol=1e-4)


def test_predicted_density_restarts_pyscf_in_the_lab_frame():
  """A model that knows the answer: its lab-frame dm0 must be PySCF's solution for the moved
  molecule — the test fails if any AO rotation or ordering is wrong."""
  canonical = labels().molecule(0)
  d_star = padded(labels().density[0], problems()[0].overlap.shape[0])
  oracle = hk.without_apply_rng(hk.transform(
      lambda problem, h_init: qpt.dft.fock(problem, jnp.asarray(d_star, problem.dtype)) - h_init))
  q = Rotation.random(random_state=2).as_matrix()
  moved = canonical.with_positions(canonical.positions @ q.T + 1.0)
  prediction = ev.predict({}, moved, BASIS, XC, GRID_LEVEL, model=oracle)
  assert prediction.energy == pytest.approx(labels().energy[0], abs=50e-6)
  dm0 = ev.to_pyscf_dm0(prediction)
  mol = moved.to_pyscf(BASIS)
  assert dm0.shape == (mol.nao, mol.nao) and dm0.dtype == np.float64
  mf = ev.pyscf_rks(mol, XC, GRID_LEVEL, "dense")
  assert mf.energy_tot(dm=dm0) == pytest.approx(labels().energy[0], abs=1e-4)  # its own grid
  mf.kernel(dm0=dm0)
  assert mf.converged and mf.cycles < labels().cycles[0]


# ---- label files -----------------------------------------------------------------------------


def test_label_files_are_reused(tmp_path, monkeypatch, capsys):
  runs = []
  converge = ev._converge
  monkeypatch.setattr(ev, "_converge", lambda mf, dm0=None: runs.append(1) or converge(mf, dm0))
  tool = load_tool()
  out = str(tmp_path / "water.npz")
  argv = ["--molecule", "water", "--basis", BASIS, "--xc", XC, "--grid-level", str(GRID_LEVEL),
          "--n", "1", "--seed", "0", "--out", out, "--json"]
  assert tool.main(argv) == 0 and len(runs) == 1
  assert tool.main(argv) == 0 and len(runs) == 1  # cached: PySCF did not run
  # The same conformer from a positions file (Å) is the same geometry: reused too.
  positions = tool.gaussian_conformers(qpt.molecules.get("water"), 1, seed=0)
  np.save(tmp_path / "positions.npy", positions)
  assert tool.main(argv + ["--positions", str(tmp_path / "positions.npy")]) == 0
  assert len(runs) == 1 and '"reused": true' in capsys.readouterr().out.splitlines()[-1]
  assert tool.main(argv + ["--seed", "1"]) == 0 and len(runs) == 2  # new geometry
  assert tool.main(argv + ["--grid-level", "0"]) == 0 and len(runs) == 3  # new level of theory
  stored = ev.load_labels(out)
  assert stored.grid_level == 0 and stored.xc == XC and stored.positions.shape == (1, 3, 3)
  np.testing.assert_allclose(stored.positions[0] * qpt.molecule.BOHR, positions[0], atol=1e-12)
  assert tool.main(["--molecule", "water", "--positions", str(tmp_path / "nothing.npy"),
                    "--out", out]) == 2
