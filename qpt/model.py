"""The Quantum Pre-trained Transformer: atomic orbitals in, a Kohn–Sham Hamiltonian correction out.

  problem (canonical frame) ──tokens: one per AO──▶ biased transformer ──bilinear readout──▶ W (n, n)
  H = H_init + W,   H_init = Fock(D0), the Fock matrix of the MINAO density.

Design, and why:
  * Tokens are atomic orbitals, so H's rows and columns are the sequence positions: the readout
    W_ij = ⟨q_i, k_j⟩ needs no fixed output size, and every parameter shape depends on the config
    only (vocabularies have fixed maxima), so one parameter set serves every molecule and basis.
  * Attention logits get additive per-head biases from matrices known before any SCF — S, Hcore,
    D0, H_init and the distance between the orbitals' atoms — squashed by asinh/exp so core-level
    Hcore entries (tens of Hartree) cannot saturate the softmax.
  * With `pair_rank` r > 0 the readout also weighs each pair feature by both orbitals' tokens:
    W_ij += Σ_k f_k(i, j) ⟨u_ik, v_jk⟩ / √r — the form of extended Hückel's
    H_ij ∝ S_ij (H_ii + H_jj) / 2. S and H_init carry each pair's distance and orientation (a p
    orbital's lobe towards or away from its partner), which the bilinear ⟨q_i, k_j⟩ alone has to
    rebuild from the atoms' positions; over many molecules that is what the tiny model could not
    fit (QM9, r = 16: unseen molecules at 0.10× MINAO's energy error after 1,000 steps against
    0.31×; docs/results.md §10). One molecule's conformers do not need it (water: 16.5 µHa
    against 10.9).
  * W starts near zero (a small learned output scale), so the untrained model predicts H ≈ H_init
    and the loss starts at the MINAO-Fock energy rather than at a random Hamiltonian's.
  * Symmetries: permutations of atoms (and so of AOs) are exact — tokens carry no position index.
    Rotations and translations are *not* built in: coordinates and p/d labels are read as given.
    Feed problems built in the canonical frame (`frame.to_canonical`) and map W back with
    `frame.ao_matrix_to_lab`; equivariance then holds wherever the frame is unique (see frame.py).
  * Padded AOs (ao_mask 0) are never attended to and get W = 0; padded atoms (Z = 0) add nothing.
The network runs in float32 whatever the problem's dtype, its matmuls at full float32 precision;
W is returned in the problem's dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from qpt import dft
from qpt.errors import InputError
from qpt.precision import full_float32
from qpt.problem import DFTProblem

MAX_Z = 36  # element vocabulary H..Kr
MAX_SHELL = 8  # shell indices (per atom and l) beyond this share the last embedding
MAX_L = 4  # s..g
NEIGHBOUR_LENGTHS = (1.5, 3.0, 6.0)  # Bohr; Gaussian widths of the smooth neighbour counts
COORDINATE_SCALE = 5.0  # Bohr; canonical coordinates enter the network divided by this
N_PAIR_FEATURES = 6  # S, asinh Hcore, asinh D0, asinh H_init, exp(−d/1 Bohr), exp(−d/4 Bohr)


# ---- configuration -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of the QPT. Parameter count ≈ 12 · n_layers · d_model² (mlp_ratio 4).

  Attributes:
    size: preset name the config started from (a label; the fields below rule).
    d_model: width of the residual stream.
    n_layers: transformer blocks.
    n_heads: attention heads per block; must divide d_model.
    mlp_ratio: hidden width of each block's MLP, in units of d_model.
    remat: recompute each block's activations in the backward pass (memory ∝ 1 block, not n_layers).
    output_scale: initial value of W's learned output scale, Hartree: small so H ≈ H_init at init.
    log_output_scale: learn that scale as log(scale / output_scale) (parameter `output_log_scale`;
      it stays > 0), else as a plain scalar (parameter `output_scale`). The log is what label-free
      runs need (a plain scalar of 1e-3 can cross zero, where W passes no gradient); a plain one
      fits labels faster (docs/results.md §6), so the economics benchmark's supervised route
      trains with it.
    pair_rank: rank r of the readout's per-pair weights of the pair features (module docstring);
      0: one weight per feature for every pair.
  """

  size: str = "tiny"
  d_model: int = 256
  n_layers: int = 6
  n_heads: int = 8
  mlp_ratio: int = 4
  remat: bool = False
  output_scale: float = 1e-3
  log_output_scale: bool = True
  pair_rank: int = 0


