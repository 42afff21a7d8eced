"""Vision Transformer whose normalization is a config value: the readable reference.

The study asks where the norms should sit in a ViT encoder block, so the block is written once
and the normalization is data (`norm_placement` and `norm_type`, parsed by vit_jax/norms.py into
a `norms.NormSpec`), not separate model classes. Everything else follows
google-research/vision_transformer (`vit_jax/models_vit.py`) and big_vision's `models/vit.py`, in
plain Flax (nn.Conv patches, nn.MultiHeadDotProductAttention, nn.Dropout), so that official
checkpoints load by name.

Per sublayer f (attention or MLP, including its own dropout) of layer l (1-based), N a norm of
the site's type, with drop-path on the branch (norms.py names every option):

    y = N_in(x) * (1/sqrt(l) if ln_scaling else 1)    if 'in'
    y = f(y)                     (attention: N_qk on q and k, N_mid before the output projection;
                                  MLP: N_mid after the activation; see vit_jax/attention.py)
    y = N_out(y)                                       if 'out'
    y = gamma * y                                      if layerscale
    d = d + drop_path(y)                               if residual=dual (ResiDual)
    x = alpha * x + drop_path(y)         (+ the layer's input after the MLP if residual=b2t)
    x = N_res(x)                                       if 'res'

Kernels (`kernels`): 'reference' is the plain Flax written here; 'cpu' swaps in the XLA:CPU
kernels of vit_jax/cpu_kernels.py (16-bit dropout, re-laid-out attention, patch GEMM), measured
faster on CPU only; 'auto' (the default) picks 'cpu' on the CPU backend and 'reference'
elsewhere (`resolve_kernels`). Both build the same parameters with the same initial values, so
checkpoints are interchangeable; they differ in float rounding and in which dropout bits are
drawn. `attention_impl='folded'` is itself a CPU kernel (cpu_kernels.py); it stays selectable
under either `kernels` value, as an explicit request: the attention is then the folded one (with
its CPU dropout) and the rest of the model follows `kernels`.

Parameter names (vit_jax names where a counterpart exists; a norm's name is its site's,
whatever its type: LayerNorm_0 may hold an RMSNorm's `scale` or a DyT's `alpha, scale, bias`):

    embedding/{kernel,bias}                         patch embedding Conv, kernel [p, p, 3, hidden]
    patch_norm_in, patch_norm_out                   patch:in / patch:out (Dual PatchNorm)
    cls                                             [1, 1, hidden]          (classifier='token')
    Transformer/posembed_input/pos_embedding        [1, tokens, hidden]     (posemb='learn')
    Transformer/pre_norm                            encoder:pre
    Transformer/encoderblock_{i}/
        LayerNorm_0, LayerNorm_attn_out, LayerNorm_attn_res     attention in / out / res
        MultiHeadDotProductAttention_1/{query,key,value}/kernel  [hidden, heads, head_dim]
        MultiHeadDotProductAttention_1/out/kernel                [heads, head_dim, hidden]
        MultiHeadDotProductAttention_1/{query_norm,key_norm}     attn:qk, over head_dim
        MultiHeadDotProductAttention_1/mid_norm                  attn:mid, over heads*head_dim
        MultiHeadDotProductAttention_1/head_scale                [heads] (head_scale=on)
        LayerNorm_2, LayerNorm_mlp_out, LayerNorm_mlp_res        MLP in / out / res
        MlpBlock_3/Dense_{0..k}                     k = number of hidden widths
        MlpBlock_3/LayerNorm_mid                    mlp:mid
        layerscale_attn, layerscale_mlp             [hidden] (layerscale)
    Transformer/encoder_norm_dual                   the norm on ResiDual's second stream
    Transformer/encoder_norm                        encoder:final
    fc_norm                                         encoder:pool (after pooling, as timm)
    pre_logits                                      Dense+tanh  (representation_size set)
    head_mlp_{j}                                    optional head MLP (head_hidden_sizes)
    head                                            classifier Dense, zeros kernel init

Hybrid (resnet_layers non-empty; vit_jax models_resnet names, at the top level like vit_jax; see
vit_jax/resnet.py): conv_root, gn_root, block{s}/unit{u}/..., then `embedding` patchifies the
FEATURE MAP: patch_size counts feature-map pixels (R50+B/16: 1).

With `scan=True` the blocks are one scanned module: `Transformer/encoderblock/...` (no `_{i}`),
every leaf gaining a leading [num_layers] axis; a spec that changes over depth (Mix-LN, layer
ranges) scans each run of identical layers a..b as `encoderblock_{a}-{b}` (`scan_names`). Convert
with `stack_block_params` / `unstack_block_params`.

Intermediates (no cost unless the 'intermediates' collection is mutable):
`.../MultiHeadDotProductAttention_1/attention_weights` [batch, heads, tokens, tokens] per layer,
`pooled` (encoder output after pooling) and `head_input` (the features `head` sees; not named
`pre_logits`, which is the vit_jax Dense's name). Under scan the weights gain a leading layer axis.
The 'diagnostics' collection (vit_jax/diagnostics.py) holds per block `attn_branch_rms`,
`mlp_branch_rms`, `stream_rms` and, per head, `.../attn_entropy` and `.../attn_logit_max`.
"""

