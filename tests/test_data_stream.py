"""Tests of vit_jax/data/stream.py: TFDS streaming (data.cache=False) on a real prepared dataset."""

import cifar_fixtures as fx
from data_helpers import assert_same_batches, eval_batches, train_batches
from etils import epath
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vit_jax import data

class TinyRaggedImages(tfds.core.GeneratorBasedBuilder):
  """A real (not mocked) TFDS dataset with images of varying size, prepared offline."""
  VERSION = tfds.core.Version('1.0.0')
  pkg_dir_path = epath.Path(__file__).parent  # tests/ is not a package; TFDS looks for metadata.

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)),
            'label': tfds.features.ClassLabel(num_classes=5)}),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(60, 0), 'test': self._generate_examples(23, 1)}

  def _generate_examples(self, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
      h, w = rng.integers(20, 48, size=2)
      yield i, {'image': rng.integers(0, 256, (h, w, 3), dtype=np.uint8), 'label': i % 5}


def test_tfds_streaming_path(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  TinyRaggedImages(data_dir=data_dir).download_and_prepare()
  config = fx.data_config(dataset='tiny_ragged_images', tfds_data_dir=data_dir, image_size=24)
  with pytest.raises(data.DatasetError, match='cache=False'):
    data.load_data(config)
  config.cache = False
  config.update(dict(random_resized_crop=True, rotation=0.02, zoom=0.1, mixup_alpha=0.2))
  src = data.load_data(config)
  assert src.info.num_classes == 5
  assert src.info.split_sizes == {'train': 54, 'val': 6, 'test': 23}
  a = train_batches(config, 4, batch=8, source=src)
  assert a[0]['image'].shape == (8, 24, 24, 3) and np.isfinite(a[0]['image']).all()
  # Deterministic and resumable: a fresh iterator at step 2 reproduces batches 2 and 3.
  assert_same_batches(a[2:], train_batches(config, 2, batch=8, start_step=2, source=src))
  hosts = [train_batches(config, 2, batch=8, process_index=p, process_count=2, source=src)
           for p in range(2)]
  for k in range(2):
    for key in ('image', 'label'):
      np.testing.assert_array_equal(np.concatenate([h[k][key] for h in hosts]), a[k][key])
  assert a[0]['label'].shape == (8, 5)  # soft labels
  ev = [eval_batches(config, 'test', batch=10, process_index=p, process_count=2, source=src)
        for p in range(2)]
  assert len(ev[0]) == len(ev[1]) == 3
  assert sum(b['mask'].sum() for h in ev for b in h) == 23
  assert data.num_examples(config, 'val', source=src) == 6
