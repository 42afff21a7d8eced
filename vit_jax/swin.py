"""Swin Transformer (Liu et al., 2021) in plain Flax, with the ViT's normalization switch.

A hierarchical model: patches of `patch_size` pixels embedded to `hidden_size` channels, then
stages of blocks whose self-attention stays inside non-overlapping windows of `window_size` x
`window_size` tokens; every second block shifts the windows by half a window (a cyclic roll,
with a mask so that no token attends across the seam), and a learned relative-position bias per
head is added to the logits. Between stages, patch merging halves the resolution and doubles the
channels. A final norm, global average pooling and a linear head classify.

The normalization of every block comes from the same `model.norm_placement` / `model.norm_type`
as the ViT (vit_jax/norms.py), over all sum(depths) blocks: `pre` is Swin V1
(x + f(N(x))), `respost` is Swin V2's res-post-norm (x + N(f(x))), and every scheme that only
places norms around the sublayers (post, sandwich, addnorm, mixln, ...; RMSNorm, DyT; LayerScale,
DeepNorm's alpha) works. Norms *inside* the attention (QK-norm, Sub-LN, head scale), DeepNorm's
init gain, LN-scaling, patch-input norms and the B2T / ResiDual residuals are ViT-only:
`unsupported` names them and vit_jax/validation.py stops before compile. The patch embedding is
always followed by a norm (Swin's `patch_norm`) of type `norm_type`; patch merging normalizes
before its reduction (V1).

Parameter names follow timm's layout so that released weights map by name
(vit_jax/swin_weights.py): patch_embed, layers_{i}_blocks_{j}/{attn/{qkv, proj,
relative_position_bias_table}, mlp/{fc1, fc2}}, layers_{i}_downsample/{norm, reduction} (the
merging at the start of stage i >= 1), head; the norms keep the ViT's site names (patch_norm_out,
LayerNorm_0 = attn:in, LayerNorm_2 = mlp:in, ..., encoder_norm). GELU is exact (erf), as in
the reference implementation.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import attention
from vit_jax import layers
from vit_jax import norms

Array = jax.Array
MASKED = -100.0   # logit added across the cyclic seam (the reference value; exp(-100) ~ 0)
BIAS_INIT_STD = 0.02

# ----------------------------------------------------------------------------- geometry
def relative_position_index(window: int) -> np.ndarray:
  """[w*w, w*w]: for query token i and key token j of a window, the row of the bias table that
  holds their offset (dy, dx), each in [-(w-1), w-1]: (dy + w-1) * (2w-1) + (dx + w-1)."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing='ij'))
  coords = coords.reshape(2, -1)                          # [2, w*w]: (row, col) of each token
  offset = coords[:, :, None] - coords[:, None, :]        # [2, w*w, w*w]: query - key
  return (offset[0] + window - 1) * (2 * window - 1) + (offset[1] + window - 1)