SIZES = {  # name → fields; ~ parameter count in the comment
    "tiny": dict(d_model=256, n_layers=6, n_heads=8),  # ~5M
    "small": dict(d_model=384, n_layers=12, n_heads=8),  # ~21M
    "base": dict(d_model=768, n_layers=12, n_heads=12),  # ~85M
    "medium": dict(d_model=1024, n_layers=24, n_heads=16),  # ~303M, the paper's QPT
}


def model_config(size: str = "tiny", **overrides) -> ModelConfig:
  """The preset `size` ("tiny", "small", "base", "medium") with some fields overridden."""
  if size not in SIZES:
    raise InputError(f"model size {size!r}: choose one of {', '.join(SIZES)}")
  config = ModelConfig(size=size, **{**SIZES[size], **overrides})
  if not (isinstance(config.pair_rank, int) and config.pair_rank >= 0):
    raise InputError(f"pair_rank={config.pair_rank!r}: must be a whole number ≥ 0")
  if config.d_model % config.n_heads:
    raise InputError(f"d_model={config.d_model} is not divisible by n_heads={config.n_heads}")
  return config


def config_from_params(params: hk.Params, remat: bool = False) -> ModelConfig:
  """The ModelConfig whose parameters have the shapes of `params` (e.g. loaded from a checkpoint)."""
  try:
    n_layers, d_model, hidden = np.shape(params["blocks/mlp_in"]["w"])
    n_heads = np.shape(params["blocks/attention"]["bias_scales"])[-1]
  except (KeyError, TypeError, ValueError):
    raise InputError("these are not QPT parameters (no blocks/mlp_in or blocks/attention)") from None
  fields = dict(d_model=int(d_model), n_layers=int(n_layers), n_heads=int(n_heads))
  size = next((name for name, preset in SIZES.items() if preset == fields), "custom")
  log_output_scale = "output_scale" not in params.get("~", {})
  pair_query = params.get("readout_pair_query")
  pair_rank = np.shape(pair_query["w"])[1] // N_PAIR_FEATURES if pair_query else 0
  return ModelConfig(size=size, mlp_ratio=int(hidden) // int(d_model), remat=remat,
                     log_output_scale=log_output_scale, pair_rank=int(pair_rank), **fields)


# ---- inputs ----------------------------------------------------------------------------------


def check_supported(problem: DFTProblem) -> None:
  """Raises InputError if the model cannot read `problem` (an element beyond Kr, an l beyond g).

  Host-side: call it where problems are built. Traced arrays (inside jit/vmap) are not checked,
  since an index beyond a vocabulary would silently be clipped there.
  """
  if isinstance(problem.atomic_numbers, jax.core.Tracer):
    return
  z = np.asarray(problem.atomic_numbers)
  if z.max() > MAX_Z:
    raise InputError(f"element Z={int(z.max())} is beyond the model's vocabulary H..Kr "
                     f"(Z ≤ {MAX_Z})")
  l_max = int(np.asarray(problem.orbital_labels)[:, 2].max())
  if l_max > MAX_L:
    raise InputError(f"the basis has l={l_max} functions; the model reads s..g (l ≤ {MAX_L})")


