"""vit_jax/data/augment.py: train augmentation of a host batch, and the stateless randomness.

Why it is built this way:

* **Stateless, batch-level.** Every random number is drawn with ``tf.random.stateless_*`` from
  (seed, global batch index k, stream id) for the *global* batch and then sliced to the host's
  rows, i.e. it is keyed by (seed, global example position). Parallel ``map`` stays
  deterministic, and an example is augmented identically whatever the number of hosts. Ops run
  on whole batches (vectorized): per-example ``map`` on 32x32 images is dominated by tf.data
  overhead.
* **Full resolution is touched once.** Padded crop, RandAugment (randaugment.py), flip and
  normalization run at source resolution (32x32: cheap). Resize, inception crop, zoom and rotation
  are composed into one map per example and applied as one bilinear resampling to the output
  size: tf.image.resize / crop_and_resize when axis-aligned (exact), a two-pass warp with
  rotation. At 224px every full-size op costs ~0.1-0.3 s per 256-image batch on a 2-core VM
  (mostly fresh 154 MB allocations), so there is nothing else at full size.
* **Mixup / CutMix pair adjacent rows** (r with r xor 1), so mixing never crosses hosts.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from vit_jax.data import randaugment as ra

STREAMS = dict(balanced=1, crop=2, randaugment=3, geometry=4, rrc=5, cutmix_box=6, mix_lam=7,
               cut_lam=8, mix_choice=9)


def seed_pair(seed: int, k, stream: str):
  """Stateless seed for (run seed, global batch k, purpose); TF scrambles seeds internally."""
  k = tf.cast(k, tf.int64)
  return tf.stack([tf.constant(seed % 2**63, tf.int64), k * 64 + STREAMS[stream]])


def host_uniform(seed, k, stream, global_batch, rows: slice, n: int):
  """float32 [host_batch, n] uniforms in [0, 1); global row r is the same on any host."""
  u = tf.random.stateless_uniform([global_batch, n], seed=seed_pair(seed, k, stream))
  return u[rows]


@dataclasses.dataclass(frozen=True)
class Aug:
  """The augmentation switches of config.data, read once."""
  image_size: int
  crop_padding: int
  random_resized_crop: bool
  rrc_min_scale: float
  flip: bool
  rotation: float
  zoom: float
  randaugment_layers: int
  randaugment_magnitude: float
  mixup_alpha: float
  cutmix_alpha: float

  @classmethod
  def from_config(cls, c) -> 'Aug':
    return cls(**{f.name: c[f.name] for f in dataclasses.fields(cls)})

  @property
  def mixing(self) -> bool:
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def pad_crop(x, offsets, pad: int):
  """Random crop with zero padding (torchvision RandomCrop(size, padding)). x [b,H,W,C]."""
  _, h, w, _ = x.shape
  xp = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  rows = offsets[:, :1] + tf.range(h)[None]  # [b, H]
  cols = offsets[:, 1:] + tf.range(w)[None]  # [b, W]
  xp = tf.gather(xp, rows, axis=1, batch_dims=1)  # [b, H, W+2p, C]
  return tf.gather(xp, cols, axis=2, batch_dims=1)  # [b, H, W, C]


def rrc_boxes(u, height, width, min_scale: float, attempts: int = 10):
  """Inception crop boxes (area in [min_scale, 1], aspect in [3/4, 4/3]), torchvision's sampler.

  u: [b, 2*attempts+2] uniforms; height/width: source size (scalars or [b]). Returns the box
  center (cx, cy) in pixel-index coordinates and its size (w, h) in pixels, each [b]. Falls back to
  the whole image when no attempt fits.
  """
  height = tf.cast(height, tf.float32)
  width = tf.cast(width, tf.float32)
  area = (min_scale + (1.0 - min_scale) * u[:, :attempts]) * (height * width)[..., None]
  log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, attempts:2 * attempts]
  w = tf.sqrt(area * tf.exp(log_r))
  h = tf.sqrt(area / tf.exp(log_r))
  ok = (w <= width[..., None]) & (h <= height[..., None])
  first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)
  w = tf.where(tf.reduce_any(ok, 1), tf.gather(w, first, batch_dims=1), width)
  h = tf.where(tf.reduce_any(ok, 1), tf.gather(h, first, batch_dims=1), height)
  x0 = u[:, 2 * attempts] * (width - w)
  y0 = u[:, 2 * attempts + 1] * (height - h)
  return x0 + w / 2 - 0.5, y0 + h / 2 - 0.5, w, h


def augment_batch(x, k, aug: Aug, seed: int, global_batch: int, rows: slice, mean, std,
                  sized: bool = False):
  """Train augmentation of one host batch: uint8 [b,H,W,3] -> normalized float32 [b,S,S,3].

  Order: padded crop -> RandAugment -> flip -> normalize, all at source resolution (cheap), then
  one bilinear resampling to S x S for resize / inception crop / zoom / rotation. Normalizing
  before the resampling is exact (reflect fill only forms convex combinations of pixels) and
  saves a full-resolution pass. `sized`: x is already S x S and any inception crop was done by
  the caller (TFDS streaming path).
  """
  x = tf.cast(x, tf.float32)
  uni = lambda stream, n: host_uniform(seed, k, stream, global_batch, rows, n)
  if aug.crop_padding:
    offsets = tf.cast(tf.floor(uni('crop', 2) * (2 * aug.crop_padding + 1)), tf.int32)
    x = pad_crop(x, offsets, aug.crop_padding)
  if aug.randaugment_layers:
    x = ra.randaugment(x, uni('randaugment', 2 * aug.randaugment_layers),
                       aug.randaugment_layers, aug.randaugment_magnitude)
  g = uni('geometry', 4)  # flip, rotation, zoom x, zoom y
  if aug.flip:  # Exact mirror; commutes in distribution with the symmetric ops that follow.
    x = tf.where((g[:, 0] < 0.5)[:, None, None, None], tf.reverse(x, axis=[2]), x)
  x = normalize(x, mean, std)
  rrc_u = uni('rrc', 22) if aug.random_resized_crop and not sized else None
  return resample(x, aug, g, rrc_u)


def resample(x, aug: Aug, g, rrc_u):
  """Bilinear resampling to S x S: Keras Resize -> RandomRotation -> RandomZoom in one go.

  The output pixel (i, j) samples the source at c + diag(sx, sy) @ Rot(theta) @ ((j, i) - c_out)
  (rotation and zoom about the centre, reflect fill), i.e. the three Keras layers composed so the
  image is resampled once. Without rotation this is exact and uses tf.image.resize or one
  crop_and_resize; with rotation it uses the two-pass warp below (~2x less CPU than
  ImageProjectiveTransformV3 at 224px on CPU). x [b,H,W,3] float32; g [b,4]; rrc_u [b,22] | None.
  """
  b, h, w, _ = x.shape
  S = aug.image_size
  if rrc_u is None and not aug.rotation and not aug.zoom:
    return x if (h, w) == (S, S) else tf.image.resize(x, (S, S), 'bilinear', antialias=False)
  ones = tf.ones([b])
  if rrc_u is not None:
    cx, cy, bw, bh = rrc_boxes(rrc_u, h, w, aug.rrc_min_scale)
  else:
    cx, cy, bw, bh = ones * (w - 1) / 2, ones * (h - 1) / 2, ones * w, ones * h
  # Source pixels per output pixel along x and y, including the zoom.
  sx = bw / S * (1.0 + (2 * g[:, 2] - 1) * aug.zoom)
  sy = bh / S * (1.0 + (2 * g[:, 3] - 1) * aug.zoom)
  # Reflect padding wide enough for the farthest sample (corner of a zoomed-out, rotated box).
  reach = (1 + aug.zoom) * (math.cos(aug.rotation * 2 * math.pi) +
                            math.sin(aug.rotation * 2 * math.pi))
  pad = min(int(math.ceil(max(h, w) / 2 * (reach - 1) + 0.5)) + 2, h, w)
  xp = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode='SYMMETRIC')  # = reflect fill
  if not aug.rotation:
    return crop_resize(xp, pad, h, w, cx, cy, sx, sy, S)
  theta = (2 * g[:, 1] - 1) * aug.rotation * 2 * math.pi
  return two_pass_warp(xp, pad, cx, cy, sx * tf.cos(theta), -sx * tf.sin(theta),
                        sy * tf.sin(theta), sy * tf.cos(theta), S)


def crop_resize(xp, pad: int, h, w, cx, cy, sx, sy, S: int):
  """Output (i, j) samples the source at (cx + sx (j - c), cy + sy (i - c)), c = (S-1)/2.

  xp: the [b, H, W, C] source reflect-padded by `pad` px; crop_and_resize's corner-aligned boxes
  reproduce the half-pixel-centre mapping exactly.
  """
  half = (S - 1) / 2
  hp = tf.cast(h, tf.float32) + 2 * pad - 1
  wp = tf.cast(w, tf.float32) + 2 * pad - 1
  boxes = tf.stack([(cy - sy * half + pad) / hp, (cx - sx * half + pad) / wp,
                    (cy + sy * half + pad) / hp, (cx + sx * half + pad) / wp], axis=1)
  return tf.image.crop_and_resize(xp, boxes, tf.range(tf.shape(xp)[0]), (S, S))


def two_pass_warp(xp, pad: int, cx, cy, a00, a01, a10, a11, S: int):
  """Affine bilinear warp as two 1-D passes (Catmull-Smith), each a batched crop_and_resize.

  Output (i, j) should sample the source at x = a00 (j - c) + a01 (i - c) + cx,
  y = a10 (j - c) + a11 (i - c) + cy (c = (S-1)/2). Pass 1 resamples every source column w along
  y, at the rows where output row i's source line crosses that column; pass 2 resamples every
  output row along x. Exact for axis-aligned maps; for rotations the x-interpolation uses the
  neighbouring rows' crossing points instead of the exact sample (within tan(theta) px):
  mean |diff| ~0.1/255 vs ImageProjectiveTransformV3 for the seed-000 recipe.
  Needs a00 != 0 (|theta| < 90 deg). xp: source padded by `pad` px (reflect), [b, Hp, Wp, C].
  """
  b, hp, wp, ch = xp.shape
  c = (S - 1) / 2.0
  t0 = cx - (a00 + a01) * c  # source x of output (i, j) = a00 j + a01 i + t0
  t1 = cy - (a10 + a11) * c  # source y = a10 j + a11 i + t1
  # Pass 1: column w (source x = w - pad), y(i) = Y0(w) + k1 i, as crops of 1-px-wide images.
  k1 = a11 - a10 * a01 / a00
  wx = tf.range(wp, dtype=tf.float32) - pad
  y0 = (a10 / a00)[:, None] * (wx[None] - t0[:, None]) + t1[:, None]  # [b, Wp]
  y0 = tf.reshape(y0, [-1]) + pad
  y1 = y0 + tf.repeat(k1, wp) * (S - 1)
  zeros = tf.zeros_like(y0)
  cols = tf.reshape(tf.transpose(xp, [0, 2, 1, 3]), [b * wp, hp, 1, ch])
  boxes = tf.stack([y0 / (hp - 1), zeros, y1 / (hp - 1), zeros], axis=1)
  inter = tf.image.crop_and_resize(cols, boxes, tf.range(b * wp), (S, 1))  # [b*Wp, S, 1, C]
  rows = tf.reshape(tf.transpose(tf.reshape(inter, [b, wp, S, ch]), [0, 2, 1, 3]),
                    [b * S, 1, wp, ch])  # [b*S, 1, Wp, C]
  # Pass 2: output row i, x(j) = a01 i + t0 + a00 j.
  x0 = a01[:, None] * tf.range(S, dtype=tf.float32)[None] + t0[:, None]  # [b, S]
  x0 = tf.reshape(x0, [-1]) + pad
  x1 = x0 + tf.repeat(a00, S) * (S - 1)
  zeros = tf.zeros_like(x0)
  boxes = tf.stack([zeros, x0 / (wp - 1), zeros, x1 / (wp - 1)], axis=1)
  out = tf.image.crop_and_resize(rows, boxes, tf.range(b * S), (1, S))  # [b*S, 1, S, C]
  return tf.reshape(out, [b, S, S, ch])


def normalize(x, mean, std):
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def beta(seed, k, stream, alpha: float):
  """Beta(alpha, alpha) scalar from two stateless gammas."""
  g = tf.random.stateless_gamma([2], seed=seed_pair(seed, k, stream), alpha=alpha)
  return g[0] / (g[0] + g[1])


def mix(images, labels, k, aug: Aug, seed: int, num_classes: int):
  """Mixup / CutMix with soft labels; one lam (and, with both on, one choice) per global batch.

  Partners are adjacent pairs (row r with r xor 1) so mixing never crosses hosts and the mixed
  global batch is the same for any number of hosts (host batch must be even).
  images [b,S,S,3] float32, labels int32 [b] -> images, float32 [b, num_classes].
  """
  b, S = images.shape[0], images.shape[1]
  onehot = tf.one_hot(labels, num_classes, dtype=tf.float32)
  partner = tf.bitwise.bitwise_xor(tf.range(b), 1)

  def mixup():
    lam = beta(seed, k, 'mix_lam', aug.mixup_alpha)
    return lam * images + (1 - lam) * tf.gather(images, partner), lam

  def cutmix():
    lam0 = beta(seed, k, 'cut_lam', aug.cutmix_alpha)
    u = tf.random.stateless_uniform([2], seed=seed_pair(seed, k, 'cutmix_box'))
    cut = tf.cast(tf.round(S * tf.sqrt(1.0 - lam0)), tf.int32)
    cy, cx = tf.cast(u[0] * S, tf.int32), tf.cast(u[1] * S, tf.int32)
    y0, y1 = tf.clip_by_value(cy - cut // 2, 0, S), tf.clip_by_value(cy - cut // 2 + cut, 0, S)
    x0, x1 = tf.clip_by_value(cx - cut // 2, 0, S), tf.clip_by_value(cx - cut // 2 + cut, 0, S)
    r = tf.range(S)
    inside = (((r >= y0) & (r < y1))[:, None] & ((r >= x0) & (r < x1))[None, :])  # [S, S]
    lam = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / float(S * S)
    return tf.where(inside[None, :, :, None], tf.gather(images, partner), images), lam

  if aug.mixup_alpha > 0 and aug.cutmix_alpha > 0:
    choose_cut = tf.random.stateless_uniform([], seed=seed_pair(seed, k, 'mix_choice')) < 0.5
    images, lam = tf.cond(choose_cut, cutmix, mixup)
  else:
    images, lam = cutmix() if aug.cutmix_alpha > 0 else mixup()
  return images, lam * onehot + (1.0 - lam) * tf.gather(onehot, partner)

