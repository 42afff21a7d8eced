"""Tests of vit_jax/data/splits.py: the content-keyed val holdout and the channel statistics."""

import cifar_fixtures as fx
from data_helpers import N_TEST, N_TRAIN
from data_helpers import archives, data100, source  # noqa: F401  (pytest fixtures)
import numpy as np

from vit_jax import data

def test_info_and_eval_splits(source):
  info = source.info
  assert info.num_classes == 100 and info.image_shape == (32, 32, 3)
  assert info.split_sizes == {'train': N_TRAIN - 30, 'val': 30, 'test': N_TEST}
  train = source.split('train').images
  np.testing.assert_allclose(info.mean, train.reshape(-1, 3).mean(0), rtol=1e-6)
  np.testing.assert_allclose(info.std, train.reshape(-1, 3).std(0), rtol=1e-6)


def test_val_split_is_fixed_disjoint_and_independent_of_file_order(tmp_path, data100):
  images, labels = data100['train']
  perm = np.random.default_rng(1).permutation(N_TRAIN)
  a = data.load_data(fx.data_config(archive=fx.write_cifar100_binary(
                     tmp_path / 'a', {'train': (images, labels)}), val_fraction=0.25))
  b = data.load_data(fx.data_config(archive=fx.write_cifar100_binary(
                     tmp_path / 'b', {'train': (images[perm], labels[perm])}), val_fraction=0.25))
  ids = lambda s: set((s.images[:, 0, 0, 1:].astype(int) * [1, 256]).sum(1))
  assert len(a.split('val')) == round(0.25 * N_TRAIN)
  assert ids(a.split('val')) == ids(b.split('val'))  # same images, whatever the file order
  assert not ids(a.split('val')) & ids(a.split('train'))
  assert len(ids(a.split('val')) | ids(a.split('train'))) == N_TRAIN
  other_seed = data.load_data(fx.data_config(archive=a.key['archive'], val_fraction=0.25,
                                           val_split_seed=1))
  assert ids(other_seed.split('val')) != ids(a.split('val'))
  # Not file order: the held-out part is spread over the file.
  assert max(ids(a.split('val'))) > N_TRAIN // 2 and min(ids(a.split('val'))) < N_TRAIN // 2
