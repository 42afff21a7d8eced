"""Shared helpers and fixtures of the tests/test_data_*.py files (one per vit_jax/data module).

Tiny archives from tests/cifar_fixtures.py, one per official format, all holding the same
CIFAR-100 examples; a test module gets the fixtures by importing them by name.
"""

import itertools

import cifar_fixtures as fx
import numpy as np
import pytest

from vit_jax import data

N_TRAIN, N_TEST = 300, 100


def train_batches(config, n, *, batch=32, seed=0, start_step=0, process_index=0, process_count=1,
                  source=None):
  it = data.create_train_iterator(config, global_batch_size=batch, seed=seed,
                                  start_step=start_step, process_index=process_index,
                                  process_count=process_count, source=source)
  return list(itertools.islice(it, n))


def eval_batches(config, split, *, batch, process_index=0, process_count=1, source=None):
  return list(data.create_eval_iterator(config, split, global_batch_size=batch,
                                        process_index=process_index, process_count=process_count,
                                        source=source))


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def unnormalize(images, info):
  """Normalized float images -> the uint8 pixels they came from (exact for unresampled images)."""
  return np.round(images * np.array(info.std) + np.array(info.mean)).astype(np.int64)


@pytest.fixture(scope='module')
def data100():
  return {'train': fx.make_examples(N_TRAIN, 100), 'test': fx.make_examples(N_TEST, 100,
                                                                              start=N_TRAIN)}


@pytest.fixture(scope='module')
def archives(tmp_path_factory, data100):
  """One tiny archive per official format, all holding the same CIFAR-100 examples."""
  root = tmp_path_factory.mktemp('archives')
  data10 = {'train': fx.make_examples(250, 10), 'test': fx.make_examples(50, 10, start=250)}
  return {
      'c100_bin': fx.write_cifar100_binary(root / 'bin', data100),
      'c100_py': fx.write_cifar100_python(root / 'py', data100),
      'c100_bin_dir': fx.write_cifar100_binary(root / 'bindir', data100, kind='dir'),
      'c100_py_tar': fx.write_cifar100_python(root / 'pytar', data100, kind='tar'),
      'c100_train_only': fx.write_cifar100_binary(root / 'trainonly',
                                                  {'train': data100['train']}),
      'c10_bin': fx.write_cifar10_binary(root / 'c10bin', data10),
      'c10_py': fx.write_cifar10_python(root / 'c10py', data10),
      'data10': data10,
  }


@pytest.fixture(scope='module')
def source(archives):
  return data.load_data(fx.data_config(archive=archives['c100_bin']))