def atom_features(atomic_numbers: jax.Array, positions: jax.Array) -> jax.Array:
  """Rotation-dependent geometric features per atom (a, 3 + 1 + 2·len(NEIGHBOUR_LENGTHS)).

  Coordinates relative to the nuclear-charge centroid (/ COORDINATE_SCALE), distance to the
  centroid, and smooth neighbour counts Σ_j exp(−r_ij²/σ²), plain and weighted by Z_j/10, at each
  width σ. Padded atoms (Z = 0) weigh nothing.
  """
  z = atomic_numbers.astype(jnp.float32)
  real = (atomic_numbers > 0).astype(jnp.float32)
  centroid = z @ positions / jnp.sum(z)
  coords = positions - centroid
  radius = _safe_norm(coords)
  d2 = jnp.sum((positions[:, None] - positions[None]) ** 2, axis=-1)
  others = real[None, :] * (1.0 - jnp.eye(len(z), dtype=jnp.float32))
  counts = []
  for sigma in NEIGHBOUR_LENGTHS:
    g = jnp.exp(-d2 / sigma**2) * others
    counts += [jnp.sum(g, axis=1), g @ z / 10.0]
  return jnp.concatenate([coords / COORDINATE_SCALE, radius[:, None] / COORDINATE_SCALE,
                          jnp.stack(counts, axis=1)], axis=1)


def pair_features(problem: DFTProblem, h_init: jax.Array) -> jax.Array:
  """Bounded physical features of each AO pair (n, n, N_PAIR_FEATURES), float32.

  S is in [−1, 1] already; Hcore, D0 and H_init (Hartree, electrons) go through asinh, which is
  linear near 0 and logarithmic for the −20 Ha core entries; atom–atom distances d (Bohr) through
  exp(−d/ℓ) at ℓ = 1 and 4 Bohr, which is also 1 exactly for orbitals on the same atom.
  """
  atom = jnp.maximum(problem.orbital_labels[:, 0], 0)
  where = problem.positions.astype(jnp.float32)[atom]
  d = _safe_norm(where[:, None] - where[None])
  f32 = lambda m: m.astype(jnp.float32)
  return jnp.stack([f32(problem.overlap), jnp.arcsinh(f32(problem.hcore)),
                    jnp.arcsinh(f32(problem.density_ref)), jnp.arcsinh(f32(h_init)),
                    jnp.exp(-d), jnp.exp(-d / 4.0)], axis=-1)


def _safe_norm(x: jax.Array) -> jax.Array:
  """|x| over the last axis, with a zero (not NaN) gradient at x = 0."""
  x2 = jnp.sum(x * x, axis=-1)
  positive = x2 > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x2, 1.0)), 0.0)


# ---- network ---------------------------------------------------------------------------------


class OrbitalEmbedding(hk.Module):
  """One token (d_model,) per AO: what the orbital is, and where its atom sits."""

  def __init__(self, d_model: int, name: str | None = None):
    super().__init__(name=name)
    self.d_model = d_model

  def __call__(self, problem: DFTProblem) -> jax.Array:
    labels = problem.orbital_labels
    atom = jnp.maximum(labels[:, 0], 0)  # padding rows read atom 0; they are masked later
    shell = jnp.clip(labels[:, 1], 0, MAX_SHELL - 1)
    l = jnp.clip(labels[:, 2], 0, MAX_L)
    lm = l * l + jnp.clip(labels[:, 3], 0, 2 * l)  # m means different things for each l
    z = jnp.clip(problem.atomic_numbers, 0, MAX_Z)[atom]
    embed = lambda vocab, name, ids: hk.Embed(vocab, self.d_model, name=name)(ids)
    tokens = (embed(MAX_Z + 1, "element", z) + embed(MAX_SHELL, "shell", shell)
              + embed(MAX_L + 1, "l", l) + embed((MAX_L + 1) ** 2, "lm", lm))
    geometry = atom_features(problem.atomic_numbers, problem.positions.astype(jnp.float32))
    geometry = hk.nets.MLP([self.d_model, self.d_model], activation=jax.nn.gelu,
                           name="geometry")(geometry)
    return tokens + geometry[atom]


