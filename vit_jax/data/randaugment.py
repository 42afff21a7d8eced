"""vit_jax/data/randaugment.py: RandAugment (Cubuk et al. 2020) on whole float batches.

Each layer applies one of the paper's 14 ops (OPS), chosen uniformly per example, at strength
level = magnitude / 10 of the op's maximum, with a random sign where it has one. Maxima: rotate
30 deg, shear 0.3, translate 10/32 of the image side, enhance factors 1 +- 0.9, posterize to 4
bits, solarize threshold 256 -> 0 (timm's increasing variants). Geometric ops fill with grey 128
and act about the image centre; ops work on float pixels (no uint8 rounding between ops).

Why batched and grouped: per-example ``map`` on 32x32 images is dominated by tf.data overhead, so
examples are grouped by op (dynamic_partition) and each op runs once, vectorized, on its own
examples. The random numbers come from the caller (augment.py), keyed by global example position.
"""

from __future__ import annotations

import math

import tensorflow as tf


def _blend(degenerate, x, factor):
  return tf.clip_by_value(degenerate + factor[:, None, None, None] * (x - degenerate), 0.0, 255.0)


def _enhance_factor(sign, level):
  return tf.maximum(1.0 + sign * 0.9 * level, 0.0)


def _autocontrast(x, sign, level):
  del sign, level
  lo = tf.reduce_min(x, axis=[1, 2], keepdims=True)
  hi = tf.reduce_max(x, axis=[1, 2], keepdims=True)
  return tf.where(hi > lo, (x - lo) * 255.0 / tf.maximum(hi - lo, 1e-3), x)