from __future__ import annotations

import os
import sys

if __name__ == '__main__':  # run as a file: vit_jax/ on sys.path would shadow the stdlib `inspect`
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import attention
from vit_jax import cpu_kernels
from vit_jax import hardware
from vit_jax import layers
from vit_jax import norms
from vit_jax import resnet
from vit_jax import swin
from vit_jax import variants

Array = jax.Array

# ----------------------------------------------------------------------------- names
CLASSIFIERS = ('token', 'gap', 'flatten')
POSEMBS = ('learn', 'sincos2d')
ATTENTION_IMPLS = ('xla', 'cudnn', 'folded')
KERNELS = ('auto', 'reference', 'cpu')


def resolve_kernels(kernels: str) -> str:
  """'auto' -> 'cpu' on the XLA:CPU backend (where the kernels were measured), else 'reference'."""
  if kernels not in KERNELS:
    raise ValueError(f'kernels={kernels!r} is not one of {KERNELS}')
  return hardware.kernels(kernels, jax.default_backend())


# ----------------------------------------------------------------------------- helpers
def scan_names(segments: Sequence[tuple[int, int]]) -> list[str]:
  """The scanned block module names: `encoderblock` for one stack, `encoderblock_{a}-{b}` (layers
  a..b) per run of identical blocks when the norm spec changes over depth (e.g. Mix-LN)."""
  if len(segments) == 1:
    return ['encoderblock']
  return [f'encoderblock_{a}-{b - 1}' for a, b in segments]


