"""Tests of vit_jax/data/tfds.py: TFDS in memory equals the archive; missing or offline data."""

import socket

import cifar_fixtures as fx
from data_helpers import assert_same_batches, eval_batches, train_batches
from data_helpers import archives, data100  # noqa: F401  (pytest fixtures)
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax import data

def _as_dataset_from(splits):
  """A mock `_as_dataset` that serves the given arrays as TFDS cifar100 examples."""

  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
    del self, decoders, read_config, shuffle_files, kwargs
    images, labels = splits[split]
    return tf.data.Dataset.from_tensor_slices({
        'id': tf.constant([f'train_{i}' for i in range(len(labels))]),
        'image': images, 'label': labels.astype(np.int64),
        'coarse_label': (labels // 5).astype(np.int64)})

  return as_dataset


@pytest.fixture
def hosts_resolve(monkeypatch):
  """tfds.testing.mock_data replaces the download, not the offline DNS pre-check before it."""
  monkeypatch.setattr(data.tfds, '_unresolvable_download_host', lambda builder: None)


@pytest.mark.usefixtures('hosts_resolve')
def test_tfds_in_memory_matches_archive_stream(archives, data100):
  archive_config = fx.data_config(archive=archives['c100_bin'], crop_padding=4, image_size=40,
                                  rotation=0.02)
  tfds_config = fx.data_config(crop_padding=4, image_size=40, rotation=0.02)
  with tfds.testing.mock_data(as_dataset_fn=_as_dataset_from(data100)):
    src = data.load_data(tfds_config)
    assert src.info.num_classes == 100  # from the TFDS features
    assert_same_batches(train_batches(tfds_config, 2, source=src),
                        train_batches(archive_config, 2))
    assert_same_batches(eval_batches(tfds_config, 'test', batch=64, source=src),
                        eval_batches(archive_config, 'test', batch=64))


@pytest.mark.usefixtures('hosts_resolve')
def test_tfds_random_mock_data(tmp_path):
  config = fx.data_config(dataset='cifar10', image_size=32, val_fraction=0.2)
  with tfds.testing.mock_data(num_examples=40):
    info = data.get_dataset_info(config)
    assert info.num_classes == 10 and info.split_sizes['train'] == 32
    batch, = train_batches(config, 1, batch=8)
    assert batch['image'].shape == (8, 32, 32, 3) and (batch['label'] < 10).all()


def test_missing_tfds_dataset_names_both_fixes(tmp_path, monkeypatch):
  attempts = []

  def no_network(self, *args, **kwargs):
    attempts.append(self.name)
    raise ConnectionError('no network here')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_network)
  monkeypatch.setattr(data.tfds, '_unresolvable_download_host', lambda builder: None)  # DNS answers
  config = fx.data_config(tfds_data_dir=str(tmp_path / 'empty'))
  with pytest.raises(data.DatasetError) as e:
    data.get_dataset_info(config)
  msg = str(e.value)
  assert attempts == ['cifar100'], 'a missing dataset is downloaded when tfds_download is on'
  assert 'download failed: ConnectionError: no network here' in msg
  assert "'cifar100' is not prepared in" in msg and str(tmp_path / 'empty') in msg
  assert '--config.data.tfds_data_dir=' in msg and '--config.data.archive=' in msg
  assert 'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz' in msg
  with pytest.raises(data.DatasetError, match='not a TFDS dataset name'):
    data.get_dataset_info(fx.data_config(dataset='no_such_dataset_xyz'))
  config.tfds_download = False
  with pytest.raises(data.DatasetError, match='tfds_download=False'):
    data.get_dataset_info(config)
  assert attempts == ['cifar100']


def test_offline_fails_fast_without_trying_the_download(tmp_path, monkeypatch):
  """A download host that does not resolve stops at once, naming the host and both fixes."""
  attempts = []
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      lambda self, *a, **k: attempts.append(self.name))
  looked_up = []

  def no_dns(host, *args, **kwargs):
    looked_up.append(host)
    raise socket.gaierror(-2, 'Name or service not known')

  monkeypatch.setattr(socket, 'getaddrinfo', no_dns)
  with pytest.raises(data.DatasetError) as e:
    data.get_dataset_info(fx.data_config(tfds_data_dir=str(tmp_path / 'empty')))
  msg = str(e.value)
  assert attempts == [], 'no download is attempted when the host does not resolve'
  assert looked_up == ['www.cs.toronto.edu']
  assert 'the download host www.cs.toronto.edu does not resolve' in msg
  assert '--config.data.tfds_data_dir=' in msg and '--config.data.archive=' in msg
