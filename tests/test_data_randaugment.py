"""Tests of vit_jax/data/randaugment.py: the op chosen per example, its range and strength."""

import cifar_fixtures as fx
import numpy as np
import tensorflow as tf

from vit_jax.data import randaugment as ra


def _op_uniforms(op_index: int, n: int, sign: float = 1.0):
  """u [n, 2] that makes one layer pick `op_index` with the given sign for every example."""
  u_op = (op_index + 0.5) / len(ra.OPS)
  return tf.constant([[u_op, 0.75 if sign > 0 else 0.25]] * n, tf.float32)


def test_every_op_keeps_shape_and_pixel_range():
  x = tf.constant(fx.make_examples(len(ra.OPS), 10)[0], tf.float32)
  u = tf.constant([[(i + 0.5) / len(ra.OPS), 0.75] for i in range(len(ra.OPS))], tf.float32)
  out = ra.randaugment(x, u, layers=1, magnitude=10).numpy()
  assert out.shape == x.shape and np.isfinite(out).all()
  assert out.min() >= 0 and out.max() <= 255
  changed = np.abs(out - x.numpy()).reshape(len(ra.OPS), -1).max(1) > 1e-3
  assert not changed[ra.OPS.index('Identity')]
  assert changed.sum() >= len(ra.OPS) - 2  # e.g. AutoContrast leaves full-range images alone


def test_identity_and_full_solarize_are_exact():
  x = tf.constant(fx.make_examples(4, 10)[0], tf.float32)
  same = ra.randaugment(x, _op_uniforms(ra.OPS.index('Identity'), 4), layers=1, magnitude=10)
  np.testing.assert_array_equal(same.numpy(), x.numpy())
  inverted = ra.randaugment(x, _op_uniforms(ra.OPS.index('Solarize'), 4), layers=1, magnitude=10)
  np.testing.assert_array_equal(inverted.numpy(), 255.0 - x.numpy())  # threshold 0 at level 1