class BiasedAttention(hk.Module):
  """Multi-head self-attention over AOs with per-head additive biases from pair features.

  logits_h(i, j) = ⟨q_i, k_j⟩_h / √d_head + Σ_k a_{h,k} f_k(i, j), keys with mask 0 excluded.
  """

  def __init__(self, n_heads: int, out_init: hk.initializers.Initializer, name: str | None = None):
    super().__init__(name=name)
    self.n_heads = n_heads
    self.out_init = out_init

  def __call__(self, x: jax.Array, pairs: jax.Array, key_mask: jax.Array) -> jax.Array:
    n, d = x.shape
    heads, d_head = self.n_heads, d // self.n_heads
    split = lambda name: hk.Linear(d, name=name)(x).reshape(n, heads, d_head)
    q, k, v = split("query"), split("key"), split("value")
    # Nonzero at init, so the physics steers attention from the first step.
    scales = hk.get_parameter("bias_scales", (pairs.shape[-1], heads), jnp.float32,
                              init=hk.initializers.TruncatedNormal(0.5))
    logits = jnp.einsum("ihc,jhc->hij", q, k) / math.sqrt(d_head)
    logits += jnp.einsum("ijk,kh->hij", pairs, scales)
    # A large finite value, not −inf: a row can then never become NaN.
    logits = jnp.where(key_mask[None, None, :] > 0, logits, -1e9)
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("hij,jhc->ihc", weights, v).reshape(n, d)
    return hk.Linear(d, w_init=self.out_init, name="output")(out)


def _block(config: ModelConfig, pairs: jax.Array, key_mask: jax.Array):
  """One pre-LayerNorm transformer block x (n, d) → x (n, d), closing over the pair features."""
  d = config.d_model
  # Residual branches start small (GPT-2): the stream's variance then grows ~1 + n_layers·ε.
  out_init = hk.initializers.TruncatedNormal(1.0 / math.sqrt(2 * config.n_layers * d))

  def block(x):
    norm = lambda name: hk.LayerNorm(-1, create_scale=True, create_offset=True, name=name)
    x = x + BiasedAttention(config.n_heads, out_init, name="attention")(
        norm("attention_norm")(x), pairs, key_mask)
    h = hk.Linear(config.mlp_ratio * d, name="mlp_in")(norm("mlp_norm")(x))
    return x + hk.Linear(d, w_init=out_init, name="mlp_out")(jax.nn.gelu(h))

  return hk.remat(block) if config.remat else block


