"""Tests of vit_jax/data/iterators.py: the train index stream and the eval stream, per host."""

import cifar_fixtures as fx
from data_helpers import (N_TEST, assert_same_batches, eval_batches, train_batches,
                          unnormalize)
from data_helpers import archives, data100, source  # noqa: F401  (pytest fixtures)
import numpy as np
import pytest

from vit_jax import data

def test_stream_pairs_images_with_labels_and_covers_each_epoch(archives, source):
  config = fx.data_config(archive=archives['c100_bin'], flip=False)
  batches = train_batches(config, 3 * 270 // 30, batch=30, source=source)  # 3 epochs of 270
  for b in batches:
    assert b['image'].shape == (30, 32, 32, 3) and b['image'].dtype == np.float32
    assert b['label'].dtype == np.int32
    np.testing.assert_array_equal(fx.label_from_pixels(unnormalize(b['image'], source.info)),
                                  b['label'])
  ids = [unnormalize(b['image'], source.info)[:, 0, 0, 1] for b in batches]
  per_epoch = [np.sort(np.concatenate(ids[e * 9:(e + 1) * 9])) for e in range(3)]
  expected = np.sort(source.split('train').images[:, 0, 0, 1])
  for e in range(3):
    np.testing.assert_array_equal(per_epoch[e], expected)  # each example once per epoch
  assert not np.array_equal(np.concatenate(ids[:9]), np.concatenate(ids[9:18]))  # reshuffled


def test_determinism_and_seed(archives, source):
  config = fx.data_config(archive=archives['c100_bin'], crop_padding=4, zoom=0.2, rotation=0.02,
                          image_size=40, randaugment_layers=2, mixup_alpha=0.2)
  a = train_batches(config, 2, source=source)
  assert_same_batches(a, train_batches(config, 2, source=source))
  b = train_batches(config, 2, seed=1, source=source)
  assert not np.array_equal(a[0]['image'], b[0]['image'])
  assert not np.array_equal(a[0]['label'], b[0]['label'])


def test_resume_equals_uninterrupted_stream(archives, source):
  config = fx.data_config(archive=archives['c100_bin'], crop_padding=4, cutmix_alpha=1.0)
  full = train_batches(config, 12, batch=64, source=source)  # straddles epochs (270 examples)
  assert_same_batches(full[7:], train_batches(config, 5, batch=64, start_step=7, source=source))


@pytest.mark.parametrize('overrides', [dict(), dict(mixup_alpha=0.4, cutmix_alpha=1.0,
                                                    crop_padding=4, rotation=0.03),
                                       dict(class_balanced=True, random_resized_crop=True)])
def test_host_slices_concatenate_to_the_global_batch(archives, source, overrides):
  config = fx.data_config(archive=archives['c100_bin'], **overrides)
  single = train_batches(config, 2, batch=32, start_step=3, source=source)
  hosts = [train_batches(config, 2, batch=32, start_step=3, process_index=p, process_count=4,
                         source=source) for p in range(4)]
  for k in range(2):
    for key in single[k]:
      np.testing.assert_array_equal(
          np.concatenate([h[k][key] for h in hosts]), single[k][key], err_msg=key)


def test_batch_not_divisible_by_process_count(archives, source):
  config = fx.data_config(archive=archives['c100_bin'])
  # Internal invariants here: vit_jax/validation.py reports them to the user (test_validation).
  with pytest.raises(ValueError, match='multiple of the number of processes'):
    data.create_train_iterator(config, global_batch_size=30, seed=0, process_index=0,
                               process_count=4, source=source)
  with pytest.raises(ValueError, match='must be even'):
    data.create_train_iterator(fx.data_config(archive=archives['c100_bin'], mixup_alpha=0.2),
                               global_batch_size=12, seed=0, process_index=0, process_count=4,
                               source=source)


def test_class_balanced_sampling(tmp_path):
  # Class c has 10 * (c + 1) examples: 10, 20, ..., 100.
  labels = np.repeat(np.arange(10), 10 * np.arange(1, 11))
  images, labels = fx.make_examples(len(labels), 10, labels=labels)
  path = fx.write_cifar10_binary(tmp_path, {'train': (images, labels)})
  counts = {}
  for balanced in (False, True):
    config = fx.data_config(archive=path, dataset='cifar10', val_fraction=0.0,
                            class_balanced=balanced)
    batches = train_batches(config, 20, batch=100)
    counts[balanced] = np.bincount(np.concatenate([b['label'] for b in batches]), minlength=10)
  assert counts[False][9] > 5 * counts[False][0]
  assert counts[True].min() > 150 and counts[True].max() < 250  # 200 expected per class


@pytest.mark.parametrize('process_count', [1, 3])
def test_eval_covers_every_example_once(archives, source, process_count):
  config = fx.data_config(archive=archives['c100_bin'])
  batch = 48 if process_count == 1 else 42  # 100 examples: a padded last batch either way
  hosts = [eval_batches(config, 'test', batch=batch, process_index=p,
                        process_count=process_count, source=source)
           for p in range(process_count)]
  assert len({len(h) for h in hosts}) == 1  # same number of batches on every host
  ids, labels = [], []
  for h in hosts:
    for b in h:
      keep = b['mask'] == 1
      assert b['mask'].dtype == np.float32 and b['label'].dtype == np.int32
      ids.append(unnormalize(b['image'][keep], source.info)[:, 0, 0, 1])
      labels.append(b['label'][keep])
      np.testing.assert_array_equal(
          fx.label_from_pixels(unnormalize(b['image'][keep], source.info)), b['label'][keep])
  ids = np.sort(np.concatenate(ids))
  np.testing.assert_array_equal(ids, np.sort(source.split('test').images[:, 0, 0, 1]))
  assert data.num_examples(fx.data_config(archive=archives['c100_bin']), 'test',
                           source=source) == N_TEST


def test_eval_is_deterministic_and_val_sized(archives, source):
  config = fx.data_config(archive=archives['c100_bin'], image_size=48)
  a = eval_batches(config, 'val', batch=16, source=source)
  assert_same_batches(a, eval_batches(config, 'val', batch=16, source=source))
  assert sum(b['mask'].sum() for b in a) == 30 and len(a) == 2
  assert a[0]['image'].shape == (16, 48, 48, 3)
