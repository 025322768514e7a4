"""Conformer sampling, MD17 files and the background problem stream: all deterministic."""

import functools
import multiprocessing
import os
import signal
import struct
import threading
import time

import jax
import numpy as np
import pytest
from pyscf.data.nist import BOHR

import qpt
from qpt import conformers, data, labels

FIXTURES = os.path.join(os.path.dirname(__file__), "data")
LEVEL = qpt.Level(basis="sto-3g", xc="pbe", grid_level=0)


@pytest.fixture(scope="module")
def water():
  return qpt.molecules.get("water")


@pytest.fixture(scope="module")
def water_sampler(water):
  return conformers.ThermalSampler(water, seed=1)  # computes the RHF/STO-3G Hessian once


def _bond_lengths(x):
  """O–H distances (2,) Å of a water geometry (Bohr)."""
  return np.linalg.norm(x[1:] - x[0], axis=-1) * BOHR


# ---- thermal sampling ---------------------------------------------------------------------------


def test_conformer_is_a_pure_function_of_seed_and_index(water, water_sampler):
  again = conformers.ThermalSampler(water, seed=1, hess=conformers.hessian(water))
  later = [again.positions(i) for i in (9, 3, 0)]  # any order, any sampler object
  for i, x in zip((9, 3, 0), later):
    np.testing.assert_array_equal(water_sampler.positions(i), x)
  other = conformers.ThermalSampler(water, seed=2)
  assert not np.allclose(other.positions(3), water_sampler.positions(3))
  assert not np.allclose(water_sampler.positions(4), water_sampler.positions(3))
  mol = water_sampler(3)
  assert isinstance(mol, qpt.Molecule) and mol.name == "water"
  np.testing.assert_allclose(mol.positions, water_sampler.positions(3), rtol=1e-14)


def test_water_at_500K_stretches_bonds_by_hundredths_of_an_angstrom(water, water_sampler):
  ref = _bond_lengths(water.positions)
  dev = np.array([_bond_lengths(water_sampler.positions(i)) - ref for i in range(200)])
  assert np.abs(dev).max() < 0.1
  # Harmonic O–H stretch at RHF/STO-3G: σ = √(kT/k) ≈ 0.02 Å at 500 K.
  assert 0.01 < np.sqrt(np.mean(dev ** 2)) < 0.04
  # Normal modes keep the centre of mass (linear order) in place.
  m = conformers.masses(water)
  com = lambda x: (m[:, None] * x).sum(0) / m.sum()
  drift = [com(water_sampler.positions(i)) - com(water.positions) for i in range(20)]
  assert np.abs(drift).max() < 1e-12


def test_mean_square_displacement_is_linear_in_temperature(water):
  hess = conformers.hessian(water)
  msd = {}
  for t, seed in ((250.0, 5), (1000.0, 6)):
    s = conformers.ThermalSampler(water, t, seed, hess=hess)
    msd[t] = np.mean([np.sum((s.positions(i) - water.positions) ** 2) for i in range(400)])
  assert 3.5 < msd[1000.0] / msd[250.0] < 4.5
  cold = conformers.ThermalSampler(water, 0.0, hess=hess)
  np.testing.assert_array_equal(cold.positions(0), water.positions)


def test_no_broken_bonds_ethanol():
  # Ethanol's MMFF geometry has an imaginary RHF/STO-3G mode (≈ −490 cm⁻¹): |ω| samples it.
  ethanol = qpt.molecules.get("ethanol")
  hess = np.load(os.path.join(FIXTURES, "ethanol_rhf_sto3g_hessian.npy"))
  for t in (500.0, 1500.0):
    sampler = conformers.ThermalSampler(ethanol, t, seed=0, hess=hess)
    assert (sampler.vibrations.frequencies < 0).any()
    for i in range(150):
      assert conformers.bonds_intact(ethanol, sampler.positions(i))
  # At 1500 K the first draw for conformer 25 breaks a bond: it is redrawn, from the same stream.
  first_draw = ethanol.positions + sampler.displacement(np.random.default_rng([0, 25]))
  assert not conformers.bonds_intact(ethanol, first_draw)
  assert not np.allclose(sampler.positions(25), first_draw)
  # The check itself: a C–O bond stretched by 35% is broken, two H pushed together collide.
  x = ethanol.positions.copy()
  x[2] = x[1] + 1.35 * (x[2] - x[1])
  assert not conformers.bonds_intact(ethanol, x)
  x = ethanol.positions.copy()
  x[4] = x[3] + 0.2 * (x[4] - x[3])
  assert not conformers.bonds_intact(ethanol, x)
  assert conformers.bonds_intact(ethanol, ethanol.positions)