def _segments(depth: int | Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
  return [(0, depth)] if isinstance(depth, int) else [tuple(s) for s in depth]


def stack_block_params(params: Mapping, depth: int | Sequence[tuple[int, int]]) -> dict:
  """Converts unscanned params (encoderblock_{i}) to the scan=True layout. `depth`: the layer count,
  or the (first, end) layer segments of `norms.NormSpec.segments()`."""
  params = dict(params)
  tr = dict(params['Transformer'])
  segments = _segments(depth)
  for name, (a, b) in zip(scan_names(segments), segments):
    blocks = [tr.pop(f'encoderblock_{i}') for i in range(a, b)]
    tr[name] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
  params['Transformer'] = tr
  return params


def unstack_block_params(params: Mapping, depth: int | Sequence[tuple[int, int]]) -> dict:
  """Inverse of `stack_block_params`."""
  params = dict(params)
  tr = dict(params['Transformer'])
  segments = _segments(depth)
  for name, (a, b) in zip(scan_names(segments), segments):
    stacked = tr.pop(name)
    for i in range(a, b):
      tr[f'encoderblock_{i}'] = jax.tree.map(lambda x, i=i - a: x[i], stacked)
  params['Transformer'] = tr
  return params


# ----------------------------------------------------------------------------- modules
class Encoder1DBlock(nn.Module):
  """One encoder block: its norms are `block`'s positions, with the types and residual scheme
  of `norm_spec` (see the module docstring and vit_jax/norms.py)."""
  num_heads: int
  head_dim: int
  mlp_dim: int | Sequence[int]
  norm_spec: norms.NormSpec
  block: norms.BlockNorms
  mlp_activate_output: bool = False
  layer_norm_epsilon: float = 1e-6
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  attention_impl: str = 'xla'
  kernels: str = 'reference'  # 'reference' | 'cpu' (already resolved, see resolve_kernels)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array | tuple[Array, Array], drop_path_rate: float | Array = 0.0,
               in_scale: float | Array = 1.0, train: bool = False):
    # x: [batch, tokens, width], or (x, d) with residual=dual. Positional args only: nn.scan /
    # nn.remat address arguments by position. in_scale: 1/sqrt(layer) with ln_scaling.
    spec, block = self.norm_spec, self.block
    x, d = x if spec.residual == 'dual' else (x, None)
    # vit_jax/diagnostics.py's pass (init makes every collection but 'intermediates' mutable)
    diagnose = self.is_mutable_collection(attention.DIAGNOSTICS) and not self.is_initializing()

    norm = functools.partial(layers.site_norm, spec, epsilon=self.layer_norm_epsilon,
                             dtype=self.dtype, param_dtype=self.param_dtype)

    def attn(y):
      y = attention.attend(
          y, spec=spec, block=block, num_heads=self.num_heads, head_dim=self.head_dim,
          dropout_rate=self.attention_dropout_rate, impl=self.attention_impl,
          kernels=self.kernels, epsilon=self.layer_norm_epsilon, dtype=self.dtype,
          param_dtype=self.param_dtype, sow=self.is_mutable_collection('intermediates'),
          train=train, diagnose=diagnose)
      return layers.dropout(self.kernels, self.dropout_rate)(y, deterministic=not train)

    def mlp(y):
      return layers.MlpBlock(self.mlp_dim, activate_output=self.mlp_activate_output,
                      dropout_rate=self.dropout_rate,
                      mid_norm=spec.type_of('mlp_mid') if 'mid' in block.mlp else None,
                      init_gain=spec.init_gain, epsilon=self.layer_norm_epsilon,
                      kernels=self.kernels, dtype=self.dtype, param_dtype=self.param_dtype,
                      name='MlpBlock_3')(y, train=train)

    block_input = x
    for sub, f in (('attn', attn), ('mlp', mlp)):
      positions = getattr(block, sub)
      y = x
      if 'in' in positions:
        y = norm(f'{sub}_in')(y)
        if spec.ln_scaling:
          y = y * jnp.asarray(in_scale, y.dtype)
      y = f(y)
      if 'out' in positions:
        y = norm(f'{sub}_out')(y)
      if spec.layerscale:
        gamma = self.param(f'layerscale_{sub}', nn.initializers.constant(spec.layerscale),
                           (y.shape[-1],), self.param_dtype)
        y = y * gamma.astype(y.dtype)
      y = layers.DropPath()(y, drop_path_rate, deterministic=not train)
      if diagnose:  # what the sublayer adds to the stream
        self.sow(attention.DIAGNOSTICS, f'{sub}_branch_rms', layers.rms(y))
      if d is not None:
        d = d + y
      x = (spec.alpha * x if spec.alpha != 1 else x) + y
      if sub == 'mlp' and spec.residual == 'b2t':
        x = x + block_input
      if 'res' in positions:
        x = norm(f'{sub}_res')(x)
    if diagnose:
      self.sow(attention.DIAGNOSTICS, 'stream_rms', layers.rms(x))  # the residual stream it leaves
    return x if d is None else (x, d)


class _ScannedBlock(Encoder1DBlock):
  """Encoder1DBlock with the (carry, output) signature nn.scan wants."""

  def __call__(self, x, drop_path_rate=0.0, in_scale=1.0, train=False):
    return super().__call__(x, drop_path_rate, in_scale, train), None


