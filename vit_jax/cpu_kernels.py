"""XLA:CPU kernels: the same functions as the reference ViT (vit_jax/models.py), faster on CPU.

Each piece was measured on 2 CPU cores (benchmarks/train_step.py; numbers in the docstrings and
docs/benchmarks.md) and none on a GPU or TPU, so `config.model.kernels` turns them on only
where they have been measured: 'auto' means these on the CPU backend and the reference elsewhere.
Every kernel keeps the reference's parameter names, shapes and initialisation (tested), so a
checkpoint does not know which kernels trained it. tests/test_cpu_kernels.py checks each one
against the reference: bit for bit where it computes the same bits (`random_bits`), to float
tolerance and against autodiff elsewhere.

    random_bits                     jax.random.bits for threefry keys, unrolled (one fused loop)
    Dropout                         nn.Dropout drawing 16 bits per element instead of 32
    softmax_dropout                 softmax * mask with a backward pass that never reads the mask
    MultiHeadDotProductAttention    q/k/v as plain 2-D matmuls; implementation='folded' folds
                                    Wq Wk^T and Wv Wo (fewer FLOPs when head_dim >= width)
    PatchEmbedding                  the strided patch conv as a reshape and one GEMM
"""

from __future__ import annotations

import os
import sys

if __name__ == '__main__':  # run as a file: vit_jax/ on sys.path would shadow the stdlib `inspect`
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_DROPOUT_LEVELS = 2**16  # resolution of Dropout's keep probability (16 random bits)


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


class _DenseGeneralParams(nn.Module):
  """The kernel [*in_shape, *features] and bias [*features] of an nn.DenseGeneral, not applied.

  Same names, shapes and initialisation as the nn.DenseGeneral it stands for (kernel_init sees
  the flattened [prod(in_shape), prod(features)] shape, bias starts at zero), so checkpoints and
  init are unchanged; the caller decides how the product is laid out.
  """
  in_shape: tuple[int, ...]
  features: tuple[int, ...]
  param_dtype: Any = jnp.float32
  init_gain: float = 1.0  # multiplies the initial kernel (DeepNorm's beta, see norms.py)

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:
    flat = (math.prod(self.in_shape), math.prod(self.features))
    init = nn.initializers.xavier_uniform()
    kernel = self.param('kernel', lambda rng, shape, dtype: (
        self.init_gain * init(rng, flat, dtype)).reshape(shape),
                        self.in_shape + self.features, self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, self.features, self.param_dtype)
    return kernel, bias


class MultiHeadDotProductAttention(nn.Module):
  """Self-attention with the reference's parameters (nn.MultiHeadDotProductAttention's names,
  shapes and init: query/key/value/out), laid out for XLA:CPU; sows weights only when asked.

  Layouts measured on XLA:CPU (see docs/benchmarks.md): q, k and v are each one
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
  init_gain: float = 1.0  # on the initial value and output kernels (norms.NormSpec.init_gain)
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
    gain = self.init_gain if name in ('value', 'out') else 1.0
    kernel, bias = _DenseGeneralParams(in_shape, features, self.param_dtype, gain, name=name)()
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


if __name__ == '__main__':
  key = jax.random.key(0)
  same = bool((random_bits(key, 1000) == jax.random.bits(key, (1000,), jnp.uint32)).all())
  print(f'random_bits == jax.random.bits: {same}')
