"""Vision Transformer whose LayerNorm placement is a config value.

The study asks where LayerNorms should sit in a ViT encoder block, so the block is written once
and the norm positions are data (`norm_placement`), not separate model classes. Everything else
follows google-research/vision_transformer (`vit_jax/models_vit.py`) so that official
checkpoints load by name.

Per sublayer f (attention or MLP, including its own dropout), with drop-path on the branch:

    y = LN_in(x) if 'in' else x
    y = f(y)
    y = LN_out(y) if 'out' else y
    x = x + drop_path(y)
    x = LN_res(x) if 'res' else x

Parameter names (vit_jax names where a counterpart exists):

    embedding/{kernel,bias}                         patch embedding Conv, kernel [p, p, 3, hidden]
    cls                                             [1, 1, hidden]          (classifier='token')
    Transformer/posembed_input/pos_embedding        [1, tokens, hidden]     (posemb='learn')
    Transformer/encoderblock_{i}/
        LayerNorm_0                                 attention 'in'
        LayerNorm_attn_out                          attention 'out'
        LayerNorm_attn_res                          attention 'res'
        MultiHeadDotProductAttention_1/{query,key,value}/kernel  [hidden, heads, head_dim]
        MultiHeadDotProductAttention_1/out/kernel                [heads, head_dim, hidden]
        LayerNorm_2                                 MLP 'in'
        LayerNorm_mlp_out                           MLP 'out'
        LayerNorm_mlp_res                           MLP 'res'
        MlpBlock_3/Dense_{0..k}                     k = number of hidden widths
    Transformer/encoder_norm                        final LN (see NormPlacement.final_norm)
    pre_logits                                      Dense+tanh  (representation_size set)
    head_mlp_{j}                                    optional head MLP (head_hidden_sizes)
    head                                            classifier Dense, zeros kernel init

Hybrid (resnet_layers non-empty; vit_jax models_resnet names, at the top level like vit_jax):

    conv_root/kernel                                StdConv 7x7/2, [7, 7, 3, 64*width], no bias
    gn_root/{scale,bias}                            GroupNorm(32), then relu and max-pool 3x3/2
    block{s}/unit{u}/conv{1,2,3}/kernel             bottleneck 1x1 -> 3x3 (stride) -> 1x1 (x4)
    block{s}/unit{u}/gn{1,2,3}/{scale,bias}         GroupNorm after each conv (gn3 scale init 0)
    block{s}/unit1/conv_proj/kernel, gn_proj        projection shortcut of each stage's 1st unit
    embedding                                       then patchifies the FEATURE MAP: patch_size
                                                    counts feature-map pixels (R50+B/16: 1)

With `scan=True` the blocks are one scanned module: `Transformer/encoderblock/...` (no `_{i}`),
every leaf gaining a leading [num_layers] axis. Convert with `stack_block_params` /
`unstack_block_params`.

Intermediates (no cost unless the 'intermediates' collection is mutable):
`.../MultiHeadDotProductAttention_1/attention_weights` [batch, heads, tokens, tokens] per layer,
`pooled` (encoder output after pooling) and `head_input` (the features `head` sees; not named
`pre_logits`, which is the vit_jax Dense's name). Under scan the weights gain a leading layer axis.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# ----------------------------------------------------------------------------- names
SUBLAYERS = ('attn', 'mlp')
NORM_POSITIONS = ('in', 'out', 'res')
NORM_PRESETS: dict[str, str] = {
    'pre': 'attn:in,mlp:in',
    'post': 'attn:res,mlp:res',
    'addnorm': 'attn:in,mlp:in+out',
    'sandwich': 'attn:in+out,mlp:in+out',
    'seed': 'attn:in,mlp:out',  # what the seed Keras notebook's code actually computed
    'none': 'attn:none,mlp:none',
}
CLASSIFIERS = ('token', 'gap', 'flatten')
POSEMBS = ('learn', 'sincos2d')
ATTENTION_IMPLS = ('xla', 'cudnn', 'folded')

# LN module names per (sublayer, position); the 'in' ones keep the vit_jax names.
LN_NAMES = {
    ('attn', 'in'): 'LayerNorm_0', ('attn', 'out'): 'LayerNorm_attn_out',
    ('attn', 'res'): 'LayerNorm_attn_res',
    ('mlp', 'in'): 'LayerNorm_2', ('mlp', 'out'): 'LayerNorm_mlp_out',
    ('mlp', 'res'): 'LayerNorm_mlp_res',
}

# name -> (hidden_size, num_layers, num_heads, mlp_dim); ViT paper / AugReg sizes.
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    'Ti': (192, 12, 3, 768),
    'S': (384, 12, 6, 1536),
    'B': (768, 12, 12, 3072),
    'L': (1024, 24, 16, 4096),
    'H': (1280, 32, 16, 5120),
}

# Hybrid variants 'R50+B/16' etc. (ViT paper / AugReg): (resnet, effective patch) -> stage sizes.
# The feature map is image / resnet_stride(layers), so these all use patch_size 1 on it.
RESNET_VARIANTS: dict[tuple[str, int], tuple[int, ...]] = {
    ('R50', 16): (3, 4, 9),  # the ViT paper's R50: stage 4 folded into stage 3 (stride 16)
    ('R50', 32): (3, 4, 6, 3),
    ('R26', 32): (2, 2, 2, 2),
}

SINCOS_TEMPERATURE = 10_000.0
_DROPOUT_LEVELS = 2**16  # resolution of Dropout's keep probability (16 random bits)


# ----------------------------------------------------------------------------- norm placement
@dataclasses.dataclass(frozen=True)
class NormPlacement:
  """Which LN positions ('in', 'out', 'res') are on for each sublayer."""
  attn: frozenset[str]
  mlp: frozenset[str]

  @property
  def final_norm(self) -> bool:
    """Default final LN: needed iff the residual stream leaves the last block unnormalized."""
    return 'res' not in self.mlp

  @property
  def spec(self) -> str:
    """Canonical explicit spec string, e.g. 'attn:in,mlp:in+out'."""
    def fmt(s):
      return '+'.join(p for p in NORM_POSITIONS if p in s) or 'none'
    return f'attn:{fmt(self.attn)},mlp:{fmt(self.mlp)}'


def _placement_error(spec: Any, what: str) -> ValueError:
  presets = ', '.join(f'{k} ({v})' for k, v in NORM_PRESETS.items())
  return ValueError(
      f'Invalid norm_placement {spec!r}: {what}. Use a preset name, one of: {presets}; '
      "or an explicit spec 'attn:<positions>,mlp:<positions>' naming each sublayer once, "
      f"where <positions> is '+'-joined from {', '.join(NORM_POSITIONS)}, or empty/'none' "
      "for no LN, e.g. 'attn:in,mlp:in+out'.")


def parse_norm_placement(spec: str | NormPlacement) -> NormPlacement:
  """Parses a preset name or an explicit spec like 'attn:in,mlp:in+out'."""
  if isinstance(spec, NormPlacement):
    return spec
  if not isinstance(spec, str):
    raise _placement_error(spec, f'expected a string, got {type(spec).__name__}')
  text = spec.strip().lower()
  if ':' not in text:
    if text not in NORM_PRESETS:
      raise _placement_error(spec, f'unknown preset {text!r}')
    text = NORM_PRESETS[text]
  found: dict[str, frozenset[str]] = {}
  for part in text.split(','):
    if part.count(':') != 1:
      raise _placement_error(spec, f"malformed part {part.strip()!r} (expected 'sublayer:positions')")
    sub, positions = (s.strip() for s in part.split(':'))
    if sub not in SUBLAYERS:
      raise _placement_error(spec, f'unknown sublayer {sub!r} (valid: {", ".join(SUBLAYERS)})')
    if sub in found:
      raise _placement_error(spec, f'sublayer {sub!r} named more than once')
    names = [] if positions in ('', 'none') else [p.strip() for p in positions.split('+')]
    for p in names:
      if p not in NORM_POSITIONS:
        raise _placement_error(
            spec, f'unknown position {p!r} for {sub!r} (valid: {", ".join(NORM_POSITIONS)})')
    if len(set(names)) != len(names):
      raise _placement_error(spec, f'repeated position in {part.strip()!r}')
    found[sub] = frozenset(names)
  missing = [s for s in SUBLAYERS if s not in found]
  if missing:
    raise _placement_error(spec, f'sublayer {", ".join(map(repr, missing))} not given')
  return NormPlacement(attn=found['attn'], mlp=found['mlp'])


# ----------------------------------------------------------------------------- helpers
def posemb_sincos_2d(h: int, w: int, width: int,
                     temperature: float = SINCOS_TEMPERATURE) -> np.ndarray:
  """Fixed 2D sin-cos table [1, h*w, width] (MoCo v3 / big_vision layout: sin x, cos x, sin y, cos y)."""
  if width % 4 or width < 8:
    raise ValueError(f'posemb=sincos2d needs hidden_size divisible by 4 and >= 8, got {width}')
  y, x = np.mgrid[:h, :w]
  quarter = width // 4
  omega = 1.0 / temperature**(np.arange(quarter) / (quarter - 1))  # [width/4]
  x = np.einsum('m,d->md', x.reshape(-1), omega)  # [h*w, width/4]
  y = np.einsum('m,d->md', y.reshape(-1), omega)
  pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return pe[None].astype(np.float32)  # [1, h*w, width]


def drop_path_rates(rate: float, num_layers: int) -> np.ndarray:
  """Stochastic-depth rate per layer, linear from 0 (first) to `rate` (last), as in DeiT."""
  return np.linspace(0.0, rate, num_layers, dtype=np.float32)


def resnet_stride(resnet_layers: Sequence[int]) -> int:
  """Downsampling of the hybrid stem: root conv /2, max-pool /2, each stage after the 1st /2."""
  return 4 * 2**(len(resnet_layers) - 1) if resnet_layers else 1


def stack_block_params(params: Mapping, num_layers: int) -> dict:
  """Converts unscanned params (encoderblock_{i}) to the scan=True layout (encoderblock)."""
  params = dict(params)
  tr = dict(params['Transformer'])
  blocks = [tr.pop(f'encoderblock_{i}') for i in range(num_layers)]
  tr['encoderblock'] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
  params['Transformer'] = tr
  return params


def unstack_block_params(params: Mapping, num_layers: int) -> dict:
  """Inverse of `stack_block_params`."""
  params = dict(params)
  tr = dict(params['Transformer'])
  stacked = tr.pop('encoderblock')
  for i in range(num_layers):
    tr[f'encoderblock_{i}'] = jax.tree.map(lambda x, i=i: x[i], stacked)
  params['Transformer'] = tr
  return params


# ----------------------------------------------------------------------------- modules
class AddPositionEmbs(nn.Module):
  """Learned position embedding (vit_jax name `posembed_input/pos_embedding`)."""
  stddev: float = 0.02  # from BERT, as in vit_jax
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:  # x: [batch, tokens, width]
    pe = self.param('pos_embedding', nn.initializers.normal(stddev=self.stddev),
                    (1,) + x.shape[1:], self.param_dtype)
    return x + pe.astype(x.dtype)


def _rotate_left(x: Array, bits: int) -> Array:
  return jax.lax.shift_left(x, np.uint32(bits)) | jax.lax.shift_right_logical(x, np.uint32(32 - bits))


def _threefry2x32(key: tuple[Array, Array], x: tuple[Array, Array]) -> tuple[Array, Array]:
  """The Threefry-2x32 block cipher (20 rounds; Salmon et al. 2011), written out unrolled."""
  ks = (key[0], key[1], key[0] ^ key[1] ^ np.uint32(0x1BD11BDA))
  x0, x1 = x[0] + ks[0], x[1] + ks[1]
  for i in range(5):
    for r in ((13, 15, 26, 6), (17, 29, 16, 24))[i % 2]:
      x0 = x0 + x1
      x1 = _rotate_left(x1, r) ^ x0
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def random_bits(key: Array, size: int) -> Array:
  """`jax.random.bits(key, (size,), uint32)`, bit for bit, but fast on CPU for threefry keys.

  Why: on CPU JAX lowers threefry as a 5-iteration while loop (jax/_src/random/threefry2x32.py,
  rolled to keep compiles short), and each iteration is a pass over memory. Here the same hash
  is written out, one fused elementwise loop: 2.5M words in 1.9 ms instead of 10 ms on 2 CPU
  cores. Same counters and output as JAX's partitionable threefry (the default; tested), so
  dropout masks do not change. Other key types (rbg, ...) go to JAX.
  """
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)  # a raw key is of the default impl, as in jax.random
  if (str(jax.random.key_impl(key)) != 'threefry2x32' or not jax.config.jax_threefry_partitionable
      or size >= 2**32):
    return jax.random.bits(key, (size,), jnp.uint32)
  k = jax.random.key_data(key)  # [2] uint32
  counts = jax.lax.iota(np.uint32, size)  # the low word of the 64-bit counter; the high word is 0
  hi, lo = _threefry2x32((k[0], k[1]), (jnp.zeros_like(counts), counts))
  return hi ^ lo


class Dropout(nn.Module):
  """Inverted dropout drawing 16 random bits per element instead of flax's 32.

  Why: on CPU the random bit generator is most of dropout's cost, and the seed configs draw
  tens of millions of masks per step (attention weights included). One uint32 draw is split into
  two uint16 halves, halving the generator's work, and the bits come from `random_bits` (JAX's
  threefry, unrolled). An element is kept when its 16 bits are >= round(rate * 2^16) and scaled
  by 1 / (that exact keep probability), so the output is unbiased; the drop probability differs
  from `rate` by at most 2^-17. Measured on 2 CPU cores (benchmarks/train_step.py, dropout 0.1
  everywhere): 16 bits: seed 001's step 69 -> 82 img/s, seed 000's 113 -> 120 img/s; unrolled
  threefry: see docs/benchmarks.md.
  """
  rate: float

  def _keep(self, shape: tuple[int, ...]) -> tuple[Array, float]:
    """The keep mask (bool, `shape`) and the exact keep probability it was drawn with."""
    threshold = round(self.rate * _DROPOUT_LEVELS)
    size = math.prod(shape)
    words = random_bits(self.make_rng('dropout'), (size + 1) // 2)
    bits = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:size].reshape(shape)
    return bits >= threshold, 1.0 - threshold / _DROPOUT_LEVELS

  def keep_scale(self, shape: tuple[int, ...], dtype: Any) -> Array:
    """What a kept element is multiplied by: 1 / keep probability, or 0 where dropped."""
    keep, keep_prob = self._keep(shape)
    return jnp.where(keep, jnp.asarray(1.0 / keep_prob, dtype), jnp.zeros((), dtype))

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    if deterministic or self.rate == 0:
      return x
    if self.rate >= 1:
      return jnp.zeros_like(x)
    keep, keep_prob = self._keep(x.shape)
    return jnp.where(keep, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros_like(x))


@jax.custom_vjp
def softmax_dropout(logits: Array, keep_scale: Array) -> Array:
  """softmax(logits, axis=-1) * keep_scale, whose backward pass never looks at the mask.

  Why: with y = softmax(l) * m and w = softmax(l), the gradient is dl = g*y - w * sum(g*y), so
  the backward needs y and w (kept anyway) but not m. Left to autodiff, XLA:CPU fuses the
  dropout mask's random-bit hash into the backward pass as well, hashing every attention weight
  twice (seed 001's step: 130 -> 138 img/s without). `keep_scale` gets no gradient (random bits).
  """
  return jax.nn.softmax(logits, axis=-1) * keep_scale.astype(jnp.float32)


def _softmax_dropout_fwd(logits, keep_scale):
  weights = jax.nn.softmax(logits, axis=-1)
  dropped = weights * keep_scale.astype(jnp.float32)
  return dropped, (weights, dropped)


def _softmax_dropout_bwd(residuals, g):
  weights, dropped = residuals
  t = g * dropped
  return t - weights * jnp.sum(t, axis=-1, keepdims=True), None


softmax_dropout.defvjp(_softmax_dropout_fwd, _softmax_dropout_bwd)


class DropPath(nn.Module):
  """Stochastic depth: drops a residual branch per example; `rate` may be traced (scan)."""

  @nn.compact
  def __call__(self, y: Array, rate: float | Array, *, deterministic: bool) -> Array:
    if deterministic or (isinstance(rate, (int, float)) and rate == 0):
      return y
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (y.shape[0],) + (1,) * (y.ndim - 1))
    # Double `where` keeps rate == 1 free of 0/0 (also in the gradient).
    scale = jnp.where(keep > 0, 1.0 / jnp.where(keep > 0, keep, 1.0), 0.0)
    return y * (mask * scale).astype(y.dtype)


class _DenseGeneralParams(nn.Module):
  """The kernel [*in_shape, *features] and bias [*features] of an nn.DenseGeneral, not applied.

  Same names, shapes and initialisation as the nn.DenseGeneral it stands for (kernel_init sees
  the flattened [prod(in_shape), prod(features)] shape, bias starts at zero), so checkpoints and
  init are unchanged; the caller decides how the product is laid out.
  """
  in_shape: tuple[int, ...]
  features: tuple[int, ...]
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:
    flat = (math.prod(self.in_shape), math.prod(self.features))
    init = nn.initializers.xavier_uniform()
    kernel = self.param('kernel', lambda rng, shape, dtype: init(rng, flat, dtype).reshape(shape),
                        self.in_shape + self.features, self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, self.features, self.param_dtype)
    return kernel, bias


class MultiHeadDotProductAttention(nn.Module):
  """Self-attention with vit_jax parameter layout; sows weights only when asked.

  Layouts are chosen for XLA (measured, see docs/benchmarks.md): q, k and v are each one
  plain [tokens, width] x [width, heads * head_dim] matmul with the bias added token-major (its
  gradient is then a contiguous column sum; as `bqhd` einsums, XLA:CPU reduced it through a
  transposed layout), the attention output stays head-major [batch, heads, tokens, head_dim]
  and the output projection contracts (heads, head_dim) from there, saving a transpose each way.
  `implementation='folded'` computes the same function in fewer FLOPs when head_dim >= width
  (see `_folded`); 'cudnn' is the fused GPU kernel (bf16/fp16).
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  implementation: str = 'xla'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:  # x: [batch, tokens, width]
    x = x.astype(self.dtype)
    if self.implementation == 'folded':
      return self._folded(x, train=train)
    b, t, width = x.shape
    h, d = self.num_heads, self.head_dim

    def project(name: str) -> Array:  # [batch, tokens, heads, head_dim]
      kernel, bias = self._params(name, (width,), (h, d))
      y = jnp.dot(x.reshape(b * t, width), kernel.reshape(width, h * d))
      return (y + bias.reshape(h * d)).reshape(b, t, h, d)

    q, k, v = project('query'), project('key'), project('value')
    out_kernel, out_bias = self._params('out', (h, d), (width,))

    explicit = self.is_mutable_collection('intermediates') or (train and self.dropout_rate > 0)
    if explicit:  # fused kernels neither return the weights nor drop them out
      logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32) / math.sqrt(d)
      weights = self._weights(logits, heads_first=True, train=train)  # [batch, heads, q, k]
      y = jnp.einsum('bhqk,bkhd->bhqd', weights.astype(v.dtype), v)  # [batch, heads, tokens, head_dim]
      return jnp.einsum('bhqd,hdc->bqc', y, out_kernel) + out_bias  # [batch, tokens, width]
    impl = None if self.implementation == 'xla' else self.implementation
    y = jax.nn.dot_product_attention(q, k, v, implementation=impl)  # [batch, tokens, heads, head_dim]
    y = jnp.dot(y.reshape(b * t, h * d), out_kernel.reshape(h * d, width))
    return (y + out_bias).reshape(b, t, width)  # [batch, tokens, width]

  def _params(self, name: str, in_shape: tuple[int, ...],
              features: tuple[int, ...]) -> tuple[Array, Array]:
    """One projection's (kernel, bias) in the compute dtype (nn.DenseGeneral names and init)."""
    kernel, bias = _DenseGeneralParams(in_shape, features, self.param_dtype, name=name)()
    return kernel.astype(self.dtype), bias.astype(self.dtype)

  def _weights(self, logits: Array, *, heads_first: bool, train: bool) -> Array:
    """Softmax over keys (the last axis), sown as [batch, heads, q, k] when asked, dropped out."""
    if self.is_mutable_collection('intermediates'):
      weights = jax.nn.softmax(logits, axis=-1)
      self.sow('intermediates', 'attention_weights',
               weights if heads_first else weights.transpose(0, 2, 1, 3))
      return Dropout(self.dropout_rate)(weights, deterministic=not train)
    if not train or self.dropout_rate == 0:
      return jax.nn.softmax(logits, axis=-1)
    if self.dropout_rate >= 1:
      return jnp.zeros_like(logits)
    return softmax_dropout(logits, Dropout(self.dropout_rate).keep_scale(logits.shape, logits.dtype))

  def _folded(self, x: Array, *, train: bool) -> Array:  # x: [batch, tokens, width]
    """The same function with each head's kernel pairs folded: Wq Wk^T and Wv Wo, [width, width].

    Why: for the seeds' shapes (4 heads of key_dim 64 on width 64) the per-head projections are
    wider than the tokens they come from. Per head h, with x the block input:
      logits_h = (x Wq_h + bq_h)(x Wk_h + bk_h)^T / sqrt(d)
               = (x Wq_h Wk_h^T + bq_h Wk_h^T) x^T / sqrt(d) + (terms constant along keys),
    and softmax over keys drops the constants, so the key bias has no effect (its true gradient
    is 0, and here it is exactly 0). Likewise sum_h w_h (x Wv_h + bv_h) Wo_h
    = sum_h w_h (x Wv_h Wo_h + bv_h Wo_h), dropout on w included. So the keys are x itself,
    shared by all heads: the logits are one [tokens * heads, width] x [width, tokens] matmul per
    example and the output one [tokens, heads * tokens] x [heads * tokens, width] matmul, with
    no output projection. Matmul FLOPs per layer: 2 t w (h w) + 2 h t^2 w instead of
    4 t w (h d) + 2 h t^2 d, fewer whenever head_dim >= width; on XLA:CPU the large per-example
    GEMMs also run faster than per-head batches (see docs/benchmarks.md). Parameters,
    their names, initial values and the sown weights are the standard path's; only float
    rounding and which dropout bit lands on which weight differ.
    """
    b, t, width = x.shape
    h, d = self.num_heads, self.head_dim
    (wq, bq), (wk, _), (wv, bv) = (self._params(n, (width,), (h, d))
                                   for n in ('query', 'key', 'value'))
    wo, bo = self._params('out', (h, d), (width,))
    wk = wk / math.sqrt(d)
    qk = jnp.einsum('chd,ehd->che', wq, wk).reshape(width, h * width)  # [width, heads * width]
    qk_bias = jnp.einsum('hd,ehd->he', bq, wk).reshape(h * width)
    vo = jnp.einsum('chd,hde->che', wv, wo).reshape(width, h * width)  # [width, heads * width]
    vo_bias = jnp.einsum('hd,hde->he', bv, wo).reshape(h * width)
    x2d = x.reshape(b * t, width)
    queries = (jnp.dot(x2d, qk) + qk_bias).reshape(b, t * h, width)  # [batch, (q, heads), width]
    logits = jnp.einsum('bpc,bkc->bpk', queries, x).astype(jnp.float32)  # [batch, (q, heads), k]
    weights = self._weights(logits.reshape(b, t, h, t), heads_first=False, train=train)
    values = (jnp.dot(x2d, vo) + vo_bias).reshape(b, t, h, width)
    values = values.transpose(0, 2, 1, 3).reshape(b, h * t, width)  # [batch, (heads, k), width]
    y = jnp.einsum('bqj,bjc->bqc', weights.reshape(b, t, h * t).astype(values.dtype), values)
    return y + bo  # [batch, tokens, width]


