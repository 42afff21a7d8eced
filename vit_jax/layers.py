"""The ViT's building blocks: position embeddings, drop-path, the MLP, the patch kernel, and
the norm modules of each `norms.NORM_TYPES` type. Used by vit_jax/models.py and attention.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import cpu_kernels
from vit_jax import norms

Array = jax.Array
SINCOS_TEMPERATURE = 10_000.0
DYT_ALPHA_INIT = 0.5  # Zhu et al.'s default for non-LLM models


# ----------------------------------------------------------------------------- norms
class DyT(nn.Module):
  """Dynamic Tanh (Zhu et al., CVPR 2025): scale ⊙ tanh(alpha x) + bias, alpha a learned scalar."""
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # x: [..., features]
    alpha = self.param('alpha', nn.initializers.constant(DYT_ALPHA_INIT), (), self.param_dtype)
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (x.shape[-1],), self.param_dtype)
    x = x.astype(self.dtype)
    return (scale.astype(self.dtype) * jnp.tanh(alpha.astype(self.dtype) * x) +
            bias.astype(self.dtype))


def make_norm(kind: str, name: str, *, epsilon: float, dtype: Any,
              param_dtype: Any) -> Callable[[jax.Array], jax.Array]:
  """The norm of type `kind` over the last axis, as a submodule called `name` (call inside
  a compact method). Statistics are float32 (flax's LayerNorm/RMSNorm) whatever `dtype`."""
  if kind == 'none':
    return lambda x: x
  if kind == 'layernorm':
    return nn.LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name)
  if kind == 'rmsnorm':
    return nn.RMSNorm(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name)
  if kind == 'dyt':
    return DyT(dtype=dtype, param_dtype=param_dtype, name=name)
  raise ValueError(f'norm type {kind!r} is not one of {", ".join(norms.NORM_TYPES)}')


def site_norm(spec: norms.NormSpec, site: str, *, epsilon: float, dtype: Any,
              param_dtype: Any) -> Callable[[jax.Array], jax.Array]:
  """The norm at `site` of `spec` (its type, its parameter name `norms.NORM_NAMES[site]`)."""
  return make_norm(spec.type_of(site), norms.NORM_NAMES[site], epsilon=epsilon, dtype=dtype,
                   param_dtype=param_dtype)


def rms(x: jax.Array) -> jax.Array:
  """Root mean square over every element, in float32 (the diagnostics' branch and stream RMS)."""
  return jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32))))


def scaled_init(gain: float):
  """xavier_uniform times `gain` (the bits of xavier_uniform itself when gain == 1)."""
  base = nn.initializers.xavier_uniform()
  if gain == 1:
    return base
  return lambda rng, shape, dtype=jnp.float32: gain * base(rng, shape, dtype)


# ----------------------------------------------------------------------------- the rest
def dropout(kernels: str, rate: float) -> nn.Module:
  """nn.Dropout, or its 16-bit CPU kernel; both auto-name as `Dropout_{i}` (same rng stream)."""
  return cpu_kernels.Dropout(rate) if kernels == 'cpu' else nn.Dropout(rate)


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
  """Dense(w)+GELU+dropout per hidden width, then Dense(width)+dropout (vit_jax init).

  `mid_norm` (a norm type) puts a norm after the last hidden activation (mlp:mid: NormFormer,
  Sub-LN); `init_gain` multiplies every initial kernel (DeepNorm's beta on fc1 and fc2).
  """
  mlp_dim: int | Sequence[int]
  activate_output: bool = False
  dropout_rate: float = 0.0
  mid_norm: str | None = None
  init_gain: float = 1.0
  epsilon: float = 1e-6
  kernels: str = 'reference'  # 'reference' | 'cpu' (already resolved, see resolve_kernels)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:  # x: [batch, tokens, width]
    widths = (self.mlp_dim,) if isinstance(self.mlp_dim, int) else tuple(self.mlp_dim)
    dense = lambda features: nn.Dense(
        features, kernel_init=scaled_init(self.init_gain),
        bias_init=nn.initializers.normal(stddev=1e-6),  # vit_jax's bias init
        dtype=self.dtype, param_dtype=self.param_dtype)
    drop = lambda y: dropout(self.kernels, self.dropout_rate)(y, deterministic=not train)
    out_width = x.shape[-1]
    for j, w in enumerate(widths):
      x = nn.gelu(dense(w)(x))  # [batch, tokens, w]
      if self.mid_norm and j == len(widths) - 1:
        x = make_norm(self.mid_norm, norms.NORM_NAMES['mlp_mid'], epsilon=self.epsilon,
                            dtype=self.dtype, param_dtype=self.param_dtype)(x)
      x = drop(x)
    x = dense(out_width)(x)
    if self.activate_output:
      x = nn.gelu(x)
    return drop(x)  # [batch, tokens, width]


class PatchKernel(nn.Module):
  """The patch embedding applied to already flattened patches (for patch:in, Dual PatchNorm):
  nn.Conv's names, shapes and init (kernel [p, p, C, features], lecun_normal; bias zeros)."""
  features: int
  patch_size: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, patches: Array) -> Array:  # patches: [batch, gh, gw, p*p*C], (u, v, C) order
    p, c = self.patch_size, patches.shape[-1] // self.patch_size**2
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (p, p, c, self.features),
                        self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    y = jnp.dot(patches.astype(self.dtype), kernel.reshape(p * p * c, -1).astype(self.dtype))
    return y + bias.astype(self.dtype)  # [batch, gh, gw, features]


def patchify(x: Array, p: int) -> Array:
  """[batch, H, W, C] -> [batch, H/p, W/p, p*p*C], each patch flattened in (row, col, C) order."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // p, w // p, p * p * c)