def _readout(config: ModelConfig, x: jax.Array, pairs: jax.Array, mask: jax.Array) -> jax.Array:
  """Symmetric W (n, n) Hartree from tokens x (n, d): bilinear term plus a pair-feature term,
  whose weights are one per feature, plus ⟨u_ik, v_jk⟩ / √r per pair with `pair_rank` r."""
  x = hk.LayerNorm(-1, create_scale=True, create_offset=True, name="readout_norm")(x)
  q = hk.Linear(config.d_model, name="readout_query")(x)
  k = hk.Linear(config.d_model, name="readout_key")(x)
  # The pair term is ~10× the bilinear one at stddev 1; 0.25 keeps them comparable at init.
  pair_weights = hk.get_parameter("readout_pair", (pairs.shape[-1],), jnp.float32,
                                  init=hk.initializers.TruncatedNormal(0.25))
  # Adam moves a parameter by ~lr per step whatever its gradient, so a plain scalar of ~1e-3 can
  # cross zero in a step or two, where W passes no gradient to the readout (QM9 runs stalled so,
  # at W ≈ 0): label-free runs learn its logarithm. The same step size makes the plain scalar
  # grow ~4× in the first 25 steps, which speeds fitting labels (the readout's effective step).
  if config.log_output_scale:
    log_scale = hk.get_parameter("output_log_scale", (), jnp.float32, init=jnp.zeros)
    scale = config.output_scale * jnp.exp(log_scale)
  else:
    scale = hk.get_parameter("output_scale", (), jnp.float32,
                             init=hk.initializers.Constant(config.output_scale))
  pair_term = pairs @ pair_weights
  if config.pair_rank:  # n²·features·r multiply-adds: ~1 M for 100 orbitals at r = 16
    r, features = config.pair_rank, pairs.shape[-1]
    u = hk.Linear(features * r, name="readout_pair_query")(x).reshape(-1, features, r)
    v = hk.Linear(features * r, name="readout_pair_key")(x).reshape(-1, features, r)
    per_pair = jnp.einsum("ikr,jkr->ijk", u, v)  # (n, n, features)
    pair_term = pair_term + jnp.sum(pairs * per_pair, axis=-1) / math.sqrt(r)
  a = scale * (q @ k.T / math.sqrt(config.d_model) + pair_term)
  w = 0.5 * (a + a.T)
  # XLA may rewrite the transpose of a product as the product of transposes, whose rounding differs;
  # reading both triangles from the same entries makes W symmetric bit for bit.
  i, j = jnp.indices(w.shape)
  w = w[jnp.minimum(i, j), jnp.maximum(i, j)]
  return jnp.where(mask[:, None] * mask[None, :] > 0, w, 0.0)


@functools.cache  # one transform per config: jitted functions keyed on it then compile once
def make_model(config: ModelConfig) -> hk.Transformed:
  """The QPT as a Haiku transform: apply(params, problem, h_init=None, parameter_getter=None) →
  W (n, n) Hartree.

  `problem` must be built in the canonical frame (`frame.to_canonical`) for the prediction to be
  rotation- and translation-equivariant. `h_init` (n, n) is Fock(D0); computed if not given.
  `parameter_getter`: a Haiku custom getter every parameter passes through where it is used (one
  layer's slice inside the layer stack) — how the backend gathers sharded parameters layer by
  layer (`Backend.gather_parameter`).
  Works under jax.jit and jax.vmap over stacked problems of equal padded shapes.
  """

  @full_float32
  def forward(problem: DFTProblem, h_init: jax.Array | None = None,
              parameter_getter=None) -> jax.Array:
    if parameter_getter is not None:
      with hk.custom_getter(parameter_getter):
        return forward(problem, h_init)
    check_supported(problem)
    problem = jax.tree.map(jnp.asarray, problem)  # host (NumPy) leaves cannot take traced indices
    if h_init is None:
      h_init = dft.initial_fock(problem)
    mask = problem.ao_mask.astype(jnp.float32)
    pairs = pair_features(problem, h_init)
    x = OrbitalEmbedding(config.d_model, name="embedding")(problem)
    x = hk.layer_stack(config.n_layers, name="blocks")(_block(config, pairs, mask))(x)
    return _readout(config, x, pairs, mask).astype(problem.dtype)

  return hk.without_apply_rng(hk.transform(forward))


@full_float32
def hamiltonian(model: hk.Transformed, params: hk.Params, problem: DFTProblem,
                parameter_getter=None) -> jax.Array:
  """The predicted Kohn–Sham Hamiltonian H = H_init + W (n, n) Hartree, in the problem's dtype.
  `parameter_getter`: see `make_model`."""
  check_supported(problem)
  h_init = dft.initial_fock(problem)
  if parameter_getter is None:  # any Transformed of (problem, h_init) serves, e.g. a test oracle
    return h_init + model.apply(params, problem, h_init)
  return h_init + model.apply(params, problem, h_init, parameter_getter)


def parameter_count(params) -> int:
  """Number of scalars in a parameter tree (arrays or jax.ShapeDtypeStruct leaves)."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
