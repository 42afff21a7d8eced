"""Per-run figures: confusions.md, and every figure of tiny runs (trained, or initial params)."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cifar_fixtures
import figure_checks
from configs import common
from vit_jax import data
from vit_jax import figures
from vit_jax import models
from vit_jax import study_runs
from vit_jax import train

FIGURES = ('confusion_matrix.png', 'tsne.png', 'patches.png', 'embedding_filters.png',
           'position_embedding_similarity.png', 'attention_distance.png',
           'attention_rollout.png')


# ----------------------------------------------------------------------------- confusions.md


def test_confusions_markdown_lists_the_most_confused_pairs():
  cm = np.array([[1, 1, 0], [0, 1, 2], [1, 0, 0]])  # [true, predicted] counts
  md = figures.confusions_markdown(cm, ['cat', 'dog', 'fox'], 'x')
  assert '| dog | fox | 2 | 66.7 |' in md


# ----------------------------------------------------------------------------- tiny runs


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
    figure_checks.assert_figure(os.path.join(out, name))
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
  source = data.load_data(config.data)
  model = models.create_model(config.model, source.info.num_classes)
  params = jax.device_get(model.init({'params': jax.random.key(0)},
                                     jnp.zeros((1, 8, 8, 3)))['params'])
  restored = figures.Restored(params, model, source, step=0)
  out = str(tmp_path / 'out')
  summary = figures.inspect_restored(restored, config, out, 'gap/seed_0')
  for name in FIGURES:
    figure_checks.assert_figure(os.path.join(out, name))
  assert np.asarray(summary['mean_attention_distance']).shape == (2, 2)
  assert summary['num_examples'] == 40
