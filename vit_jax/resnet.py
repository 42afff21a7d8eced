"""The hybrid ViT's ResNet stem (BiT / vit_jax models_resnet), with vit_jax parameter names.

A hybrid ViT patchifies the stem's feature map instead of the image: `resnet_stem` runs the
root conv (7x7/2, GroupNorm, relu, max-pool 3x3/2) and the bottleneck stages, and its modules
are created in the caller's scope so that `conv_root`, `gn_root` and `block{s}/unit{u}` are
top-level parameters as in the official checkpoints. Convs are weight-standardized (StdConv).
"""

from __future__ import annotations

import os
import sys

if __name__ == '__main__':  # run as a file: vit_jax/ on sys.path would shadow the stdlib `inspect`
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

# Hybrid variants 'R50+B/16' etc. (ViT paper / AugReg): (resnet, effective patch) -> stage sizes.
# The feature map is image / resnet_stride(layers), so these all use patch_size 1 on it.
RESNET_VARIANTS: dict[tuple[str, int], tuple[int, ...]] = {
    ('R50', 16): (3, 4, 9),  # the ViT paper's R50: stage 4 folded into stage 3 (stride 16)
    ('R50', 32): (3, 4, 6, 3),
    ('R26', 32): (2, 2, 2, 2),
}


def resnet_stride(resnet_layers: Sequence[int]) -> int:
  """Downsampling of the hybrid stem: root conv /2, max-pool /2, each stage after the 1st /2."""
  return 4 * 2**(len(resnet_layers) - 1) if resnet_layers else 1


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


if __name__ == '__main__':
  for (name, patch), layers in RESNET_VARIANTS.items():
    print(f'{name}+<size>/{patch}: stages {layers}, stem stride {resnet_stride(layers)}')