class MlpBlock(nn.Module):
  """Dense(w)+GELU+dropout per hidden width, then Dense(width)+dropout (vit_jax init)."""
  mlp_dim: int | Sequence[int]
  activate_output: bool = False
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:  # x: [batch, tokens, width]
    widths = (self.mlp_dim,) if isinstance(self.mlp_dim, int) else tuple(self.mlp_dim)
    dense = lambda features: nn.Dense(
        features, kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.normal(stddev=1e-6),  # vit_jax's bias init
        dtype=self.dtype, param_dtype=self.param_dtype)
    out_width = x.shape[-1]
    for w in widths:
      x = Dropout(self.dropout_rate)(nn.gelu(dense(w)(x)), deterministic=not train)
    x = dense(out_width)(x)
    if self.activate_output:
      x = nn.gelu(x)
    return Dropout(self.dropout_rate)(x, deterministic=not train)


def weight_standardize(w: Array, axis: Sequence[int], eps: float) -> Array:
  """(w - mean) / (std + eps) over `axis` (vit_jax models_resnet's formula)."""
  w = w - jnp.mean(w, axis=axis, keepdims=True)
  return w / (jnp.std(w, axis=axis, keepdims=True) + eps)


class StdConv(nn.Module):
  """Conv without bias whose kernel is weight-standardized per output channel (BiT / vit_jax)."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  eps: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:  # x: [batch, h, w, c]
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    kernel = weight_standardize(kernel.astype(jnp.float32), axis=(0, 1, 2), eps=self.eps)
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), self.strides, 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))  # [batch, h / stride, w / stride, features]


class PatchEmbedding(nn.Module):
  """The strided patch convolution (kernel = stride = patch, VALID), computed as one matmul.

  Why not `nn.Conv`: the result, parameter names (`kernel` [p, p, in, features], `bias`) and
  initialisation are nn.Conv's (tested), but the convolution's windows do not overlap, so they are
  a reshape of the image and the patches go straight into one GEMM, with no convolution
  algorithm for XLA to pick per backend. Measured on 2 CPU cores (benchmarks/train_step.py):
  seed 000's step (224px, patch 32) 85 -> 113 img/s; no change at 72px / patch 6.
  """
  features: int
  patch_size: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:  # x: [batch, H, W, C]
    p = self.patch_size
    n, h, w, c = x.shape
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (p, p, c, self.features),
                        self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    patches = x.astype(self.dtype).reshape(n, h // p, p, w // p, p, c)  # [batch, gh, p, gw, p, C]
    y = jnp.einsum('nhuwvc,uvcd->nhwd', patches, kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)  # [batch, gh, gw, features]


class ResidualUnit(nn.Module):
  """Bottleneck unit (not pre-activation): 1x1 -> 3x3 (stride) -> 1x1 (x4), GroupNorm after each."""
  features: int
  strides: tuple[int, int] = (1, 1)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(StdConv, dtype=self.dtype, param_dtype=self.param_dtype)
    gn = functools.partial(nn.GroupNorm, num_groups=32, dtype=self.dtype,
                           param_dtype=self.param_dtype)
    residual = x
    if x.shape[-1] != 4 * self.features or self.strides != (1, 1):
      residual = conv(4 * self.features, (1, 1), self.strides, name='conv_proj')(x)
      residual = gn(name='gn_proj')(residual)
    y = nn.relu(gn(name='gn1')(conv(self.features, (1, 1), name='conv1')(x)))
    y = nn.relu(gn(name='gn2')(conv(self.features, (3, 3), self.strides, name='conv2')(y)))
    y = gn(name='gn3', scale_init=nn.initializers.zeros)(
        conv(4 * self.features, (1, 1), name='conv3')(y))  # unit starts as identity + relu
    return nn.relu(residual + y)


class ResNetStage(nn.Module):
  """`units` bottleneck units; the first one strides (vit_jax name `block{s}/unit{u}`)."""
  units: int
  features: int
  first_stride: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for u in range(self.units):
      stride = self.first_stride if u == 0 else 1
      x = ResidualUnit(self.features, (stride, stride), dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f'unit{u + 1}')(x)
    return x


def resnet_stem(x: Array, layers: Sequence[int], width: int, dtype: Any, param_dtype: Any) -> Array:
  """Hybrid stem, called inside VisionTransformer's compact __call__ so that `conv_root`,
  `gn_root` and `block{s}` are top-level params, as in vit_jax.

  x: [batch, H, W, 3] -> [batch, H / resnet_stride(layers), ..., 4 * 64 * width * 2^(stages-1)].
  """
  root = 64 * width
  x = StdConv(root, (7, 7), (2, 2), dtype=dtype, param_dtype=param_dtype, name='conv_root')(x)
  x = nn.relu(nn.GroupNorm(num_groups=32, dtype=dtype, param_dtype=param_dtype,
                           name='gn_root')(x))
  x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
  for s, units in enumerate(layers):
    x = ResNetStage(units, root * 2**s, first_stride=1 if s == 0 else 2, dtype=dtype,
                    param_dtype=param_dtype, name=f'block{s + 1}')(x)
  return x


class Encoder1DBlock(nn.Module):
  """One encoder block; LN positions from `norm_placement` (see module docstring)."""
  num_heads: int
  head_dim: int
  mlp_dim: int | Sequence[int]
  norm_placement: str = 'pre'
  mlp_activate_output: bool = False
  layer_norm_epsilon: float = 1e-6
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  attention_impl: str = 'xla'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, drop_path_rate: float | Array = 0.0,
               train: bool = False) -> Array:  # x: [batch, tokens, width]
    # Positional args only: nn.scan / nn.remat address arguments by position.
    placement = parse_norm_placement(self.norm_placement)

    def ln(sub, pos):
      return nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                          param_dtype=self.param_dtype, name=LN_NAMES[(sub, pos)])

    def attention(y):
      y = MultiHeadDotProductAttention(
          num_heads=self.num_heads, head_dim=self.head_dim,
          dropout_rate=self.attention_dropout_rate, implementation=self.attention_impl,
          dtype=self.dtype, param_dtype=self.param_dtype,
          name='MultiHeadDotProductAttention_1')(y, train=train)
      return Dropout(self.dropout_rate)(y, deterministic=not train)

    def mlp(y):
      return MlpBlock(self.mlp_dim, activate_output=self.mlp_activate_output,
                      dropout_rate=self.dropout_rate, dtype=self.dtype,
                      param_dtype=self.param_dtype, name='MlpBlock_3')(y, train=train)

    for sub, f, positions in (('attn', attention, placement.attn), ('mlp', mlp, placement.mlp)):
      y = ln(sub, 'in')(x) if 'in' in positions else x
      y = f(y)
      y = ln(sub, 'out')(y) if 'out' in positions else y
      x = x + DropPath()(y, drop_path_rate, deterministic=not train)
      x = ln(sub, 'res')(x) if 'res' in positions else x
    return x


class _ScannedBlock(Encoder1DBlock):
  """Encoder1DBlock with the (carry, output) signature nn.scan wants."""

  def __call__(self, x, drop_path_rate=0.0, train=False):
    return super().__call__(x, drop_path_rate, train), None


class Encoder(nn.Module):
  """Position embedding, the block stack and the final LN (vit_jax name `Transformer`)."""
  num_layers: int
  num_heads: int
  head_dim: int
  mlp_dim: int | Sequence[int]
  norm_placement: str = 'pre'
  final_norm: bool = True
  posemb: str = 'learn'
  mlp_activate_output: bool = False
  layer_norm_epsilon: float = 1e-6
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth_rate: float = 0.0
  attention_impl: str = 'xla'
  remat: bool = False
  scan: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, grid: tuple[int, int], *, train: bool) -> Array:
    # x: [batch, prefix + gh*gw, width]; prefix tokens (cls) come first.
    if self.posemb == 'learn':
      x = AddPositionEmbs(param_dtype=self.param_dtype, name='posembed_input')(x)
    else:  # sincos2d: fixed, the prefix positions get zeros
      pe = posemb_sincos_2d(*grid, x.shape[-1])
      pe = np.pad(pe, ((0, 0), (x.shape[1] - pe.shape[1], 0), (0, 0)))
      x = x + jnp.asarray(pe, x.dtype)
    x = Dropout(self.dropout_rate)(x, deterministic=not train)

    block_kwargs = dict(
        num_heads=self.num_heads, head_dim=self.head_dim, mlp_dim=self.mlp_dim,
        norm_placement=self.norm_placement, mlp_activate_output=self.mlp_activate_output,
        layer_norm_epsilon=self.layer_norm_epsilon, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, attention_impl=self.attention_impl,
        dtype=self.dtype, param_dtype=self.param_dtype)
    rates = drop_path_rates(self.stochastic_depth_rate, self.num_layers)
    # Per-layer rates are traced under scan; otherwise Python floats (static, 0 => no rng use).
    traced_rates = self.scan and self.stochastic_depth_rate > 0
    block = _ScannedBlock if self.scan else Encoder1DBlock
    if self.remat:
      block = nn.remat(block, prevent_cse=not self.scan,
                       static_argnums=(3,) if traced_rates else (2, 3))  # 0=self, 1=x

    if self.scan:
      x, _ = nn.scan(
          block, variable_axes={'params': 0, 'intermediates': 0},
          split_rngs={'params': True, 'dropout': True},
          in_axes=(0 if traced_rates else nn.broadcast, nn.broadcast),
          length=self.num_layers)(name='encoderblock', **block_kwargs)(
              x, jnp.asarray(rates) if traced_rates else 0.0, train)
    else:
      for i in range(self.num_layers):
        x = block(name=f'encoderblock_{i}', **block_kwargs)(x, float(rates[i]), train)

    if self.final_norm:
      x = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                       param_dtype=self.param_dtype, name='encoder_norm')(x)
    return x  # [batch, tokens, width]


class VisionTransformer(nn.Module):
  """ViT classifier; the fields are the `config.model` fields (see module docstring).

  `dtype` is the compute dtype of every layer (residual stream included; LN statistics and the
  head stay float32), `param_dtype` the storage dtype. GELU is the tanh approximation (vit_jax).
  """
  num_classes: int
  patch_size: int = 16
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int | Sequence[int] = 3072  # hidden width(s) of each MLP sublayer
  mlp_activate_output: bool = False  # GELU on the MLP's last Dense too (seed Keras MLP)
  head_dim: int | None = None  # per-head q/k/v width; None -> hidden_size // num_heads
  classifier: str = 'token'  # one of CLASSIFIERS
  posemb: str = 'learn'  # one of POSEMBS
  norm_placement: str = 'pre'  # preset in NORM_PRESETS or 'attn:...,mlp:...'
  final_norm: bool | None = None  # None -> NormPlacement.final_norm
  layer_norm_epsilon: float = 1e-6
  dropout_rate: float = 0.0  # after posemb, attention output and each MLP Dense
  attention_dropout_rate: float = 0.0  # on the attention weights
  stochastic_depth_rate: float = 0.0  # drop-path rate of the last layer (linear from 0)
  head_hidden_sizes: Sequence[int] = ()  # seed head MLP: Dense+GELU+Dropout per size
  head_dropout_rate: float = 0.0  # on the pooled features and after each head MLP layer
  representation_size: int | None = None  # vit_jax `pre_logits` Dense+tanh
  head_bias_init: float = 0.0
  attention_impl: str = 'xla'  # one of ATTENTION_IMPLS; see MultiHeadDotProductAttention
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  remat: bool = False  # recompute each block in the backward pass (memory for compute)
  scan: bool = False  # one scanned block module: faster compile, stacked param names
  resnet_layers: Sequence[int] = ()  # hybrid: bottleneck units per ResNet stage; () = pure ViT
  resnet_width: int = 1  # hybrid: width multiplier (root conv has 64 * resnet_width channels)

  def __post_init__(self):
    # Config lists (ml_collections keeps them) -> tuples, so the module stays hashable.
    for field in ('mlp_dim', 'head_hidden_sizes', 'resnet_layers'):
      if isinstance(getattr(self, field), list):
        object.__setattr__(self, field, tuple(getattr(self, field)))
    super().__post_init__()

  def _check(self) -> NormPlacement:
    def one_of(field, valid):
      if getattr(self, field) not in valid:
        raise ValueError(f'{field}={getattr(self, field)!r} is not one of {valid}')
    one_of('classifier', CLASSIFIERS)
    one_of('posemb', POSEMBS)
    one_of('attention_impl', ATTENTION_IMPLS)
    if self.head_dim is None and self.hidden_size % self.num_heads:
      raise ValueError(f'hidden_size={self.hidden_size} is not divisible by '
                       f'num_heads={self.num_heads}; set head_dim explicitly')
    if any(not isinstance(n, int) or n <= 0 for n in self.resnet_layers):
      raise ValueError(f'resnet_layers={self.resnet_layers!r} must hold positive unit counts')
    if self.resnet_layers and (not isinstance(self.resnet_width, int) or self.resnet_width <= 0):
      raise ValueError(f'resnet_width={self.resnet_width!r} must be a positive integer')
    return parse_norm_placement(self.norm_placement)

  @nn.compact
  def __call__(self, images: Array, train: bool = False) -> Array:
    """images: [batch, H, W, 3] float -> logits [batch, num_classes] float32."""
    placement = self._check()
    dtype, param_dtype = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
    x = images.astype(dtype)
    if self.resnet_layers:  # hybrid: patches of the ResNet feature map
      x = resnet_stem(x, self.resnet_layers, self.resnet_width, dtype, param_dtype)
    _, h, w, _ = x.shape
    if h % self.patch_size or w % self.patch_size:
      what = (f'the ResNet feature map {h}x{w} (image {images.shape[1]}x{images.shape[2]} / '
              f'{resnet_stride(self.resnet_layers)})' if self.resnet_layers else f'image size {h}x{w}')
      raise ValueError(f'{what} is not divisible by patch_size={self.patch_size}')

    x = PatchEmbedding(self.hidden_size, self.patch_size, dtype=dtype, param_dtype=param_dtype,
                       name='embedding')(x)
    n, gh, gw, c = x.shape  # [batch, gh, gw, hidden]
    x = x.reshape(n, gh * gw, c)  # [batch, tokens, hidden]
    if self.classifier == 'token':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, c), param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (n, 1, c)), x], axis=1)

    x = Encoder(
        num_layers=self.num_layers, num_heads=self.num_heads,
        head_dim=self.head_dim or self.hidden_size // self.num_heads, mlp_dim=self.mlp_dim,
        norm_placement=self.norm_placement,
        final_norm=placement.final_norm if self.final_norm is None else self.final_norm,
        posemb=self.posemb, mlp_activate_output=self.mlp_activate_output,
        layer_norm_epsilon=self.layer_norm_epsilon, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate,
        stochastic_depth_rate=self.stochastic_depth_rate, attention_impl=self.attention_impl,
        remat=self.remat, scan=self.scan, dtype=dtype, param_dtype=param_dtype,
        name='Transformer')(x, (gh, gw), train=train)  # [batch, tokens, hidden]

    if self.classifier == 'token':
      x = x[:, 0]  # [batch, hidden]
    elif self.classifier == 'gap':
      x = jnp.mean(x, axis=1)  # [batch, hidden]
    else:  # flatten, as the seed Keras head
      x = x.reshape(n, -1)  # [batch, tokens * hidden]
    self.sow('intermediates', 'pooled', x)

    if self.representation_size is not None:
      x = jnp.tanh(nn.Dense(self.representation_size, dtype=dtype, param_dtype=param_dtype,
                            name='pre_logits')(x))
    # Seed head: Dropout on the pooled features, then [Dense+GELU+Dropout] per hidden size.
    x = Dropout(self.head_dropout_rate)(x, deterministic=not train)
    for j, width in enumerate(self.head_hidden_sizes):
      x = nn.gelu(nn.Dense(width, kernel_init=nn.initializers.xavier_uniform(), dtype=dtype,
                           param_dtype=param_dtype, name=f'head_mlp_{j}')(x))
      x = Dropout(self.head_dropout_rate)(x, deterministic=not train)
    self.sow('intermediates', 'head_input', x)

    logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.constant(self.head_bias_init),
                      dtype=jnp.float32, param_dtype=param_dtype, name='head')(x)
    return logits.astype(jnp.float32)  # [batch, num_classes]


# ----------------------------------------------------------------------------- factory
_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(VisionTransformer)
                      if f.name not in ('parent', 'name', 'num_classes'))


def parse_variant(variant: str) -> dict[str, Any]:
  """Model-zoo name -> the `config.model` fields it sets.

  'B' sets hidden_size, num_layers, num_heads, mlp_dim (ViT paper / AugReg sizes, `VARIANTS`);
  'B/16' also patch_size=16 and resnet_layers=() (a pure ViT); hybrids 'R50+B/16', 'R50+L/32',
  'R26+S/32' set resnet_layers (`RESNET_VARIANTS`), resnet_width=1 and patch_size=1 (on the
  feature map). The official file names' spelling is accepted too: 'ViT-B_16', 'R50+ViT-B_16',
  'R26_S_32' (AugReg).
  """
  text = str(variant).strip()
  m = re.fullmatch(r'(?:(R\d+)[+_])?(?:ViT-)?([A-Za-z]+)(?:[/_](\d+))?', text)
  if not m or m.group(2) not in VARIANTS:
    hybrids = ', '.join(f'{r}+<size>/{p}' for r, p in RESNET_VARIANTS)
    raise ValueError(f'Unknown model variant {variant!r}; valid: {", ".join(VARIANTS)}, '
                     f'optionally with "/<patch>" (e.g. "B/16"); hybrids {hybrids} '
                     '(e.g. "R50+B/16").')
  resnet, size, patch = m.groups()
  fields = dict(zip(('hidden_size', 'num_layers', 'num_heads', 'mlp_dim'), VARIANTS[size]))
  if resnet:
    if not patch or (resnet, int(patch)) not in RESNET_VARIANTS:
      raise ValueError(f'Unknown hybrid variant {variant!r}; valid hybrids: ' +
                       ', '.join(f'{r}+<size>/{p}' for r, p in RESNET_VARIANTS) +
                       f' with <size> one of {", ".join(VARIANTS)} (e.g. "R50+B/16").')
    fields.update(resnet_layers=RESNET_VARIANTS[(resnet, int(patch))], resnet_width=1,
                  patch_size=1)
  elif patch:
    fields.update(patch_size=int(patch), resnet_layers=())
  return fields


def create_model(model_config: Mapping[str, Any], num_classes: int) -> VisionTransformer:
  """Builds the model from `config.model`.

  An optional `variant` key (see `parse_variant`: 'Ti', 'S', 'B', 'L', 'H', optionally with
  '/patch', e.g. 'B/16', or a hybrid like 'R50+B/16') sets the sizes it names and OVERRIDES those
  fields in `model_config`; leave `variant` empty to use the fields as given.
  """
  kwargs = dict(model_config)
  variant = kwargs.pop('variant', None)
  if variant:
    kwargs.update(parse_variant(variant))
  unknown = sorted(set(kwargs) - set(_MODEL_FIELDS))
  if unknown:
    raise ValueError(f'Unknown model config fields {unknown}; valid: {", ".join(_MODEL_FIELDS)}')
  return VisionTransformer(num_classes=num_classes, **kwargs)