def test_rigid_body_motion_is_projected_out(water):
  hess = conformers.hessian(water)
  curvature = np.linalg.eigvalsh(conformers.projected_hessian(water, hess))
  assert np.sum(np.abs(curvature) < 1e-10) == 6  # 3 translations + 3 rotations
  vib = conformers.vibrations(water, hess)
  assert vib.frequencies.shape == (3,) and (vib.frequencies > 1000).all()  # bend, two stretches
  rigid = conformers.rigid_body_basis(water.positions, vib.masses)
  assert np.abs(rigid.T @ vib.modes).max() < 1e-12
  np.testing.assert_allclose(vib.modes.T @ vib.modes, np.eye(3), atol=1e-12)
  # A linear molecule has 5 rigid-body motions, an atom 3.
  co2 = np.array([[0.0, 0.0, -2.2], [0.0, 0.0, 0.0], [0.0, 0.0, 2.2]])
  assert conformers.rigid_body_basis(co2, np.array([16.0, 12.0, 16.0])).shape == (9, 5)
  assert conformers.rigid_body_basis(co2[:1], np.array([16.0])).shape == (3, 3)


def test_hessian_cache_file_is_reused(tmp_path, water):
  first = conformers.hessian(water, cache_dir=tmp_path)
  (path,) = tmp_path.glob("hessian-water-*.npy")
  conformers._HESSIANS.clear()
  np.save(path, 2 * first)  # proves the second call reads the file rather than recomputing
  np.testing.assert_array_equal(conformers.hessian(water, cache_dir=tmp_path), 2 * first)
  conformers._HESSIANS.clear()
  # A cache file cut short (a workdir copied halfway) was a numpy traceback at the run's start;
  # it is computed again, bit for bit, and written over.
  with open(path, "r+b") as f:
    f.truncate(100)
  np.testing.assert_array_equal(conformers.hessian(water, cache_dir=tmp_path), first)
  np.testing.assert_array_equal(np.load(path), first)
  conformers._HESSIANS.clear()


def test_bad_sampler_options(water):
  hess = conformers.hessian(water)
  for kwargs in (dict(temperature=-1.0), dict(seed=-1), dict(floor_frequency=0.0)):
    with pytest.raises(qpt.InputError):
      conformers.ThermalSampler(water, hess=hess, **kwargs)
  with pytest.raises(qpt.InputError, match="Hessian has shape"):
    conformers.ThermalSampler(water, hess=np.zeros((6, 6)))


# ---- MD17 files ---------------------------------------------------------------------------------


def _trajectory(n_frames=12, seed=0):
  """Water frames jiggled around the built-in geometry, Å."""
  x = qpt.molecules.get("water").positions_angstrom
  return x + 0.02 * np.random.default_rng(seed).standard_normal((n_frames, 3, 3))


def test_md17_both_layouts(tmp_path):
  xyz = _trajectory()
  np.savez(tmp_path / "sgdml.npz", R=xyz, z=np.array([8, 1, 1]), E=np.zeros((12, 1)))
  np.savez(tmp_path / "rmd17.npz", coords=xyz, nuclear_charges=np.array([8, 1, 1]),
           energies=np.zeros(12))
  a = conformers.load_md17(tmp_path / "sgdml.npz")
  b = conformers.load_md17(tmp_path / "rmd17.npz")
  for t in (a, b):
    assert len(t) == 12
    np.testing.assert_array_equal(t.atomic_numbers, [8, 1, 1])
    np.testing.assert_allclose(t.positions, xyz / BOHR, rtol=1e-15)
  np.testing.assert_allclose(a.molecule(5).positions_angstrom, xyz[5], rtol=1e-12)


@pytest.mark.parametrize("arrays, message", [
    (dict(R=np.zeros((2, 3, 3))), "not an MD17 file"),
    (dict(R=np.zeros((2, 4, 3)), z=np.array([8, 1, 1])), r"expected \(n_frames, 3, 3\)"),
    (dict(coords=np.zeros((3, 3)), nuclear_charges=np.array([8, 1, 1])), "expected"),
    (dict(R=np.zeros((2, 3, 3)), z=np.array([8, 1, 0])), "atomic numbers"),
    (dict(R=np.full((2, 3, 3), np.nan), z=np.array([8, 1, 1])), "non-finite"),
])
def test_md17_malformed_files(tmp_path, arrays, message):
  np.savez(tmp_path / "bad.npz", **arrays)
  with pytest.raises(qpt.InputError, match=message):
    conformers.load_md17(tmp_path / "bad.npz")


