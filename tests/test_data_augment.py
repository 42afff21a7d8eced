"""Tests of vit_jax/data/augment.py: mixup/cutmix labels, each augmentation, exact resampling."""

import math

import cifar_fixtures as fx
from data_helpers import eval_batches, train_batches, unnormalize
from data_helpers import archives, data100, source  # noqa: F401  (pytest fixtures)
import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import augment

@pytest.mark.parametrize('mix', [dict(mixup_alpha=0.4), dict(cutmix_alpha=1.0),
                                 dict(mixup_alpha=0.4, cutmix_alpha=1.0)])
def test_mixup_cutmix_soft_labels(archives, source, mix):
  config = fx.data_config(archive=archives['c100_bin'], **mix)
  plain = train_batches(fx.data_config(archive=archives['c100_bin']), 4, source=source)
  rows = np.arange(32)
  for b, p in zip(train_batches(config, 4, source=source), plain):
    assert b['label'].shape == (32, 100) and b['label'].dtype == np.float32
    assert np.isfinite(b['image']).all()
    np.testing.assert_allclose(b['label'].sum(1), 1.0, rtol=1e-5)
    # Row r mixes its own example with its pair partner r xor 1, with one lam per batch.
    own, partner = p['label'], p['label'].reshape(-1, 2)[:, ::-1].ravel()
    mass = b['label'][rows, own] + np.where(own != partner, b['label'][rows, partner], 0)
    np.testing.assert_allclose(mass, 1.0, rtol=1e-5)
    lam = b['label'][rows, own][own != partner]
    np.testing.assert_allclose(lam, lam[0], rtol=1e-5)


@pytest.mark.parametrize('overrides', [
    dict(flip=True), dict(crop_padding=4), dict(rotation=0.05), dict(zoom=0.2),
    dict(random_resized_crop=True), dict(randaugment_layers=2),
    dict(image_size=48, rotation=0.02, zoom=0.2), dict(image_size=24, random_resized_crop=True)])
def test_each_augmentation_changes_images(archives, source, overrides):
  base = fx.data_config(archive=archives['c100_bin'], flip=False,
                        image_size=overrides.get('image_size', 32))
  config = fx.data_config(archive=archives['c100_bin'], **{'flip': False, **overrides})
  plain, = train_batches(base, 1, source=source)
  aug, = train_batches(config, 1, source=source)
  size = config.image_size
  assert aug['image'].shape == (32, size, size, 3) and np.isfinite(aug['image']).all()
  np.testing.assert_array_equal(aug['label'], plain['label'])
  changed = np.abs(aug['image'] - plain['image']).reshape(32, -1).max(1) > 1e-3
  assert changed.mean() > 0.3
  assert np.abs(aug['image']).max() < 10


@pytest.mark.parametrize('geometry', [dict(), dict(zoom=1e-7), dict(rotation=1e-7)])
def test_train_geometry_without_randomness_equals_eval_resize(archives, source, geometry):
  """The train path's resampling (resize / crop_and_resize / two-pass warp) has no pixel offset."""
  ids = lambda b: (unnormalize(b['image'], source.info)[:, 0, 0, 1:] * [1, 256]).sum(1)
  plain = fx.data_config(archive=archives['c100_bin'], flip=False)
  order_train = np.argsort(ids(train_batches(plain, 1, batch=270, source=source)[0]))
  order_eval = np.argsort(ids(eval_batches(plain, 'train', batch=270, source=source)[0]))
  config = fx.data_config(archive=archives['c100_bin'], flip=False, image_size=56, **geometry)
  train, = train_batches(config, 1, batch=270, source=source)
  ev, = eval_batches(config, 'train', batch=270, source=source)
  np.testing.assert_allclose(train['image'][order_train], ev['image'][order_eval], atol=1e-3)


def test_rotation_two_pass_matches_projective_transform():
  """The fast two-pass warp stays close to a single bilinear ImageProjectiveTransformV3."""
  x = tf.constant(fx.make_examples(8, 10)[0], tf.float32)
  x = tf.image.resize(tf.image.resize(x, (8, 8)), (32, 32))  # smooth images, like photos
  aug = augment.Aug.from_config(fx.data_config(image_size=96, rotation=0.02, zoom=0.2))
  g = tf.random.stateless_uniform([8, 4], seed=[1, 2])
  out = augment.resample(x, aug, g, None)
  theta = (2 * g[:, 1] - 1) * 0.02 * 2 * math.pi
  s = 32 / 96 * (1 + (2 * g[:, 2:] - 1) * 0.2)
  a00, a01 = s[:, 0] * tf.cos(theta), -s[:, 0] * tf.sin(theta)
  a10, a11 = s[:, 1] * tf.sin(theta), s[:, 1] * tf.cos(theta)
  c = 47.5
  t = tf.stack([a00, a01, 15.5 - (a00 + a01) * c, a10, a11, 15.5 - (a10 + a11) * c,
                tf.zeros([8]), tf.zeros([8])], 1)
  ref = tf.raw_ops.ImageProjectiveTransformV3(
      images=x, transforms=t, output_shape=[96, 96], fill_value=0.0, interpolation='BILINEAR',
      fill_mode='REFLECT')
  diff = np.abs(out.numpy() - ref.numpy())
  assert diff.mean() < 0.5 and np.percentile(diff, 99) < 4  # pixel scale 0..255