def window_partition(x: Array, window: int) -> Array:
  """[B, H, W, C] -> [B * H/w * W/w, w*w, C], windows in row-major order (numpy or jax)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window, window, w // window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Array, window: int, h: int, w: int) -> Array:
  """Inverse of window_partition: [B * H/w * W/w, w*w, C] -> [B, H, W, C]."""
  c = windows.shape[-1]
  x = windows.reshape(-1, h // window, w // window, window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> np.ndarray:
  """[windows, w*w, w*w]: 0 where two tokens of a shifted window came from the same region of the
  un-rolled map, MASKED where the cyclic shift brought them together across the seam."""
  region = np.zeros((1, h, w, 1), np.float32)
  spans = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
  for i, (rows, cols) in enumerate((r, c) for r in spans for c in spans):
    region[:, rows, cols, :] = i
  ids = window_partition(region, window)[..., 0]  # [windows, w*w] (numpy in, numpy out)
  return np.where(ids[:, None, :] != ids[:, :, None], MASKED, 0.0).astype(np.float32)


def stage_geometry(image_size: int, patch_size: int, window_size: int, num_stages: int
                   ) -> list[tuple[int, int]]:
  """(resolution, window) of each stage: a stage whose map is no larger than the window uses one
  window over the whole map (and no shift), as the reference implementation does."""
  out, res = [], image_size // patch_size
  for i in range(num_stages):
    if i:
      res //= 2
    out.append((res, min(window_size, res)))
  return out


def size_problems(image_size: int, patch_size: int, window_size: int, num_stages: int) -> list[str]:
  """Why an image / patch / window size cannot build this Swin (empty when it can)."""
  if min(image_size, patch_size, window_size, num_stages) <= 0:
    return [f'image_size={image_size}, patch_size={patch_size}, window_size={window_size} and '
            f'{num_stages} stages must all be positive.']
  unit = patch_size * window_size * 2 ** (num_stages - 1)
  fits = [n * unit for n in (1, 2, 3, 4)]
  problems = []
  res = image_size // patch_size
  if image_size % patch_size:
    problems.append(f'image_size={image_size} is not divisible by patch_size={patch_size}.')
  for i in range(1, num_stages):
    if res % 2:
      problems.append(f'stage {i} halves a {res}x{res} token map: it must be even.')
      break
    res //= 2
  if not problems:
    for i, (res, window) in enumerate(stage_geometry(image_size, patch_size, window_size,
                                                      num_stages)):
      if res % window:
        problems.append(f'stage {i}: its {res}x{res} token map is not divisible by the '
                        f'window {window}.')
  if problems:
    problems.append(f'Sizes that work with patch_size={patch_size}, window_size={window_size} '
                    f'and {num_stages} stages: image_size in {fits} (multiples of patch x window '
                    f'x 2^(stages-1) = {unit}); or change window_size.')
  return problems


def unsupported(spec: norms.NormSpec) -> list[str]:
  """The parts of a norm spec that this Swin does not implement (ViT-only)."""
  out = []
  if spec.inside_attention:
    out.append('norms inside the attention (QK-norm, Sub-LN, head scale)')
  if any('mid' in b.mlp for b in spec.layers):
    out.append('a norm inside the MLP (Sub-LN / NormFormer mid norm)')
  if spec.init_gain != 1.0:
    out.append(f'init_gain={spec.init_gain:g} (DeepNorm / Magneto init)')
  if spec.ln_scaling:
    out.append('LN-scaling')
  if spec.residual != 'standard':
    out.append(f'residual={spec.residual}')
  if spec.patch - {'out'}:
    out.append('a norm on the patch pixels (patch:in)')
  if spec.encoder - {'final'}:
    out.append(f'encoder norms {sorted(spec.encoder - {"final"})}')
  return out


# ----------------------------------------------------------------------------- modules
class WindowAttention(nn.Module):
  """Multi-head self-attention inside each window, with a relative-position bias per head.
  `diagnose`: sow each head's mean entropy and largest logit (vit_jax/diagnostics.py)."""
  num_heads: int
  window: int
  diagnose: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Array | None) -> Array:
    # x: [windows * batch, w*w, C]; mask: [windows, w*w, w*w] or None
    n, t, c = x.shape
    hd = c // self.num_heads
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    qkv = dense(3 * c, name='qkv')(x).reshape(n, t, 3, self.num_heads, hd)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))   # [n, heads, t, hd]
    logits = jnp.einsum('nhqd,nhkd->nhqk', q * hd ** -0.5, k).astype(jnp.float32)
    table = self.param('relative_position_bias_table',
                       nn.initializers.truncated_normal(BIAS_INIT_STD),
                       ((2 * self.window - 1) ** 2, self.num_heads), self.param_dtype)
    index = relative_position_index(self.window).reshape(-1)
    bias = table[index].reshape(t, t, self.num_heads).transpose(2, 0, 1)  # [heads, t, t]
    logits = logits + bias.astype(jnp.float32)
    if self.diagnose:  # the logits q.k/sqrt(d) + bias, before the seam mask
      self.sow(attention.DIAGNOSTICS, 'attn_logit_max', jnp.max(logits, axis=(0, 2, 3)))  # [heads]
    if mask is not None:  # the same mask for each image's windows: [n // windows, windows, ...]
      windows = mask.shape[0]
      logits = logits.reshape(n // windows, windows, self.num_heads, t, t) + mask[None, :, None]
      logits = logits.reshape(n, self.num_heads, t, t)
    weights = jax.nn.softmax(logits, axis=-1)
    if self.diagnose:
      entropy = -jnp.sum(weights * jax.nn.log_softmax(logits, axis=-1), axis=-1)  # [n, h, q]
      self.sow(attention.DIAGNOSTICS, 'attn_entropy', jnp.mean(entropy, axis=(0, 2)))  # nats
    weights = weights.astype(self.dtype)
    out = jnp.einsum('nhqk,nhkd->nqhd', weights, v).reshape(n, t, c)
    return dense(c, name='proj')(out)


class SwinMlp(nn.Module):
  """Dense(hidden) -> exact GELU -> Dense(back to the input width)."""
  hidden: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    y = nn.gelu(dense(self.hidden, name='fc1')(x), approximate=False)
    return dense(x.shape[-1], name='fc2')(y)


class SwinBlock(nn.Module):
  """(Shifted-)window attention and an MLP, each with the norms of `block` (see vit_jax/norms.py)."""
  num_heads: int
  window: int
  shift: int
  mlp_ratio: float
  norm_spec: norms.NormSpec
  block: norms.BlockNorms
  layer_norm_epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, drop_path_rate: float, train: bool = False) -> Array:
    b, h, w, c = x.shape  # [batch, H, W, C]
    spec = self.norm_spec
    norm = functools.partial(layers.site_norm, spec, epsilon=self.layer_norm_epsilon,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    mask = (jnp.asarray(shifted_window_mask(h, w, self.window, self.shift)) if self.shift
            else None)
    diagnose = self.is_mutable_collection(attention.DIAGNOSTICS) and not self.is_initializing()

    def attn(y):
      if self.shift:
        y = jnp.roll(y, (-self.shift, -self.shift), axis=(1, 2))
      y = WindowAttention(self.num_heads, self.window, diagnose, dtype=self.dtype,
                          param_dtype=self.param_dtype, name='attn')(
                              window_partition(y, self.window), mask)
      y = window_reverse(y, self.window, h, w)
      return jnp.roll(y, (self.shift, self.shift), axis=(1, 2)) if self.shift else y

    def mlp(y):
      return SwinMlp(int(c * self.mlp_ratio), dtype=self.dtype, param_dtype=self.param_dtype,
                     name='mlp')(y)

    for sub, f in (('attn', attn), ('mlp', mlp)):
      positions = getattr(self.block, sub)
      y = norm(f'{sub}_in')(x) if 'in' in positions else x
      y = f(y)
      if 'out' in positions:
        y = norm(f'{sub}_out')(y)
      if spec.layerscale:
        y = y * self.param(f'layerscale_{sub}', nn.initializers.constant(spec.layerscale),
                           (c,), self.param_dtype).astype(y.dtype)
      y = layers.DropPath()(y, drop_path_rate, deterministic=not train)
      if diagnose:  # what the sublayer adds to the stream
        self.sow(attention.DIAGNOSTICS, f'{sub}_branch_rms', layers.rms(y))
      x = (spec.alpha * x if spec.alpha != 1 else x) + y
      if 'res' in positions:
        x = norm(f'{sub}_res')(x)
    if diagnose:
      self.sow(attention.DIAGNOSTICS, 'stream_rms', layers.rms(x))
    return x


class PatchMerging(nn.Module):
  """[B, H, W, C] -> [B, H/2, W/2, 2C]: each 2x2 neighbourhood concatenated (4C), normed, reduced."""
  norm_type: str
  layer_norm_epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(
        b, h // 2, w // 2, 4 * c)  # neighbours in the order (0,0), (1,0), (0,1), (1,1)
    x = layers.make_norm(self.norm_type, 'norm', epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                         param_dtype=self.param_dtype)(x)
    return nn.Dense(2 * c, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                    name='reduction')(x)


class _ScanStep(nn.Module):
  """One step of a scanned stage: `len(shifts)` blocks (a plain and a shifted one, or one), named
  blocks_0, blocks_1; block j of the stage is step j // len(shifts), blocks_{j % len(shifts)}."""
  block: Any
  shifts: tuple[int, ...]
  kwargs: dict

  @nn.compact
  def __call__(self, x: Array, rates, train: bool):
    for k, shift in enumerate(self.shifts):
      x = self.block(shift=shift, **self.kwargs, name=f'blocks_{k}')(x, rates[k], train)
    return x, None


def scan_layout_problems(depths: Sequence[int], image_size: int, patch_size: int,
                         window_size: int, spec: norms.NormSpec) -> list[str]:
  """Why `scan=True` cannot scan these stages: each stage needs identical norms in all its
  blocks, and an even depth where windows shift (pairs are the scanned step)."""
  out, layer = [], 0
  geometry = stage_geometry(image_size, patch_size, window_size, len(depths))
  for i, (depth, (res, window)) in enumerate(zip(depths, geometry)):
    if len(set(spec.layers[layer:layer + depth])) > 1:
      out.append(f'stage {i} mixes norm placements (e.g. Mix-LN\'s boundary falls inside it)')
    if res > window and depth % 2:
      out.append(f'stage {i} has an odd depth {depth}: its (plain, shifted) pairs cannot be scanned')
    layer += depth
  return out


def _unscanned_name(stage: int, step: int, k: int, period: int) -> str:
  return f'layers_{stage}_blocks_{step * period + k}'


def unstack_params(params: Any) -> dict:
  """scan=True params (layers_{i}_blocks/blocks_{k}, stacked) -> the unscanned layout
  (layers_{i}_blocks_{j}), e.g. to load weights or compare; other params unchanged."""
  out = {}
  for name, tree in params.items():
    m = re.fullmatch(r'layers_(\d+)_blocks', name)
    if not m:
      out[name] = tree
      continue
    period = len(tree)
    steps = len(jax.tree.leaves(tree)[0])
    for step in range(steps):
      for k in range(period):
        out[_unscanned_name(int(m.group(1)), step, k, period)] = jax.tree.map(
            lambda a, step=step: a[step], tree[f'blocks_{k}'])
  return out


def stack_params(params: Any, like: Any) -> dict:
  """Inverse of unstack_params, with the scanned layout of `like` (the scanned model's params)."""
  out = {}
  for name, tree in like.items():
    m = re.fullmatch(r'layers_(\d+)_blocks', name)
    if not m:
      out[name] = params[name]
      continue
    period, steps = len(tree), len(jax.tree.leaves(tree)[0])
    out[name] = {f'blocks_{k}': jax.tree.map(
        lambda *xs: np.stack(xs),
        *[params[_unscanned_name(int(m.group(1)), step, k, period)] for step in range(steps)])
                 for k in range(period)}
  return out


class SwinTransformer(nn.Module):
  """Swin classifier: images [batch, H, W, 3] -> logits [batch, num_classes] (float32)."""
  num_classes: int
  patch_size: int = 4
  hidden_size: int = 96                     # channels of the first stage (C)
  depths: Sequence[int] = (2, 2, 6, 2)      # blocks per stage
  num_heads: Sequence[int] = (3, 6, 12, 24)  # heads per stage
  window_size: int = 7
  mlp_ratio: float = 4.0
  norm_placement: str = 'pre'
  norm_type: str = 'layernorm'
  final_norm: bool | None = None
  layer_norm_epsilon: float = 1e-5
  stochastic_depth_rate: float = 0.0
  head_bias_init: float = 0.0
  remat: bool = False  # recompute each block in the backward pass (memory for compute)
  scan: bool = False   # nn.scan over each stage's (plain, shifted) pairs: compile once per stage
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  def __post_init__(self):
    for field in ('depths', 'num_heads'):
      if isinstance(getattr(self, field), list):
        object.__setattr__(self, field, tuple(getattr(self, field)))
    super().__post_init__()

  @property
  def num_layers(self) -> int:
    """All blocks of all stages: the layers of the norm spec and of vit_jax/diagnostics.py."""
    return sum(self.depths)

  def norm_spec(self) -> norms.NormSpec:
    spec = norms.parse_spec(self.norm_placement, self.num_layers, self.norm_type)
    return norms.with_final_norm(spec, self.final_norm)

  @nn.compact
  def __call__(self, images: Array, train: bool = False) -> Array:
    spec = self.norm_spec()
    problems = unsupported(spec) + size_problems(images.shape[1], self.patch_size,
                                                 self.window_size, len(self.depths))
    if self.scan and not problems:
      problems += scan_layout_problems(self.depths, images.shape[1], self.patch_size,
                                       self.window_size, spec)
    if len(self.num_heads) != len(self.depths):
      problems.append(f'num_heads={self.num_heads} needs one entry per stage of '
                      f'depths={self.depths}.')
    if problems:
      raise ValueError('Swin: ' + ' '.join(problems))
    dtype, param_dtype = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
    p = self.patch_size
    x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding='VALID', dtype=dtype,
                param_dtype=param_dtype, name='patch_embed')(images.astype(dtype))
    x = layers.make_norm(self.norm_type, norms.NORM_NAMES['patch_out'],
                         epsilon=self.layer_norm_epsilon, dtype=dtype, param_dtype=param_dtype)(x)
    rates = layers.drop_path_rates(self.stochastic_depth_rate, sum(self.depths))
    geometry = stage_geometry(images.shape[1], p, self.window_size, len(self.depths))
    traced_rates = self.scan and self.stochastic_depth_rate > 0  # else Python floats (static)
    # argnums: 0=self, 1=x, 2=drop_path_rate, 3=train
    block = (nn.remat(SwinBlock, static_argnums=(3,) if traced_rates else (2, 3))
             if self.remat else SwinBlock)
    layer = 0
    for i, (depth, heads, (res, window)) in enumerate(zip(self.depths, self.num_heads, geometry)):
      if i:
        x = PatchMerging(self.norm_type, self.layer_norm_epsilon, dtype=dtype,
                         param_dtype=param_dtype, name=f'layers_{i}_downsample')(x)
      shifts = [window // 2 if j % 2 and res > window else 0 for j in range(depth)]
      kwargs = dict(num_heads=heads, window=window, mlp_ratio=self.mlp_ratio, norm_spec=spec,
                    block=spec.layers[layer], layer_norm_epsilon=self.layer_norm_epsilon,
                    dtype=dtype, param_dtype=param_dtype)
      if self.scan:  # one compiled step per (plain, shifted) pair, or per block without shifts
        period = 2 if any(shifts) else 1
        stage_rates = rates[layer:layer + depth].reshape(depth // period, period)
        x, _ = nn.scan(_ScanStep, variable_axes={'params': 0, attention.DIAGNOSTICS: 0},
                       split_rngs={'params': True, 'dropout': True},
                       in_axes=(0 if traced_rates else nn.broadcast, nn.broadcast),
                       length=depth // period)(
                           block=block, shifts=tuple(shifts[:period]), kwargs=kwargs,
                           name=f'layers_{i}_blocks')(
                               x, jnp.asarray(stage_rates) if traced_rates else
                               tuple(0.0 for _ in range(period)), train)
      else:
        for j in range(depth):
          x = block(shift=shifts[j], **{**kwargs, 'block': spec.layers[layer + j]},
                    name=f'layers_{i}_blocks_{j}')(x, float(rates[layer + j]), train)
      layer += depth
    if 'final' in spec.encoder:
      x = layers.site_norm(spec, 'encoder_final', epsilon=self.layer_norm_epsilon, dtype=dtype,
                           param_dtype=param_dtype)(x)
    x = jnp.mean(x, axis=(1, 2))  # [batch, C * 2^(stages-1)]
    logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.constant(self.head_bias_init),
                      dtype=jnp.float32, param_dtype=param_dtype, name='head')(x)
    return logits.astype(jnp.float32)
