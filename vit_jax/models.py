"""Vision Transformer whose LayerNorm placement is a config value: the readable reference.

The study asks where LayerNorms should sit in a ViT encoder block, so the block is written once
and the norm positions are data (`norm_placement`, parsed by vit_jax/norms.py), not separate
model classes. Everything else follows google-research/vision_transformer
(`vit_jax/models_vit.py`) and big_vision's `models/vit.py`, in plain Flax (nn.Conv patches,
nn.MultiHeadDotProductAttention, nn.Dropout), so that official checkpoints load by name.

Per sublayer f (attention or MLP, including its own dropout), with drop-path on the branch:

    y = LN_in(x) if 'in' else x
    y = f(y)
    y = LN_out(y) if 'out' else y
    x = x + drop_path(y)
    x = LN_res(x) if 'res' else x

Kernels (`kernels`): 'reference' is the plain Flax written here; 'cpu' swaps in the XLA:CPU
kernels of vit_jax/cpu_kernels.py (16-bit dropout, re-laid-out attention, patch GEMM), measured
faster on CPU only; 'auto' (the default) picks 'cpu' on the CPU backend and 'reference'
elsewhere (`resolve_kernels`). Both build the same parameters with the same initial values, so
checkpoints are interchangeable; they differ in float rounding and in which dropout bits are
drawn. `attention_impl='folded'` is itself a CPU kernel (cpu_kernels.py); it stays selectable
under either `kernels` value, as an explicit request: the attention is then the folded one (with
its CPU dropout) and the rest of the model follows `kernels`.

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

Hybrid (resnet_layers non-empty; vit_jax models_resnet names, at the top level like vit_jax; see
vit_jax/resnet.py): conv_root, gn_root, block{s}/unit{u}/..., then `embedding` patchifies the
FEATURE MAP: patch_size counts feature-map pixels (R50+B/16: 1).

With `scan=True` the blocks are one scanned module: `Transformer/encoderblock/...` (no `_{i}`),
every leaf gaining a leading [num_layers] axis. Convert with `stack_block_params` /
`unstack_block_params`.

Intermediates (no cost unless the 'intermediates' collection is mutable):
`.../MultiHeadDotProductAttention_1/attention_weights` [batch, heads, tokens, tokens] per layer,
`pooled` (encoder output after pooling) and `head_input` (the features `head` sees; not named
`pre_logits`, which is the vit_jax Dense's name). Under scan the weights gain a leading layer axis.
"""

from __future__ import annotations

import os
import sys

if __name__ == '__main__':  # run as a file: vit_jax/ on sys.path would shadow the stdlib `inspect`
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import cpu_kernels
from vit_jax import hardware
from vit_jax import norms
from vit_jax import resnet

Array = jax.Array

# ----------------------------------------------------------------------------- names
CLASSIFIERS = ('token', 'gap', 'flatten')
POSEMBS = ('learn', 'sincos2d')
ATTENTION_IMPLS = ('xla', 'cudnn', 'folded')
KERNELS = ('auto', 'reference', 'cpu')

# name -> (hidden_size, num_layers, num_heads, mlp_dim); ViT paper / AugReg sizes.
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    'Ti': (192, 12, 3, 768),
    'S': (384, 12, 6, 1536),
    'B': (768, 12, 12, 3072),
    'L': (1024, 24, 16, 4096),
    'H': (1280, 32, 16, 5120),
}

SINCOS_TEMPERATURE = 10_000.0


def resolve_kernels(kernels: str) -> str:
  """'auto' -> 'cpu' on the XLA:CPU backend (where the kernels were measured), else 'reference'."""
  if kernels not in KERNELS:
    raise ValueError(f'kernels={kernels!r} is not one of {KERNELS}')
  return hardware.kernels(kernels, jax.default_backend())


def _dropout(kernels: str, rate: float) -> nn.Module:
  """nn.Dropout, or its 16-bit CPU kernel; both auto-name as `Dropout_{i}` (same rng stream)."""
  return cpu_kernels.Dropout(rate) if kernels == 'cpu' else nn.Dropout(rate)