class Encoder(nn.Module):
  """Position embedding, the block stack and the final norm (vit_jax name `Transformer`)."""
  num_layers: int
  num_heads: int
  head_dim: int
  mlp_dim: int | Sequence[int]
  norm_spec: norms.NormSpec
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
    spec = self.norm_spec
    norm = functools.partial(layers.site_norm, spec, epsilon=self.layer_norm_epsilon,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    if self.posemb == 'learn':
      x = layers.AddPositionEmbs(param_dtype=self.param_dtype, name='posembed_input')(x)
    else:  # sincos2d: fixed, the prefix positions get zeros
      pe = layers.posemb_sincos_2d(*grid, x.shape[-1])
      pe = np.pad(pe, ((0, 0), (x.shape[1] - pe.shape[1], 0), (0, 0)))
      x = x + jnp.asarray(pe, x.dtype)
    if 'pre' in spec.encoder:
      x = norm('encoder_pre')(x)
    x = layers.dropout(self.kernels, self.dropout_rate)(x, deterministic=not train)

    block_kwargs = dict(
        num_heads=self.num_heads, head_dim=self.head_dim, mlp_dim=self.mlp_dim,
        norm_spec=spec, mlp_activate_output=self.mlp_activate_output,
        layer_norm_epsilon=self.layer_norm_epsilon, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, attention_impl=self.attention_impl,
        kernels=self.kernels, dtype=self.dtype, param_dtype=self.param_dtype)
    rates = layers.drop_path_rates(self.stochastic_depth_rate, self.num_layers)
    in_scales = 1.0 / np.sqrt(np.arange(1, self.num_layers + 1, dtype=np.float32))
    # Per-layer values are traced under scan; otherwise Python floats (static, 0 => no rng use).
    traced_rates = self.scan and self.stochastic_depth_rate > 0
    traced_scales = self.scan and spec.ln_scaling
    block = _ScannedBlock if self.scan else Encoder1DBlock
    if self.remat:  # argnums: 0=self, 1=x, 2=drop_path_rate, 3=in_scale, 4=train
      static = tuple(i for i, traced in ((2, traced_rates), (3, traced_scales), (4, False))
                     if not traced)
      block = nn.remat(block, prevent_cse=not self.scan, static_argnums=static)

    x = (x, x) if spec.residual == 'dual' else x  # ResiDual's two streams start equal
    segments = spec.segments()
    if self.scan:
      names = scan_names([(a, b) for a, b, _ in segments])
      for name, (a, b, norms_of_block) in zip(names, segments):
        x, _ = nn.scan(
            block, variable_axes={'params': 0, 'intermediates': 0, attention.DIAGNOSTICS: 0},
            split_rngs={'params': True, 'dropout': True},
            in_axes=(0 if traced_rates else nn.broadcast, 0 if traced_scales else nn.broadcast,
                     nn.broadcast),
            length=b - a)(name=name, block=norms_of_block, **block_kwargs)(
                x, jnp.asarray(rates[a:b]) if traced_rates else 0.0,
                jnp.asarray(in_scales[a:b]) if traced_scales else 1.0, train)
    else:
      for i in range(self.num_layers):
        x = block(name=f'encoderblock_{i}', block=spec.layers[i], **block_kwargs)(
            x, float(rates[i]), float(in_scales[i]) if spec.ln_scaling else 1.0, train)

    if spec.residual == 'dual':  # ResiDual: x_L + N(d_L)
      x, d = x
      x = x + norm('encoder_dual')(d)
    if 'final' in spec.encoder:
      x = norm('encoder_final')(x)
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
  norm_placement: str = 'pre'  # preset in norms.NORM_PRESETS or an explicit spec (norms.py)
  norm_type: str = 'layernorm'  # one of norms.NORM_TYPES: every site the spec does not type
  final_norm: bool | None = None  # None -> the spec's encoder:final (norms.NormSpec)
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

  def _check(self) -> norms.NormSpec:
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
    return self.norm_spec()

  def norm_spec(self) -> norms.NormSpec:
    """The parsed normalization of this model (norm_placement, norm_type, final_norm)."""
    spec = norms.parse_spec(self.norm_placement, self.num_layers, self.norm_type)
    return norms.with_final_norm(spec, self.final_norm)

  @nn.compact
  def __call__(self, images: Array, train: bool = False) -> Array:
    """images: [batch, H, W, 3] float -> logits [batch, num_classes] float32."""
    spec = self._check()
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
    norm = functools.partial(layers.site_norm, spec, epsilon=self.layer_norm_epsilon,
                             dtype=dtype, param_dtype=param_dtype)
    if 'in' in spec.patch:  # Dual PatchNorm: a norm on each flattened patch, then the kernel
      x = norm('patch_in')(layers.patchify(x, p))
      embed = layers.PatchKernel(self.hidden_size, p, dtype=dtype, param_dtype=param_dtype,
                          name='embedding')
    elif kernels == 'cpu':
      embed = cpu_kernels.PatchEmbedding(self.hidden_size, p, dtype=dtype, param_dtype=param_dtype,
                                         name='embedding')
    else:
      embed = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding='VALID', dtype=dtype,
                      param_dtype=param_dtype, name='embedding')
    x = embed(x)
    if 'out' in spec.patch:
      x = norm('patch_out')(x)
    n, gh, gw, c = x.shape  # [batch, gh, gw, hidden]
    x = x.reshape(n, gh * gw, c)  # [batch, tokens, hidden]
    if self.classifier == 'token':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, c), param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (n, 1, c)), x], axis=1)

    x = Encoder(
        num_layers=self.num_layers, num_heads=self.num_heads,
        head_dim=self.head_dim or self.hidden_size // self.num_heads, mlp_dim=self.mlp_dim,
        norm_spec=spec, posemb=self.posemb, mlp_activate_output=self.mlp_activate_output,
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
    if 'pool' in spec.encoder:  # timm's fc_norm
      x = norm('encoder_pool')(x)
    self.sow('intermediates', 'pooled', x)

    if self.representation_size is not None:
      x = jnp.tanh(nn.Dense(self.representation_size, dtype=dtype, param_dtype=param_dtype,
                            name='pre_logits')(x))
    # Seed head: Dropout on the pooled features, then [Dense+GELU+Dropout] per hidden size.
    head_dropout = lambda y: layers.dropout(kernels, self.head_dropout_rate)(
        y, deterministic=not train)
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
# config.model field -> SwinTransformer field; the ViT ignores them, the Swin every other one.
SWIN_FIELDS = {'stage_depths': 'depths', 'stage_heads': 'num_heads', 'window_size': 'window_size',
               'mlp_ratio': 'mlp_ratio', 'patch_size': 'patch_size', 'hidden_size': 'hidden_size',
               'norm_placement': 'norm_placement', 'norm_type': 'norm_type',
               'final_norm': 'final_norm', 'layer_norm_epsilon': 'layer_norm_epsilon',
               'stochastic_depth_rate': 'stochastic_depth_rate',
               'head_bias_init': 'head_bias_init', 'remat': 'remat', 'scan': 'scan', 'dtype': 'dtype',
               'param_dtype': 'param_dtype'}
MODEL_NAMES = ('vit', 'swin')


def create_model(model_config: Mapping[str, Any], num_classes: int
                 ) -> VisionTransformer | swin.SwinTransformer:
  """Builds the model from `config.model`: `name` 'vit' (this file) or 'swin' (vit_jax/swin.py).

  An optional `variant` key (see `variants.parse_variant`: 'Ti', 'S', 'B', 'L', 'H', optionally with
  '/patch', e.g. 'B/16', a hybrid like 'R50+B/16', or 'swin_t' / 'swin_s' / 'swin_b') sets the
  sizes it names and OVERRIDES those fields in `model_config`; leave `variant` empty to use the
  fields as given. `kernels='auto'` stays in the module and is resolved when it is called
  (`resolve_kernels`).
  """
  kwargs = dict(model_config)
  variant = kwargs.pop('variant', None)
  if variant:
    kwargs.update(variants.parse_variant(variant))
  name = kwargs.pop('name', 'vit')
  if name not in MODEL_NAMES:
    raise ValueError(f'model.name={name!r} is not one of {MODEL_NAMES}')
  if name == 'swin':
    return swin.SwinTransformer(num_classes=num_classes,
                                **{ours: kwargs[field] for field, ours in SWIN_FIELDS.items()
                                   if field in kwargs})
  for field in SWIN_FIELDS:
    if field not in _MODEL_FIELDS:
      kwargs.pop(field, None)
  kwargs.update(hardware.model_settings(kwargs, jax.default_backend()))  # fields left at 'auto'
  unknown = sorted(set(kwargs) - set(_MODEL_FIELDS))
  if unknown:
    raise ValueError(f'Unknown model config fields {unknown}; valid: {", ".join(_MODEL_FIELDS)}')
  return VisionTransformer(num_classes=num_classes, **kwargs)
