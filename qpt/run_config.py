"""A run's config: loading a config file, checking it, recording it, and what may change on resume.

Configs are ml-collections `get_config()` files (experiments/configs/); a run records its resolved
config, flattened to "section.field" keys, in workdir/config.json and in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
from typing import Iterable

import ml_collections

from qpt import dft, model, molecules, train
from qpt.errors import InputError
from qpt.files import written_whole
from qpt.level import LEARNT_FOR, Level
from qpt.molecule import Molecule

MODES = ("train", "eval")
# Fields that may differ when resuming: they change neither the trajectory nor its meaning, but
# for train.steps, which extends (or ends) a run: its learning-rate schedule is made for the new
# total, which the run says when it resumes (`experiment`). The device layout is among them: a
# checkpoint restores on any mesh (the trajectory then agrees to float32 rounding; bitwise on the
# same devices, or with backend.layout_independent).
RESUMABLE_CHANGES = ("workdir", "mode", "init_from", "train.steps", "log_every", "checkpoint.every",
                     "checkpoint.keep", "eval.every", "eval.n_conformers", "eval.n_validation",
                     "eval.per_molecule", "eval.refine_steps", "eval.hot_temperature",
                     "data.workers", "data.prefetch", "backend.name", "backend.cpu_devices",
                     "backend.emulate", "backend.coordinator_address", "backend.num_processes",
                     "backend.process_id", "backend.layout_independent", "mesh.data",
                     "mesh.model")
# Counts and their least sensible value (0 means "none" where it is allowed).
_MINIMUM = {"train.steps": 1, "train.batch_size": 1, "log_every": 1, "checkpoint.every": 1,
            "checkpoint.keep": 1, "data.mol_repeats": 1, "data.workers": 0, "data.prefetch": 0,
            "eval.per_molecule": 1, "eval.every": 0, "eval.n_validation": 0, "eval.n_conformers": 0,
            "model.pair_rank": 0, "train.max_bad_steps": 1, "data.split_seed": 0,
            "data.max_heavy_atoms": 0, "data.max_electrons": 0, "data.max_n_ao": 0}


def load(spec: str) -> ml_collections.ConfigDict:
  """The config a file names, as `--config` reads it: "path/to/config.py" or "path.py:argument"
  (get_config(argument); "path.py:" passes the empty argument)."""
  path, colon, argument = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("qpt_config", path)
  if module_spec is None or not os.path.isfile(path):
    raise InputError(f"{path}: no such config file")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(argument) if colon else module.get_config()


def check(config) -> None:
  """One-line InputError for a config that cannot run, before anything is computed or written."""
  if config.mode not in MODES:
    raise InputError(f"mode={config.mode!r}: choose one of {', '.join(MODES)}")
  if not str(config.workdir).strip():  # it would be the current directory
    raise InputError("workdir is empty: name the run's directory (was a shell variable unset?)")
  train.conformer_loss(config.loss, config.iterations, config.mixing,
                      config.self_consistency_weight)  # loss, mixing, weight
  model.model_config(config.model.size)
  train.make_optimizer(config.train)  # learning rate, warm-up, weight decay, clip
  dft.check_refine(config.eval.refine_steps, "eval.refine_steps")
  if not config.eval.hot_temperature >= 0:
    raise InputError(f"eval.hot_temperature={config.eval.hot_temperature}: must be ≥ 0 K "
                     "(0 = no generalisation set)")
  Level.from_config(config, stream=True)  # also the evaluation's level
  if config.data.md17_file and config.data.molecule_set:
    raise InputError("data.md17_file and data.molecule_set are both set: choose one source")
  if not (config.data.md17_file or config.data.molecule_set):
    molecules.get(config.molecule)
  flat = flatten(config.to_dict())
  for key, minimum in _MINIMUM.items():
    if flat[key] < minimum:
      raise InputError(f"{key}={flat[key]}: must be at least {minimum}"
                       + (" (0: none)" if minimum == 0 else ""))


def flatten(tree: dict, prefix: str = "") -> dict:
  """{"train": {"steps": 5}} → {"train.steps": 5}; tuples become lists (as JSON has them)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
  return out


def unflatten(flat: dict) -> ml_collections.ConfigDict:
  """The ConfigDict a `flatten`ed dict came from (lists stay lists)."""
  tree: dict = {}
  for key, value in flat.items():
    *sections, field = key.split(".")
    node = tree
    for section in sections:
      node = node.setdefault(section, {})
    node[field] = value
  return ml_collections.ConfigDict(tree)


@dataclasses.dataclass(frozen=True)
class TrainedOn:
  """What a model's training molecules covered: their elements (atomic numbers) and their total
  charges, each ascending. Outside it the model is out of its domain: it reads an element through
  an embedding that only training moves, and has no input for the charge. Water's model put
  ethanol 2.3 Ha and H₃O⁺ 46 mHa above their SCFs, with no word (docs/results.md §5)."""

  elements: tuple[int, ...]
  charges: tuple[int, ...]

  @classmethod
  def of(cls, training: Iterable[Molecule]) -> TrainedOn:
    training = list(training)
    return cls(tuple(sorted({int(z) for m in training for z in m.atomic_numbers})),
               tuple(sorted({int(m.charge) for m in training})))

  def __or__(self, other: TrainedOn) -> TrainedOn:
    return TrainedOn(tuple(sorted({*self.elements, *other.elements})),
                     tuple(sorted({*self.charges, *other.charges})))