def test_md17_unreadable_files(tmp_path):
  (tmp_path / "text.npz").write_text("not a zip")
  np.save(tmp_path / "array.npy", np.zeros(3))
  for name, message in (("text.npz", "text.npz: not an .npz archive"),
                        ("array.npy", "array.npy: a single array"),
                        ("missing.npz", "missing.npz: cannot read")):
    with pytest.raises(qpt.InputError, match=message):
      conformers.load_md17(tmp_path / name)


def test_splits_are_disjoint_and_deterministic():
  sizes = {"train": 50, "val": 20, "test": 30}
  s = conformers.split(120, sizes, seed=4)
  assert {k: len(v) for k, v in s.items()} == sizes
  every = np.concatenate(list(s.values()))
  assert len(np.unique(every)) == 100 and every.min() >= 0 and every.max() < 120
  for k, v in conformers.split(120, sizes, seed=4).items():
    np.testing.assert_array_equal(v, s[k])
  assert not np.array_equal(conformers.split(120, sizes, seed=5)["train"], s["train"])
  with pytest.raises(qpt.InputError, match="do not fit"):
    conformers.split(99, sizes)
  with pytest.raises(qpt.InputError, match="share frames"):
    conformers.check_split(10, {"train": [0, 1, 2], "test": [2, 3]})
  with pytest.raises(qpt.InputError, match="in 0..9"):
    conformers.check_split(10, {"train": [0, 10]})


def test_frame_sampler_visits_each_frame_once_per_epoch(tmp_path):
  np.savez(tmp_path / "w.npz", R=_trajectory(), z=np.array([8, 1, 1]))
  traj = conformers.load_md17(tmp_path / "w.npz")
  train = conformers.split(len(traj), {"train": 5, "test": 7}, seed=0)["train"]
  sampler = conformers.FrameSampler(traj, train, seed=3)
  frames = [sampler.frame(i) for i in range(15)]
  for epoch in range(3):
    assert sorted(frames[5 * epoch:5 * epoch + 5]) == sorted(train.tolist())
  assert frames[:5] != frames[5:10]  # reshuffled each epoch
  assert [conformers.FrameSampler(traj, train, seed=3).frame(i) for i in (12, 1)] == [frames[12],
                                                                                       frames[1]]
  np.testing.assert_array_equal(sampler(7).positions, traj.positions[frames[7]])


# ---- the problem stream -------------------------------------------------------------------------


class _WaterThenEthanol:
  """A conformer source whose padded shape grows at conformer 3 (the first ethanol)."""

  def __init__(self, water_sampler):
    self.water, self.ethanol = water_sampler, qpt.molecules.get("ethanol")

  def __call__(self, i):
    return self.ethanol if i == 3 else self.water(i)


def shift_by_one_bohr(mol):
  """A picklable transform (module level), as the stream requires for workers."""
  return mol.with_positions(mol.positions + 1.0)


def _assert_same_batch(a, b):
  np.testing.assert_array_equal(a.indices, b.indices)
  assert a.repeat == b.repeat
  leaves_a, tree_a = jax.tree.flatten(a.problem)
  leaves_b, tree_b = jax.tree.flatten(b.problem)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


def _take(stream, n):
  with stream:
    return [next(stream) for _ in range(n)]


def test_workers_yield_exactly_the_inline_stream(water_sampler):
  source = _WaterThenEthanol(water_sampler)
  inline = _take(data.ProblemStream(source, 2, LEVEL, xc_chunk=1024, mol_repeats=2), 6)
  env_before = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
  with data.ProblemStream(source, 2, LEVEL, xc_chunk=1024, n_workers=2, prefetch=1, mol_repeats=2) as stream:
    workers = [next(stream) for _ in range(6)]
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
      assert stream._pool.submit(os.getenv, name).result() == "1"  # workers: one thread
  assert {k: os.environ.get(k) for k in env_before} == env_before  # this process: untouched
  for a, b in zip(inline, workers):
    _assert_same_batch(a, b)
  assert [b.indices.tolist() for b in inline] == [[0, 1], [0, 1], [2, 3], [2, 3], [4, 5], [4, 5]]
  assert [b.repeat for b in inline] == [0, 1] * 3
  assert sum(b.new_conformers for b in inline) == 6
  assert all(b.wait_seconds == 0 for b in inline if b.repeat)
  # The shape grows with ethanol and never shrinks back; the water in that batch is padded inertly.
  shapes = [b.problem.shapes for b in inline]
  assert shapes[0] < shapes[2] == shapes[4]
  first = inline[2].problem
  assert first.atomic_numbers.shape == (2, 12) and first.ao_mask[0].sum() == 7
  np.testing.assert_array_equal(first.positions[0, :3],
                                water_sampler.positions(2).astype("float32"))


