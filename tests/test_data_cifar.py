"""Tests of vit_jax/data/cifar.py: the official archive formats read back exactly; damage named."""

import os

import cifar_fixtures as fx
from data_helpers import N_TRAIN, assert_same_batches, eval_batches, train_batches
from data_helpers import archives, data100  # noqa: F401  (pytest fixtures)
import numpy as np
import pytest

from vit_jax import data

@pytest.mark.parametrize('fmt', ['c100_bin', 'c100_py', 'c100_bin_dir', 'c100_py_tar'])
def test_cifar100_formats_read_back_exactly(archives, data100, fmt):
  splits, names = data.read_cifar_archive(archives[fmt], 'cifar100', strict_counts=False)
  assert names == tuple(f'class_{i:03d}' for i in range(100))
  for split in ('train', 'test'):
    np.testing.assert_array_equal(splits[split].images, data100[split][0])  # HWC layout
    np.testing.assert_array_equal(splits[split].labels, data100[split][1])
    np.testing.assert_array_equal(fx.label_from_pixels(splits[split].images),
                                  splits[split].labels)


def test_extracted_folder_or_its_parent(archives, data100):
  folder = archives['c100_bin_dir']
  for path in (folder, os.path.dirname(folder)):
    splits, _ = data.read_cifar_archive(path, 'cifar100', strict_counts=False)
    np.testing.assert_array_equal(splits['train'].images, data100['train'][0])


@pytest.mark.parametrize('fmt', ['c10_bin', 'c10_py'])
def test_cifar10_formats_read_back_exactly(archives, fmt):
  splits, names = data.read_cifar_archive(archives[fmt], 'cifar10', strict_counts=False)
  assert names == tuple(f'class_{i:03d}' for i in range(10))
  for split in ('train', 'test'):
    np.testing.assert_array_equal(splits[split].images, archives['data10'][split][0])
    np.testing.assert_array_equal(splits[split].labels, archives['data10'][split][1])


def test_dataset_mismatch_is_a_clear_error(archives):
  with pytest.raises(data.DatasetError, match=r'holds CIFAR10 .*dataset=cifar10'):
    data.load_data(fx.data_config(archive=archives['c10_bin'], dataset='cifar100'))


def test_strict_counts_checks_official_record_count(archives):
  with pytest.raises(data.DatasetError, match=r'train.bin .* has 300 records; .* has 50000.*'
                                            r'strict_counts=False'):
    data.load_data(fx.data_config(archive=archives['c100_bin'], strict_counts=True))


def test_truncated_gzip_names_file_and_record_counts(archives, tmp_path):
  bad = fx.truncate(archives['c100_bin'], 0.5, dest=str(tmp_path / 'cut.tar.gz'))
  with pytest.raises(data.DatasetError) as e:
    data.load_data(fx.data_config(archive=bad))
  msg = str(e.value)
  assert 'cut.tar.gz' in msg and 'truncated or corrupt' in msg
  assert 'cifar-100-binary/train.bin' in msg and f'of {N_TRAIN} records' in msg


def test_partial_binary_record_is_corrupt(archives, tmp_path, data100):
  folder = fx.write_cifar100_binary(tmp_path, data100, kind='dir')
  fx.truncate(os.path.join(folder, 'train.bin'), 0.999, dest=os.path.join(folder, 'train.bin'))
  with pytest.raises(data.DatasetError, match=rf'train.bin is truncated .* {N_TRAIN - 1} whole '
                                            r'3074-byte records \+ \d+ extra bytes'):
    data.load_data(fx.data_config(archive=folder))


def test_python_pickle_with_mismatched_arrays_is_corrupt(tmp_path, data100):
  images, labels = data100['train']
  path = fx.write_cifar100_python(tmp_path, {'train': (images, labels[:-1].tolist() + [])})
  with pytest.raises(data.DatasetError,
                     match=r'cifar-100-python/train in .* is corrupt: 300 images but 299 labels'):
    data.load_data(fx.data_config(archive=path))


def test_pickle_with_code_is_refused(tmp_path):
  import pickle
  folder = tmp_path / 'cifar-100-python'
  folder.mkdir()
  (folder / 'train').write_bytes(pickle.dumps({b'data': os.system}))
  with pytest.raises(data.DatasetError, match='unexpected object'):
    data.load_data(fx.data_config(archive=str(folder)))


def test_missing_split_of_archive(archives):
  config = fx.data_config(archive=archives['c100_train_only'], val_fraction=0.1)
  src = data.load_data(config)
  assert src.info.split_sizes == {'train': 270, 'val': 30}
  with pytest.raises(data.DatasetError, match=r"split 'test' is not available in archive .*"
                                            r"has the splits \['train'\]"):
    eval_batches(config, 'test', batch=50, source=src)


def test_missing_archive_and_non_cifar_folder(tmp_path):
  with pytest.raises(data.DatasetError, match='does not exist.*cifar-100-python.tar.gz'):
    data.load_data(fx.data_config(archive=str(tmp_path / 'nope.tar.gz')))
  with pytest.raises(data.DatasetError, match='contains no CIFAR data files'):
    data.load_data(fx.data_config(archive=str(tmp_path)))


def test_archive_formats_give_identical_streams(archives):
  config = lambda name: fx.data_config(archive=archives[name], crop_padding=4, rotation=0.05)
  streams = [train_batches(config(name), 2) for name in ('c100_bin', 'c100_py', 'c100_bin_dir')]
  assert_same_batches(streams[0], streams[1])
  assert_same_batches(streams[0], streams[2])