def record(workdir: str, config, backend_description: str, trained_on: TrainedOn | None) -> None:
  """Writes workdir/config.json: the resolved config, package versions, the devices and what the
  model has trained on (`TrainedOn`; None: not known)."""
  with written_whole(os.path.join(workdir, "config.json")) as temporary, open(temporary, "w") as f:
    json.dump(dict(config=flatten(config.to_dict()), versions=versions(),
                   backend=backend_description,
                   trained_on=trained_on and dataclasses.asdict(trained_on)), f, indent=1)


def trained_on(workdir: str) -> TrainedOn | None:
  """What the model of a run in `workdir` has trained on (its own molecules, and those of the run
  it was fine-tuned from), or None where config.json does not say (none, or one written before
  QPT recorded it)."""
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      found = json.load(f).get("trained_on")
    return None if found is None else TrainedOn(*(tuple(int(v) for v in found[k])
                                                 for k in ("elements", "charges")))
  except (OSError, ValueError, AttributeError, KeyError, TypeError):
    return None


def saved(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` recorded (its config.json)."""
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      return unflatten(json.load(f)["config"])
  except (OSError, KeyError, ValueError):
    raise InputError(f"{workdir}: no config.json of a training run") from None


# Fields added since runs were first checkpointed that change what training computes, with the value
# that means what QPT did before the field existed. Their defaults have since moved (md17.py's
# ethanol and qm9.py train on a level-1 grid with density fitting), so a run saved before them
# must not pick the new defaults up silently on resumption.
BEFORE_IT_EXISTED = {"data.grid_level": -1, "data.eri": "", "data.mol_repeats": 1,
                     "self_consistency_weight": 0.0, "data.ao_on_device": False,
                     "model.pair_rank": 0, "train.hold_fraction": 0.0}

# The one `model.*` field that leaves the parameters' shapes alone: every other one is part of the
# architecture, which a fine-tuned run must share with its source.
_NOT_ARCHITECTURE = ("model.remat",)


def check_resumable(saved_flat: dict, wanted_flat: dict) -> None:
  """One-line InputError naming the first field that differs from the checkpointed run's.

  A field the saved run did not have (added to QPT since) is compared with what QPT did before it
  existed (`BEFORE_IT_EXISTED`); a field not listed there changes nothing the run computes.
  """
  for key in sorted(set(saved_flat) | set(wanted_flat)):
    if key in RESUMABLE_CHANGES:
      continue
    if key not in saved_flat:
      before = BEFORE_IT_EXISTED.get(key, wanted_flat.get(key))
      if wanted_flat.get(key) != before:
        raise InputError(f"workdir holds a run from before {key} existed, which trained as "
                         f"{key}={before!r}; this config has {wanted_flat.get(key)!r}: pass "
                         f"--config.{key}={before!r} to resume it, or use another workdir")
      continue
    if saved_flat[key] == wanted_flat.get(key):
      continue
    raise InputError(f"workdir holds a run with {key}={saved_flat.get(key)!r}, this config has "
                     f"{wanted_flat.get(key)!r}: use another workdir (or init_from to fine-tune)")


def check_model_matches(source_workdir: str, wanted_flat: dict, field: str = "init_from") -> None:
  """One-line InputError naming the flags to pass if the run in `source_workdir` recorded another
  model architecture than `wanted_flat`'s: its parameters would not fit. A directory without a
  config.json passes; its parameters' shapes are checked where they are loaded."""
  source = _recorded(source_workdir)
  if source is None:
    return
  architecture = sorted(key for key in set(source) | set(wanted_flat)
                        if key.startswith("model.") and key not in _NOT_ARCHITECTURE)
  differ = [(key, source.get(key, BEFORE_IT_EXISTED.get(key)), wanted_flat.get(key))
            for key in architecture
            if source.get(key, BEFORE_IT_EXISTED.get(key)) != wanted_flat.get(key)]
  if differ:
    flags = " ".join(f"--config.{key}={theirs!r}" for key, theirs, _ in differ)
    ours = ", ".join(f"{key}={mine!r}" for key, _, mine in differ)
    raise InputError(f"{field}={source_workdir} trained another model ({ours} here): pass {flags}")


def check_level_matches(source_workdir: str, wanted_flat: dict, field: str = "workdir") -> None:
  """One-line InputError naming the flags to pass if the run in `source_workdir` trained for
  another basis or functional than `wanted_flat` asks to evaluate at (mode=eval). Fine-tuning
  across them is allowed (a new run); a directory without a config.json passes."""
  source = _recorded(source_workdir)
  if source is None:
    return
  same = lambda a, b: str(a).strip().lower() == str(b).strip().lower()  # as `Level` reads them
  differ = [key for key in LEARNT_FOR if not same(source.get(key), wanted_flat.get(key))]
  if differ:
    theirs = ", ".join(f"{key}={source.get(key)!r}" for key in differ)
    ours = ", ".join(f"{key}={wanted_flat.get(key)!r}" for key in differ)
    flags = " ".join(f"--config.{key}={source.get(key)}" for key in differ)
    raise InputError(f"{field}={source_workdir} trained its model for {theirs}, not {ours}: pass "
                     f"{flags} to evaluate it (fine-tune it for another level with init_from)")


def _recorded(workdir: str) -> dict | None:
  """The flattened config a run in `workdir` recorded, or None where there is no config.json."""
  try:
    return flatten(saved(workdir).to_dict())
  except InputError:
    return None


def versions() -> dict:
  return {p: importlib.metadata.version(p)
          for p in ("jax", "jaxlib", "dm-haiku", "optax", "pyscf", "numpy", "ml-collections",
                    "orbax-checkpoint")}