def pause_in_workers(pause: str, mol):
  """A transform that holds a worker in its build while the file `pause` exists, after writing
  `pause`.<pid>: a worker to kill mid-build."""
  if multiprocessing.parent_process() is not None and os.path.exists(pause):
    with open(f"{pause}.{os.getpid()}", "w"):
      pass
    while os.path.exists(pause):
      time.sleep(0.01)
  return mol


def test_a_killed_worker_is_replaced_and_the_stream_goes_on_bit_for_bit(water_sampler, capsys,
                                                                         tmp_path):
  """A worker killed mid-build (as the kernel's out-of-memory killer does) broke the pool, and
  training stopped with a BrokenProcessPool traceback.

  Killed while it builds, not at a random moment: one killed while handing its problem back is
  the next test's case (this test, killing at random, hung so in about one run of six)."""
  pause = tmp_path / "pause"
  pause.touch()

  def kill_a_paused_worker():
    deadline = time.monotonic() + 120
    while not (paused := list(tmp_path.glob("pause.*"))) and time.monotonic() < deadline:
      time.sleep(0.01)
    os.kill(int(paused[0].suffix[1:]), signal.SIGKILL)
    pause.unlink()

  inline = _take(data.ProblemStream(water_sampler, 2, LEVEL, xc_chunk=1024), 3)
  killer = threading.Thread(target=kill_a_paused_worker)
  killer.start()
  with data.ProblemStream(water_sampler, 2, LEVEL, xc_chunk=1024, n_workers=2, prefetch=1,
                          transform=functools.partial(pause_in_workers, str(pause))) as stream:
    batches = [next(stream) for _ in range(3)]
  killer.join()
  for a, b in zip(inline, batches):
    _assert_same_batch(a, b)
  assert "a stream worker process died" in capsys.readouterr().err


def test_a_worker_dead_in_the_middle_of_its_result_does_not_hang_the_stream(
    water_sampler, capsys, tmp_path, monkeypatch):
  """What a worker killed while writing its result leaves: half a message in the pool's pipe
  (written here by this process, as the worker would have), which CPython's pool reads forever.
  The stream notices the dead worker and breaks the pool open instead."""
  monkeypatch.setattr(data, "STUCK_SECONDS", 0.5)
  pause = tmp_path / "pause"
  pause.touch()

  def die_mid_result(stream):
    deadline = time.monotonic() + 120
    while not (paused := list(tmp_path.glob("pause.*"))) and time.monotonic() < deadline:
      time.sleep(0.01)
    writer = stream._pool._result_queue._writer
    writer._send(struct.pack("!i", 2**31 - 1) + b"half a resu")  # a header, then the cut
    time.sleep(0.2)  # the pool's reader is now inside that message
    os.kill(int(paused[0].suffix[1:]), signal.SIGKILL)
    pause.unlink()

  inline = _take(data.ProblemStream(water_sampler, 2, LEVEL, xc_chunk=1024), 2)
  taken = []
  with data.ProblemStream(water_sampler, 2, LEVEL, xc_chunk=1024, n_workers=2, prefetch=1,
                          transform=functools.partial(pause_in_workers, str(pause))) as stream:
    stream._submit_through(stream.batch_size)  # start the workers: both pause in a build
    killer = threading.Thread(target=die_mid_result, args=(stream,))
    killer.start()
    consumer = threading.Thread(target=lambda: taken.extend(next(stream) for _ in range(2)),
                                daemon=True)
    consumer.start()
    consumer.join(timeout=120)
    killer.join()
    assert not consumer.is_alive(), "the stream hung on the dead worker's half message"
  for a, b in zip(inline, taken):
    _assert_same_batch(a, b)
  assert "a stream worker process died" in capsys.readouterr().err


def die_in_a_worker(mol):
  """A transform that kills any worker process it runs in (a build that always runs out of
  memory)."""
  if multiprocessing.parent_process() is not None:
    os.kill(os.getpid(), signal.SIGKILL)
  return mol


def test_workers_that_keep_dying_stop_the_stream_in_one_line(water_sampler):
  with data.ProblemStream(water_sampler, 2, LEVEL, xc_chunk=1024, n_workers=1,
                          transform=die_in_a_worker) as stream:
    died = r"stream workers died 3 times building conformers 0–1 \(out of memory"
    with pytest.raises(qpt.errors.TrainingError, match=died):
      next(stream)


