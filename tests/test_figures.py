"""Per-run inspection: the attention / embedding maths by hand, and figures from tiny runs."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cifar_fixtures
from configs import common
from vit_jax import input_pipeline
from vit_jax import figures
from vit_jax import models
from vit_jax import study_runs
from vit_jax import train

MIN_FIGURE_PIXELS = (300, 250)  # (width, height)
FIGURES = ('confusion_matrix.png', 'tsne.png', 'patches.png', 'embedding_filters.png',
           'position_embedding_similarity.png', 'attention_distance.png',
           'attention_rollout.png')


# ----------------------------------------------------------------------------- the maths


def test_patch_distances_in_pixels():
  d = figures.patch_distances((2, 2), 4)  # centres (2,2) (2,6) (6,2) (6,6)
  np.testing.assert_allclose(d[0], [0, 4, 4, math.sqrt(32)])
  np.testing.assert_allclose(d, d.T)


def test_mean_attention_distance_by_hand():
  d = figures.patch_distances((2, 2), 4)
  tokens = 5  # class token + 4 patches
  uniform = np.full((1, 1, 1, tokens, tokens), 1 / tokens)
  # The class token's share is dropped and the rest renormalised: uniform over the 4 patches.
  expected = (0 + 4 + 4 + math.sqrt(32)) / 4
  np.testing.assert_allclose(figures.mean_attention_distance(uniform, 1, d), [[[expected]]])
  assert figures.uniform_attention_distance(d) == pytest.approx(expected)
  self_only = np.zeros((1, 1, 1, tokens, tokens))
  self_only[..., np.arange(tokens), np.arange(tokens)] = 1
  np.testing.assert_allclose(figures.mean_attention_distance(self_only, 1, d), 0.0)
  # Query patch 0 looks only at patch 3 (distance sqrt 32), the others at themselves.
  a = self_only.copy()
  a[0, 0, 0, 1] = 0
  a[0, 0, 0, 1, 4] = 1
  np.testing.assert_allclose(figures.mean_attention_distance(a, 1, d), [[[math.sqrt(32) / 4]]])


def test_attention_rollout_by_hand():
  a1 = np.array([[0.5, 0.5], [0.0, 1.0]])
  a2 = np.array([[1.0, 0.0], [0.5, 0.5]])
  attention = np.stack([a1, a2])[:, None, None]  # [L=2, B=1, H=1, 2, 2]
  mix = lambda a: (0.5 * a + 0.5 * np.eye(2)) / (0.5 * a + 0.5 * np.eye(2)).sum(-1, keepdims=True)
  expected = mix(a2) @ mix(a1)
  np.testing.assert_allclose(figures.attention_rollout(attention)[0], expected)
  np.testing.assert_allclose(figures.attention_rollout(attention)[0].sum(-1), 1.0)
  # Heads are averaged before the rollout.
  two_heads = np.stack([np.eye(2), np.ones((2, 2)) / 2])[None, None]  # [1, 1, 2, 2, 2]
  np.testing.assert_allclose(figures.attention_rollout(two_heads)[0],
                             mix((np.eye(2) + np.ones((2, 2)) / 2) / 2))


def test_rollout_maps_with_and_without_class_token():
  rollout = np.arange(25, dtype=np.float64).reshape(1, 5, 5) + 1
  with_cls = figures.rollout_maps(rollout, 1, (2, 2))
  np.testing.assert_allclose(with_cls[0], np.array([[2, 3], [4, 5]]) / 5)
  no_cls = figures.rollout_maps(rollout[:, 1:, 1:], 0, (2, 2))
  cols = rollout[0, 1:, 1:].mean(0)
  np.testing.assert_allclose(no_cls[0].ravel(), cols / cols.max())


def test_confusion_matrix_and_top_pairs():
  cm = figures.confusion_matrix([0, 0, 1, 1, 1, 2], [0, 1, 2, 2, 1, 0], 3)
  np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 2], [1, 0, 0]])
  assert figures.top_confusions(cm, 2) == [(1, 2, 2), (0, 1, 1)]
  md = figures.confusions_markdown(cm, ['cat', 'dog', 'fox'], 'x')
  assert '| dog | fox | 2 | 66.7 |' in md


def test_embedding_components_find_the_filters_direction():
  rng = np.random.default_rng(0)
  direction = rng.normal(size=(2, 2, 3))
  kernel = np.einsum('abc,d->abcd', direction, rng.normal(size=16))  # rank one: 16 multiples
  kernel += 1e-4 * rng.normal(size=kernel.shape)
  comps, ratios = figures.embedding_components(kernel, 28)
  assert comps.shape == (12, 2, 2, 3)  # min(28, p*p*c = 12, D - 1 = 15)
  assert ratios[0] > 0.99 and ratios.sum() <= 1 + 1e-9
  cos = abs(np.dot(comps[0].ravel(), direction.ravel())) / np.linalg.norm(direction)
  assert cos == pytest.approx(1.0, abs=1e-3)


def test_similarity_and_mosaics():
  x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]])
  sim = figures.cosine_similarity(x)
  np.testing.assert_allclose(np.diag(sim), 1.0)
  assert sim[0, 3] == pytest.approx(-1.0) and sim[0, 2] == pytest.approx(1 / math.sqrt(2))
  mosaic = figures.similarity_mosaic(sim, (2, 2))
  assert mosaic.shape == (5, 5) and np.isnan(mosaic[2]).all()
  np.testing.assert_allclose(mosaic[:2, :2].ravel(), sim[0])
  image = np.random.default_rng(0).random((8, 8, 3))
  patches = figures.patch_mosaic(image, 4)
  assert patches.shape == (9, 9, 3)
  np.testing.assert_array_equal(patches[5:, 5:], image[4:, 4:])


def test_collect_attention_orders_layers_numerically_and_reads_scans():
  blocks = {f'encoderblock_{i}': {'MultiHeadDotProductAttention_1': {
      'attention_weights': (jnp.full((1, 1, 2, 2), float(i)),)}} for i in (10, 2, 0, 1)}
  stacked = figures.collect_attention({'Transformer': blocks, 'pooled': (jnp.zeros(1),)})
  np.testing.assert_array_equal(stacked[:, 0, 0, 0, 0], [0, 1, 2, 10])
  scanned = {'Transformer': {'encoderblock': {'MultiHeadDotProductAttention_1': {
      'attention_weights': (jnp.ones((3, 1, 1, 2, 2)),)}}}}
  assert figures.collect_attention(scanned).shape == (3, 1, 1, 2, 2)


# ----------------------------------------------------------------------------- tiny runs


def _assert_png(path):
  from matplotlib import image
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n', f'{path} is not a PNG'
  height, width = image.imread(path).shape[:2]
  assert width >= MIN_FIGURE_PIXELS[0] and height >= MIN_FIGURE_PIXELS[1], (path, width, height)


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
  """CIFAR-10 (10 class names: a readable confusion matrix, and a fast one)."""
  return cifar_fixtures.write_cifar10_binary(
      str(tmp_path_factory.mktemp('data')), {'train': cifar_fixtures.make_examples(160, 10)})


def _config(archive, **model):
  config = common.get_config()
  config.data = cifar_fixtures.data_config(dataset='cifar10', archive=archive, image_size=8,
                                           val_fraction=0.25)
  config.model.update(patch_size=4, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=16)
  config.model.update(model)
  config.update(batch_size=16, eval_batch_size=16, total_steps=4, warmup_steps=1, log_every=2,
                eval_every=4, checkpoint_every=4, async_checkpoints=False)
  return config


@pytest.fixture(autouse=True)
def fast_tsne(monkeypatch):
  monkeypatch.setattr(figures, 'TSNE_ITERATIONS', 250)


def test_inspect_a_trained_run(archive, tmp_path):
  workdir = str(tmp_path / 'study' / 'pre' / 'seed_0')
  train.train_and_evaluate(_config(archive, norm_placement='pre'), workdir)

  summary = figures.inspect_run(workdir)
  out = os.path.join(workdir, 'inspect')
  for name in FIGURES:
    _assert_png(os.path.join(out, name))
  with open(os.path.join(out, 'inspect.json')) as f:
    saved = json.load(f)
  assert saved['figures'] == list(FIGURES) + ['confusions.md']
  assert os.path.exists(os.path.join(out, 'confusions.md'))
  # The restored model reproduces the run's own last validation line.
  val = study_runs.read_metrics(os.path.join(workdir, 'metrics.jsonl'))['val'][-1]
  assert saved['step'] == val['step'] == 4
  assert saved['num_examples'] == val['num_examples'] == 40
  assert saved['top1'] == pytest.approx(val['top1'], abs=1e-6)
  distance = np.asarray(saved['mean_attention_distance'])
  assert distance.shape == (2, 2) and np.all(distance > 0) and np.all(distance < 8 * math.sqrt(2))
  assert 'source' in summary

  with pytest.raises(FileNotFoundError, match='--archive'):
    figures.inspect_run(workdir, archive=str(tmp_path / 'moved.tar.gz'))


def test_figures_without_class_token_scanned_with_fixed_posemb(archive, tmp_path):
  """classifier='gap', posemb='sincos2d', scan=True: no cls token, no learned table, stacked
  attention; initial parameters are enough to draw every figure."""
  config = _config(archive, classifier='gap', posemb='sincos2d', scan=True, hidden_size=16)
  source = input_pipeline.load_data(config.data)
  model = models.create_model(config.model, source.info.num_classes)
  params = jax.device_get(model.init({'params': jax.random.key(0)},
                                     jnp.zeros((1, 8, 8, 3)))['params'])
  restored = figures.Restored(params, model, source, step=0)
  out = str(tmp_path / 'out')
  summary = figures.inspect_restored(restored, config, out, 'gap/seed_0')
  for name in FIGURES:
    _assert_png(os.path.join(out, name))
  assert np.asarray(summary['mean_attention_distance']).shape == (2, 2)
  assert summary['num_examples'] == 40