def _equalize(x, sign, level):
  """PIL ImageOps.equalize per image and channel, vectorized with a batched bincount."""
  del sign, level
  _, h, w, c = x.shape
  v = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.int32)
  rows = tf.reshape(tf.transpose(v, [0, 3, 1, 2]), [-1, h * w])  # [m*C, H*W]
  hist = tf.math.bincount(rows, minlength=256, maxlength=256, axis=-1)  # [m*C, 256]
  last = tf.reduce_max(tf.where(hist > 0, tf.range(256)[None], 0), axis=1)
  step = (h * w - tf.gather(hist, last, batch_dims=1)) // 255  # [m*C]
  lut = (tf.cumsum(hist, axis=1, exclusive=True) + (step // 2)[:, None]) // tf.maximum(
      step, 1)[:, None]
  eq = tf.where((step > 0)[:, None], tf.gather(tf.minimum(lut, 255), rows, batch_dims=1), rows)
  return tf.transpose(tf.reshape(tf.cast(eq, tf.float32), [-1, c, h, w]), [0, 2, 3, 1])


def _solarize(x, sign, level):
  del sign
  return tf.where(x >= 256.0 * (1.0 - min(level, 1.0)), 255.0 - x, x)


def _posterize(x, sign, level):
  del sign
  shift = 2.0 ** (8 - max(1, 8 - round(4 * level)))
  return tf.floor(x / shift) * shift


def _color(x, sign, level):
  return _blend(tf.image.rgb_to_grayscale(x), x, _enhance_factor(sign, level))


def _contrast(x, sign, level):
  mean = tf.reduce_mean(tf.image.rgb_to_grayscale(x), axis=[1, 2, 3], keepdims=True)
  return _blend(mean, x, _enhance_factor(sign, level))


def _brightness(x, sign, level):
  return _blend(tf.zeros_like(x), x, _enhance_factor(sign, level))


def _sharpness(x, sign, level):
  """Blend with PIL's SMOOTH filter (interior only; border pixels unchanged)."""
  # The 3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 as shifted slices: tf.nn.depthwise_conv2d
  # returns a wrongly shaped result for an empty batch on some CPUs (AMD Zen 4, TF 2.21), and a
  # RandAugment layer can give an op no example.
  _, h, w, _ = x.shape
  blur = tf.add_n([x[:, i:h - 2 + i, j:w - 2 + j] for i in range(3) for j in range(3)])
  blur = (blur + 4.0 * x[:, 1:-1, 1:-1]) / 13.0
  paddings = [[0, 0], [1, 1], [1, 1], [0, 0]]
  smooth = tf.pad(blur, paddings) + x - tf.pad(x[:, 1:-1, 1:-1], paddings)
  return _blend(smooth, x, _enhance_factor(sign, level))


_WARPS = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')


def _warp(x, sign, level, kind):
  """Rotate / Shear / Translate (kind indexes _WARPS) about the centre, grey fill, one op."""
  _, h, w, _ = x.shape
  v = sign * level
  is_kind = lambda name: tf.equal(kind, _WARPS.index(name))
  zero = tf.zeros_like(v)
  theta = tf.where(is_kind('Rotate'), v * math.radians(30), zero)
  shx = tf.where(is_kind('ShearX'), 0.3 * v, zero)
  shy = tf.where(is_kind('ShearY'), 0.3 * v, zero)
  tx = tf.where(is_kind('TranslateX'), (10 / 32) * w * v, zero)
  ty = tf.where(is_kind('TranslateY'), (10 / 32) * h * v, zero)
  # Rot(theta) + the shears: exact because each example has only one of theta, shx, shy != 0.
  a00, a01 = tf.cos(theta), shx - tf.sin(theta)
  a10, a11 = shy + tf.sin(theta), tf.cos(theta)
  cx, cy = (w - 1) / 2, (h - 1) / 2
  t = tf.stack([a00, a01, cx + tx - a00 * cx - a01 * cy,
                a10, a11, cy + ty - a10 * cx - a11 * cy, zero, zero], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=x, transforms=t, output_shape=tf.constant([h, w]), fill_value=tf.constant(128.0),
      interpolation='BILINEAR', fill_mode='CONSTANT')


# Op name -> fn(x [m,H,W,3], sign [m], level); the five warps share one group (see _warp).
_COLOR_OPS = {
    'Identity': lambda x, sign, level: x, 'AutoContrast': _autocontrast, 'Equalize': _equalize,
    'Solarize': _solarize, 'Color': _color, 'Posterize': _posterize, 'Contrast': _contrast,
    'Brightness': _brightness, 'Sharpness': _sharpness,
}
OPS = tuple(_COLOR_OPS) + _WARPS


def _layer(x, op, sign, level: float):
  """One RandAugment layer. x [b,H,W,3] float 0..255; op int32 [b] indexes OPS; sign +-1."""
  n = len(_COLOR_OPS)
  group = tf.minimum(op, n)  # all warps -> group n
  parts = lambda t: tf.dynamic_partition(t, group, n + 1)
  index, xs, signs, ops = parts(tf.range(tf.shape(x)[0])), parts(x), parts(sign), parts(op)
  outs = [fn(xi, si, level) for fn, xi, si in zip(_COLOR_OPS.values(), xs, signs)]
  outs.append(_warp(xs[n], signs[n], level, ops[n] - n))
  return tf.reshape(tf.clip_by_value(tf.dynamic_stitch(index, outs), 0.0, 255.0), x.shape)


def randaugment(x, u, layers: int, magnitude: float):
  """`layers` RandAugment layers on x [b,H,W,3] float 0..255; u [b, 2*layers] uniforms in [0, 1)."""
  # Traced once, called per layer: tracing the 14 ops is the slow part of building the pipeline.
  layer_fn = tf.function(_layer, autograph=False)
  for layer in range(layers):
    op = tf.minimum(tf.cast(u[:, 2 * layer] * len(OPS), tf.int32), len(OPS) - 1)
    sign = tf.where(u[:, 2 * layer + 1] < 0.5, -1.0, 1.0)
    x = layer_fn(x, op, sign, magnitude / 10)
  return x