def test_resume_reproduces_the_continuation(water_sampler):
  source = _WaterThenEthanol(water_sampler)
  stream = data.ProblemStream(source, 2, LEVEL, xc_chunk=1024, mol_repeats=2)
  full = _take(stream, 7)
  for k, where in ((3, (2, 1)), (4, (4, 0))):  # mid-repeat, and at a batch boundary
    stream = data.ProblemStream(source, 2, LEVEL, xc_chunk=1024, mol_repeats=2)
    for _ in range(k):
      next(stream)
    saved = stream.state
    assert (saved["stream_position"], saved["repeat"]) == where
    resumed = data.ProblemStream(source, 2, LEVEL, xc_chunk=1024, mol_repeats=2, state=saved)
    for a, b in zip(full[k:], _take(resumed, 7 - k)):
      _assert_same_batch(a, b)


def test_processes_split_each_global_batch(water_sampler):
  whole = _take(data.ProblemStream(water_sampler, 4, LEVEL, xc_chunk=1024), 2)
  parts = [_take(data.ProblemStream(water_sampler, 4, LEVEL, xc_chunk=1024, process_index=p, process_count=2), 2)
           for p in (0, 1)]
  for step, batch in enumerate(whole):
    np.testing.assert_array_equal(
        np.concatenate([parts[0][step].indices, parts[1][step].indices]), batch.indices)
    for p in (0, 1):
      mine = jax.tree.map(lambda a: a[2 * p:2 * p + 2], batch.problem)
      _assert_same_batch(parts[p][step], data.Batch(mine, parts[p][step].indices, 0, 0.0, 0.0))


def test_transform_is_applied_before_building(water_sampler):
  (batch,) = _take(data.ProblemStream(water_sampler, 1, LEVEL, xc_chunk=1024, transform=shift_by_one_bohr), 1)
  np.testing.assert_allclose(batch.problem.positions[0, :3],
                             water_sampler.positions(0) + 1.0, rtol=1e-6)


def test_fock_labels_are_pyscf_labels_of_the_transformed_conformers(water_sampler):
  (batch,) = _take(data.ProblemStream(water_sampler, 2, LEVEL, xc_chunk=1024, fock_labels=True,
                                      transform=shift_by_one_bohr), 1)
  reference = labels.label([shift_by_one_bohr(water_sampler(i)) for i in (0, 1)], LEVEL)
  assert batch.fock_label.shape == (2,) + batch.problem.overlap.shape[1:]
  assert batch.fock_label.dtype == np.float32
  np.testing.assert_allclose(batch.fock_label[:, :7, :7], reference.fock, atol=1e-6)
  assert not batch.fock_label[:, 7:].any() and not batch.fock_label[:, :, 7:].any()
  (unlabelled,) = _take(data.ProblemStream(water_sampler, 2, LEVEL, xc_chunk=1024), 1)
  assert unlabelled.fock_label is None


def test_bad_stream_options(water_sampler):
  with pytest.raises(qpt.InputError, match="multiple of process_count"):
    data.ProblemStream(water_sampler, 3, LEVEL, xc_chunk=1024, process_count=2)
  with pytest.raises(qpt.InputError, match="module-level function"):
    data.ProblemStream(water_sampler, 2, LEVEL, xc_chunk=1024, n_workers=1, transform=lambda m: m)
  with pytest.raises(qpt.InputError, match="lacks stream_position"):
    data.ProblemStream(water_sampler, 2, LEVEL, xc_chunk=1024, state={"position": 2})
  with pytest.raises(qpt.InputError, match="does not fit"):
    data.ProblemStream(water_sampler, 2, LEVEL, xc_chunk=1024, state={"stream_position": 3, "repeat": 0,
                                                      "pad_to": [0, 0, 0, 0]})


def test_workers_build_float64_problems_when_the_parent_computes_in_float64(water_sampler):
  # The tests run with float64 switched on (conftest); a spawned worker starts without it.
  level = qpt.Level(basis="sto-3g", xc="pbe", grid_level=0, dtype="float64")
  with data.ProblemStream(water_sampler, 1, level, xc_chunk=1024, n_workers=1,
                          prefetch=0) as stream:
    (worker,) = _take(stream, 1)
  (inline,) = _take(data.ProblemStream(water_sampler, 1, level, xc_chunk=1024), 1)
  assert worker.problem.overlap.dtype == np.float64
  _assert_same_batch(worker, inline)