def _cudnn_or_xla_attention(query, key, value, mask=None, dropout_rng=None, dropout_rate=0.0,
                            broadcast_dropout=True, deterministic=False, dtype=None,
                            precision=None, force_fp32_for_softmax=False, module=None):
  """nn.MultiHeadDotProductAttention's `attention_fn` for attention_impl='cudnn'.

  The fused kernel neither returns the weights nor drops them out, so sowing (`module`) or
  attention dropout take nn.dot_product_attention, as with attention_impl='xla'.
  """
  if module is None and mask is None and (deterministic or dropout_rate == 0):
    return jax.nn.dot_product_attention(query, key, value, implementation='cudnn')
  return nn.dot_product_attention(
      query, key, value, mask=mask, dropout_rng=dropout_rng, dropout_rate=dropout_rate,
      broadcast_dropout=broadcast_dropout, deterministic=deterministic, dtype=dtype,
      precision=precision, force_fp32_for_softmax=force_fp32_for_softmax, module=module)


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


class MlpBlock(nn.Module):
  """Dense(w)+GELU+dropout per hidden width, then Dense(width)+dropout (vit_jax init)."""
  mlp_dim: int | Sequence[int]
  activate_output: bool = False
  dropout_rate: float = 0.0
  kernels: str = 'reference'  # 'reference' | 'cpu' (already resolved, see resolve_kernels)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:  # x: [batch, tokens, width]
    widths = (self.mlp_dim,) if isinstance(self.mlp_dim, int) else tuple(self.mlp_dim)
    dense = lambda features: nn.Dense(
        features, kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.normal(stddev=1e-6),  # vit_jax's bias init
        dtype=self.dtype, param_dtype=self.param_dtype)
    dropout = lambda y: _dropout(self.kernels, self.dropout_rate)(y, deterministic=not train)
    out_width = x.shape[-1]
    for w in widths:
      x = dropout(nn.gelu(dense(w)(x)))  # [batch, tokens, w]
    x = dense(out_width)(x)
    if self.activate_output:
      x = nn.gelu(x)
    return dropout(x)  # [batch, tokens, width]


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
  kernels: str = 'reference'  # 'reference' | 'cpu' (already resolved, see resolve_kernels)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, drop_path_rate: float | Array = 0.0,
               train: bool = False) -> Array:  # x: [batch, tokens, width]
    # Positional args only: nn.scan / nn.remat address arguments by position.
    placement = norms.parse_norm_placement(self.norm_placement)

    def ln(sub, pos):
      return nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                          param_dtype=self.param_dtype, name=norms.LN_NAMES[(sub, pos)])

    def attention(y):
      y = self._attention(y, train)
      return _dropout(self.kernels, self.dropout_rate)(y, deterministic=not train)

    def mlp(y):
      return MlpBlock(self.mlp_dim, activate_output=self.mlp_activate_output,
                      dropout_rate=self.dropout_rate, kernels=self.kernels, dtype=self.dtype,
                      param_dtype=self.param_dtype, name='MlpBlock_3')(y, train=train)

    for sub, f, positions in (('attn', attention, placement.attn), ('mlp', mlp, placement.mlp)):
      y = ln(sub, 'in')(x) if 'in' in positions else x
      y = f(y)
      y = ln(sub, 'out')(y) if 'out' in positions else y
      x = x + DropPath()(y, drop_path_rate, deterministic=not train)
      x = ln(sub, 'res')(x) if 'res' in positions else x
    return x

  def _attention(self, y: Array, train: bool) -> Array:  # y: [batch, tokens, width]
    """Self-attention named MultiHeadDotProductAttention_1 (vit_jax), the same parameters from
    either module; 'folded' is only in the CPU one (see the module docstring)."""
    name = 'MultiHeadDotProductAttention_1'
    if self.kernels == 'cpu' or self.attention_impl == 'folded':
      return cpu_kernels.MultiHeadDotProductAttention(
          num_heads=self.num_heads, head_dim=self.head_dim,
          dropout_rate=self.attention_dropout_rate, implementation=self.attention_impl,
          dtype=self.dtype, param_dtype=self.param_dtype, name=name)(y, train=train)
    return nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=self.num_heads * self.head_dim,
        kernel_init=nn.initializers.xavier_uniform(), broadcast_dropout=False,
        dropout_rate=self.attention_dropout_rate, force_fp32_for_softmax=True,
        attention_fn=(_cudnn_or_xla_attention if self.attention_impl == 'cudnn'
                      else nn.dot_product_attention),
        dtype=self.dtype, param_dtype=self.param_dtype, name=name)(
            y, deterministic=not train,
            sow_weights=self.is_mutable_collection('intermediates'))


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
  kernels: str = 'reference'  # 'reference' | 'cpu' (already resolved, see resolve_kernels)
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
    x = _dropout(self.kernels, self.dropout_rate)(x, deterministic=not train)

    block_kwargs = dict(
        num_heads=self.num_heads, head_dim=self.head_dim, mlp_dim=self.mlp_dim,
        norm_placement=self.norm_placement, mlp_activate_output=self.mlp_activate_output,
        layer_norm_epsilon=self.layer_norm_epsilon, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, attention_impl=self.attention_impl,
        kernels=self.kernels, dtype=self.dtype, param_dtype=self.param_dtype)
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
  norm_placement: str = 'pre'  # preset in norms.NORM_PRESETS or 'attn:...,mlp:...'
  final_norm: bool | None = None  # None -> norms.NormPlacement.final_norm
  layer_norm_epsilon: float = 1e-6
  dropout_rate: float = 0.0  # after posemb, attention output and each MLP Dense
  attention_dropout_rate: float = 0.0  # on the attention weights
  stochastic_depth_rate: float = 0.0  # drop-path rate of the last layer (linear from 0)
  head_hidden_sizes: Sequence[int] = ()  # seed head MLP: Dense+GELU+Dropout per size
  head_dropout_rate: float = 0.0  # on the pooled features and after each head MLP layer
  representation_size: int | None = None  # vit_jax `pre_logits` Dense+tanh
  head_bias_init: float = 0.0
  attention_impl: str = 'xla'  # one of ATTENTION_IMPLS; 'folded' is a CPU kernel (see above)
  kernels: str = 'auto'  # one of KERNELS; resolved by resolve_kernels when called
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

  def _check(self) -> norms.NormPlacement:
    def one_of(field, valid):
      if getattr(self, field) not in valid:
        raise ValueError(f'{field}={getattr(self, field)!r} is not one of {valid}')
    one_of('classifier', CLASSIFIERS)
    one_of('posemb', POSEMBS)
    one_of('attention_impl', ATTENTION_IMPLS)
    one_of('kernels', KERNELS)
    if self.head_dim is None and self.hidden_size % self.num_heads:
      raise ValueError(f'hidden_size={self.hidden_size} is not divisible by '
                       f'num_heads={self.num_heads}; set head_dim explicitly')
    if any(not isinstance(n, int) or n <= 0 for n in self.resnet_layers):
      raise ValueError(f'resnet_layers={self.resnet_layers!r} must hold positive unit counts')
    if self.resnet_layers and (not isinstance(self.resnet_width, int) or self.resnet_width <= 0):
      raise ValueError(f'resnet_width={self.resnet_width!r} must be a positive integer')
    return norms.parse_norm_placement(self.norm_placement)

  @nn.compact
  def __call__(self, images: Array, train: bool = False) -> Array:
    """images: [batch, H, W, 3] float -> logits [batch, num_classes] float32."""
    placement = self._check()
    kernels = resolve_kernels(self.kernels)
    dtype, param_dtype = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
    x = images.astype(dtype)
    if self.resnet_layers:  # hybrid: patches of the ResNet feature map
      x = resnet.resnet_stem(x, self.resnet_layers, self.resnet_width, dtype, param_dtype)
    _, h, w, _ = x.shape
    if h % self.patch_size or w % self.patch_size:
      what = (f'the ResNet feature map {h}x{w} (image {images.shape[1]}x{images.shape[2]} / '
              f'{resnet.resnet_stride(self.resnet_layers)})' if self.resnet_layers else f'image size {h}x{w}')
      raise ValueError(f'{what} is not divisible by patch_size={self.patch_size}')

    p = self.patch_size
    if kernels == 'cpu':
      embed = cpu_kernels.PatchEmbedding(self.hidden_size, p, dtype=dtype, param_dtype=param_dtype,
                                         name='embedding')
    else:
      embed = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding='VALID', dtype=dtype,
                      param_dtype=param_dtype, name='embedding')
    x = embed(x)
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
        kernels=kernels, remat=self.remat, scan=self.scan, dtype=dtype, param_dtype=param_dtype,
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
    head_dropout = lambda y: _dropout(kernels, self.head_dropout_rate)(y, deterministic=not train)
    x = head_dropout(x)
    for j, width in enumerate(self.head_hidden_sizes):
      x = nn.gelu(nn.Dense(width, kernel_init=nn.initializers.xavier_uniform(), dtype=dtype,
                           param_dtype=param_dtype, name=f'head_mlp_{j}')(x))
      x = head_dropout(x)
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
  'R26+S/32' set resnet_layers (`resnet.RESNET_VARIANTS`), resnet_width=1 and patch_size=1 (on the
  feature map). The official file names' spelling is accepted too: 'ViT-B_16', 'R50+ViT-B_16',
  'R26_S_32' (AugReg).
  """
  text = str(variant).strip()
  m = re.fullmatch(r'(?:(R\d+)[+_])?(?:ViT-)?([A-Za-z]+)(?:[/_](\d+))?', text)
  if not m or m.group(2) not in VARIANTS:
    hybrids = ', '.join(f'{r}+<size>/{p}' for r, p in resnet.RESNET_VARIANTS)
    raise ValueError(f'Unknown model variant {variant!r}; valid: {", ".join(VARIANTS)}, '
                     f'optionally with "/<patch>" (e.g. "B/16"); hybrids {hybrids} '
                     '(e.g. "R50+B/16").')
  stem, size, patch = m.groups()  # e.g. ('R50', 'B', '16')
  fields = dict(zip(('hidden_size', 'num_layers', 'num_heads', 'mlp_dim'), VARIANTS[size]))
  if stem:
    if not patch or (stem, int(patch)) not in resnet.RESNET_VARIANTS:
      raise ValueError(f'Unknown hybrid variant {variant!r}; valid hybrids: ' +
                       ', '.join(f'{r}+<size>/{p}' for r, p in resnet.RESNET_VARIANTS) +
                       f' with <size> one of {", ".join(VARIANTS)} (e.g. "R50+B/16").')
    fields.update(resnet_layers=resnet.RESNET_VARIANTS[(stem, int(patch))], resnet_width=1,
                  patch_size=1)
  elif patch:
    fields.update(patch_size=int(patch), resnet_layers=())
  return fields


def create_model(model_config: Mapping[str, Any], num_classes: int) -> VisionTransformer:
  """Builds the model from `config.model`.

  An optional `variant` key (see `parse_variant`: 'Ti', 'S', 'B', 'L', 'H', optionally with
  '/patch', e.g. 'B/16', or a hybrid like 'R50+B/16') sets the sizes it names and OVERRIDES those
  fields in `model_config`; leave `variant` empty to use the fields as given. `kernels='auto'`
  stays in the module and is resolved when it is called (`resolve_kernels`).
  """
  kwargs = dict(model_config)
  variant = kwargs.pop('variant', None)
  if variant:
    kwargs.update(parse_variant(variant))
  kwargs.update(hardware.model_settings(kwargs, jax.default_backend()))  # fields left at 'auto'
  unknown = sorted(set(kwargs) - set(_MODEL_FIELDS))
  if unknown:
    raise ValueError(f'Unknown model config fields {unknown}; valid: {", ".join(_MODEL_FIELDS)}')
  return VisionTransformer(num_classes=num_classes, **kwargs)
