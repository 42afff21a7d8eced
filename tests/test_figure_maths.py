"""The numbers behind the per-run figures, by hand: attention distance, rollout, confusions,
embedding components, similarities and mosaics, and reading the sown attention weights."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import figure_maths


def test_patch_distances_in_pixels():
  d = figure_maths.patch_distances((2, 2), 4)  # centres (2,2) (2,6) (6,2) (6,6)
  np.testing.assert_allclose(d[0], [0, 4, 4, math.sqrt(32)])
  np.testing.assert_allclose(d, d.T)


def test_mean_attention_distance_by_hand():
  d = figure_maths.patch_distances((2, 2), 4)
  tokens = 5  # class token + 4 patches
  uniform = np.full((1, 1, 1, tokens, tokens), 1 / tokens)
  # The class token's share is dropped and the rest renormalised: uniform over the 4 patches.
  expected = (0 + 4 + 4 + math.sqrt(32)) / 4
  np.testing.assert_allclose(figure_maths.mean_attention_distance(uniform, 1, d), [[[expected]]])
  assert figure_maths.uniform_attention_distance(d) == pytest.approx(expected)
  self_only = np.zeros((1, 1, 1, tokens, tokens))
  self_only[..., np.arange(tokens), np.arange(tokens)] = 1
  np.testing.assert_allclose(figure_maths.mean_attention_distance(self_only, 1, d), 0.0)
  # Query patch 0 looks only at patch 3 (distance sqrt 32), the others at themselves.
  a = self_only.copy()
  a[0, 0, 0, 1] = 0
  a[0, 0, 0, 1, 4] = 1
  np.testing.assert_allclose(figure_maths.mean_attention_distance(a, 1, d), [[[math.sqrt(32) / 4]]])


def test_attention_rollout_by_hand():
  a1 = np.array([[0.5, 0.5], [0.0, 1.0]])
  a2 = np.array([[1.0, 0.0], [0.5, 0.5]])
  attention = np.stack([a1, a2])[:, None, None]  # [L=2, B=1, H=1, 2, 2]
  mix = lambda a: (0.5 * a + 0.5 * np.eye(2)) / (0.5 * a + 0.5 * np.eye(2)).sum(-1, keepdims=True)
  expected = mix(a2) @ mix(a1)
  np.testing.assert_allclose(figure_maths.attention_rollout(attention)[0], expected)
  np.testing.assert_allclose(figure_maths.attention_rollout(attention)[0].sum(-1), 1.0)
  # Heads are averaged before the rollout.
  two_heads = np.stack([np.eye(2), np.ones((2, 2)) / 2])[None, None]  # [1, 1, 2, 2, 2]
  np.testing.assert_allclose(figure_maths.attention_rollout(two_heads)[0],
                             mix((np.eye(2) + np.ones((2, 2)) / 2) / 2))


def test_rollout_maps_with_and_without_class_token():
  rollout = np.arange(25, dtype=np.float64).reshape(1, 5, 5) + 1
  with_cls = figure_maths.rollout_maps(rollout, 1, (2, 2))
  np.testing.assert_allclose(with_cls[0], np.array([[2, 3], [4, 5]]) / 5)
  no_cls = figure_maths.rollout_maps(rollout[:, 1:, 1:], 0, (2, 2))
  cols = rollout[0, 1:, 1:].mean(0)
  np.testing.assert_allclose(no_cls[0].ravel(), cols / cols.max())


def test_confusion_matrix_and_top_pairs():
  cm = figure_maths.confusion_matrix([0, 0, 1, 1, 1, 2], [0, 1, 2, 2, 1, 0], 3)
  np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 2], [1, 0, 0]])
  assert figure_maths.top_confusions(cm, 2) == [(1, 2, 2), (0, 1, 1)]


def test_embedding_components_find_the_filters_direction():
  rng = np.random.default_rng(0)
  direction = rng.normal(size=(2, 2, 3))
  kernel = np.einsum('abc,d->abcd', direction, rng.normal(size=16))  # rank one: 16 multiples
  kernel += 1e-4 * rng.normal(size=kernel.shape)
  comps, ratios = figure_maths.embedding_components(kernel, 28)
  assert comps.shape == (12, 2, 2, 3)  # min(28, p*p*c = 12, D - 1 = 15)
  assert ratios[0] > 0.99 and ratios.sum() <= 1 + 1e-9
  cos = abs(np.dot(comps[0].ravel(), direction.ravel())) / np.linalg.norm(direction)
  assert cos == pytest.approx(1.0, abs=1e-3)


def test_similarity_and_mosaics():
  x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]])
  sim = figure_maths.cosine_similarity(x)
  np.testing.assert_allclose(np.diag(sim), 1.0)
  assert sim[0, 3] == pytest.approx(-1.0) and sim[0, 2] == pytest.approx(1 / math.sqrt(2))
  mosaic = figure_maths.similarity_mosaic(sim, (2, 2))
  assert mosaic.shape == (5, 5) and np.isnan(mosaic[2]).all()
  np.testing.assert_allclose(mosaic[:2, :2].ravel(), sim[0])
  image = np.random.default_rng(0).random((8, 8, 3))
  patches = figure_maths.patch_mosaic(image, 4)
  assert patches.shape == (9, 9, 3)
  np.testing.assert_array_equal(patches[5:, 5:], image[4:, 4:])


def test_collect_attention_orders_layers_numerically_and_reads_scans():
  blocks = {f'encoderblock_{i}': {'MultiHeadDotProductAttention_1': {
      'attention_weights': (jnp.full((1, 1, 2, 2), float(i)),)}} for i in (10, 2, 0, 1)}
  stacked = figure_maths.collect_attention({'Transformer': blocks, 'pooled': (jnp.zeros(1),)})
  np.testing.assert_array_equal(stacked[:, 0, 0, 0, 0], [0, 1, 2, 10])
  scanned = {'Transformer': {'encoderblock': {'MultiHeadDotProductAttention_1': {
      'attention_weights': (jnp.ones((3, 1, 1, 2, 2)),)}}}}
  assert figure_maths.collect_attention(scanned).shape == (3, 1, 1, 2, 2)
