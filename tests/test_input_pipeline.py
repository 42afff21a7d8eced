"""Tests of vit_jax/input_pipeline.py on tiny archives written by tests/cifar_fixtures.py."""

import itertools
import math
import os
import socket

import cifar_fixtures as fx
from etils import epath
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax import input_pipeline as ip

N_TRAIN, N_TEST = 300, 100


def train_batches(config, n, *, batch=32, seed=0, start_step=0, process_index=0, process_count=1,
                  source=None):
  it = ip.create_train_iterator(config, global_batch_size=batch, seed=seed, start_step=start_step,
                                process_index=process_index, process_count=process_count,
                                source=source)
  return list(itertools.islice(it, n))


def eval_batches(config, split, *, batch, process_index=0, process_count=1, source=None):
  return list(ip.create_eval_iterator(config, split, global_batch_size=batch,
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
  return ip.load_data(fx.data_config(archive=archives['c100_bin']))


# ------------------------------------------------------------------------------ archive readers


@pytest.mark.parametrize('fmt', ['c100_bin', 'c100_py', 'c100_bin_dir', 'c100_py_tar'])
def test_cifar100_formats_read_back_exactly(archives, data100, fmt):
  splits, names = ip.read_cifar_archive(archives[fmt], 'cifar100', strict_counts=False)
  assert names == tuple(f'class_{i:03d}' for i in range(100))
  for split in ('train', 'test'):
    np.testing.assert_array_equal(splits[split].images, data100[split][0])  # HWC layout
    np.testing.assert_array_equal(splits[split].labels, data100[split][1])
    np.testing.assert_array_equal(fx.label_from_pixels(splits[split].images),
                                  splits[split].labels)


def test_extracted_folder_or_its_parent(archives, data100):
  folder = archives['c100_bin_dir']
  for path in (folder, os.path.dirname(folder)):
    splits, _ = ip.read_cifar_archive(path, 'cifar100', strict_counts=False)
    np.testing.assert_array_equal(splits['train'].images, data100['train'][0])


@pytest.mark.parametrize('fmt', ['c10_bin', 'c10_py'])
def test_cifar10_formats_read_back_exactly(archives, fmt):
  splits, names = ip.read_cifar_archive(archives[fmt], 'cifar10', strict_counts=False)
  assert names == tuple(f'class_{i:03d}' for i in range(10))
  for split in ('train', 'test'):
    np.testing.assert_array_equal(splits[split].images, archives['data10'][split][0])
    np.testing.assert_array_equal(splits[split].labels, archives['data10'][split][1])


def test_dataset_mismatch_is_a_clear_error(archives):
  with pytest.raises(ip.DatasetError, match=r'holds CIFAR10 .*dataset=cifar10'):
    ip.load_data(fx.data_config(archive=archives['c10_bin'], dataset='cifar100'))


def test_strict_counts_checks_official_record_count(archives):
  with pytest.raises(ip.DatasetError, match=r'train.bin .* has 300 records; .* has 50000.*'
                                            r'strict_counts=False'):
    ip.load_data(fx.data_config(archive=archives['c100_bin'], strict_counts=True))


def test_truncated_gzip_names_file_and_record_counts(archives, tmp_path):
  bad = fx.truncate(archives['c100_bin'], 0.5, dest=str(tmp_path / 'cut.tar.gz'))
  with pytest.raises(ip.DatasetError) as e:
    ip.load_data(fx.data_config(archive=bad))
  msg = str(e.value)
  assert 'cut.tar.gz' in msg and 'truncated or corrupt' in msg
  assert 'cifar-100-binary/train.bin' in msg and f'of {N_TRAIN} records' in msg


def test_partial_binary_record_is_corrupt(archives, tmp_path, data100):
  folder = fx.write_cifar100_binary(tmp_path, data100, kind='dir')
  fx.truncate(os.path.join(folder, 'train.bin'), 0.999, dest=os.path.join(folder, 'train.bin'))
  with pytest.raises(ip.DatasetError, match=rf'train.bin is truncated .* {N_TRAIN - 1} whole '
                                            r'3074-byte records \+ \d+ extra bytes'):
    ip.load_data(fx.data_config(archive=folder))


def test_python_pickle_with_mismatched_arrays_is_corrupt(tmp_path, data100):
  images, labels = data100['train']
  path = fx.write_cifar100_python(tmp_path, {'train': (images, labels[:-1].tolist() + [])})
  with pytest.raises(ip.DatasetError,
                     match=r'cifar-100-python/train in .* is corrupt: 300 images but 299 labels'):
    ip.load_data(fx.data_config(archive=path))


def test_pickle_with_code_is_refused(tmp_path):
  import pickle
  folder = tmp_path / 'cifar-100-python'
  folder.mkdir()
  (folder / 'train').write_bytes(pickle.dumps({b'data': os.system}))
  with pytest.raises(ip.DatasetError, match='unexpected object'):
    ip.load_data(fx.data_config(archive=str(folder)))


def test_missing_split_of_archive(archives):
  config = fx.data_config(archive=archives['c100_train_only'], val_fraction=0.1)
  src = ip.load_data(config)
  assert src.info.split_sizes == {'train': 270, 'val': 30}
  with pytest.raises(ip.DatasetError, match=r"split 'test' is not available in archive .*"
                                            r"has the splits \['train'\]"):
    eval_batches(config, 'test', batch=50, source=src)


def test_missing_archive_and_non_cifar_folder(tmp_path):
  with pytest.raises(ip.DatasetError, match='does not exist.*cifar-100-python.tar.gz'):
    ip.load_data(fx.data_config(archive=str(tmp_path / 'nope.tar.gz')))
  with pytest.raises(ip.DatasetError, match='contains no CIFAR data files'):
    ip.load_data(fx.data_config(archive=str(tmp_path)))


# ------------------------------------------------------------------------------ splits and info


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
  a = ip.load_data(fx.data_config(archive=fx.write_cifar100_binary(
      tmp_path / 'a', {'train': (images, labels)}), val_fraction=0.25))
  b = ip.load_data(fx.data_config(archive=fx.write_cifar100_binary(
      tmp_path / 'b', {'train': (images[perm], labels[perm])}), val_fraction=0.25))
  ids = lambda s: set((s.images[:, 0, 0, 1:].astype(int) * [1, 256]).sum(1))
  assert len(a.split('val')) == round(0.25 * N_TRAIN)
  assert ids(a.split('val')) == ids(b.split('val'))  # same images, whatever the file order
  assert not ids(a.split('val')) & ids(a.split('train'))
  assert len(ids(a.split('val')) | ids(a.split('train'))) == N_TRAIN
  other_seed = ip.load_data(fx.data_config(archive=a.key['archive'], val_fraction=0.25,
                                           val_split_seed=1))
  assert ids(other_seed.split('val')) != ids(a.split('val'))
  # Not file order: the held-out part is spread over the file.
  assert max(ids(a.split('val'))) > N_TRAIN // 2 and min(ids(a.split('val'))) < N_TRAIN // 2


def test_source_must_match_config(archives, source):
  with pytest.raises(ValueError, match='val_fraction'):
    ip.get_dataset_info(fx.data_config(archive=archives['c100_bin'], val_fraction=0.2),
                        source=source)


def test_validate_data_config():
  assert ip.validate_data_config(fx.data_config()) == []
  bad = fx.data_config(val_fraction=1.0, crop_padding=2, random_resized_crop=True,
                       mixup_alpha=-1.0, image_size=0, num_parallel_calls=0, rotation=0.2)
  problems = '\n'.join(ip.validate_data_config(bad))
  for field in ('val_fraction', 'crop_padding', 'rotation', 'mixup_alpha', 'image_size',
                'num_parallel_calls'):
    assert f'data.{field}=' in problems
  assert ip.validate_data_config(fx.data_config(archive='x.tar.gz', dataset='mnist'))
  with pytest.raises(ip.DatasetError, match='Invalid data config'):
    ip.load_data(bad)


# ------------------------------------------------------------------------------ train stream


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


def test_archive_formats_give_identical_streams(archives):
  config = lambda name: fx.data_config(archive=archives[name], crop_padding=4, rotation=0.05)
  streams = [train_batches(config(name), 2) for name in ('c100_bin', 'c100_py', 'c100_bin_dir')]
  assert_same_batches(streams[0], streams[1])
  assert_same_batches(streams[0], streams[2])


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
  with pytest.raises(ip.DatasetError, match='multiple of the number of processes'):
    ip.create_train_iterator(config, global_batch_size=30, seed=0, process_index=0,
                             process_count=4, source=source)
  with pytest.raises(ip.DatasetError, match='must be even'):
    ip.create_train_iterator(fx.data_config(archive=archives['c100_bin'], mixup_alpha=0.2),
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


@pytest.mark.parametrize('mix', [dict(mixup_alpha=0.4), dict(cutmix_alpha=1.0),
                                 dict(mixup_alpha=0.4, cutmix_alpha=1.0)])
def test_mixup_cutmix_soft_labels(archives, source, mix):
  config = fx.data_config(archive=archives['c100_bin'], **mix)
  plain = train_batches(fx.data_config(archive=archives['c100_bin']), 4, source=source)
  rows = np.arange(32)
  for b, p in zip(train_batches(config, 4, source=source), plain):
    assert b['label'].shape == (32, 100) and b['label'].dtype == np.float32
    assert np.isfinite(b['image']).all()
    np.testing.assert_allclose(b['label'].sum(1), 1.0, rtol=1e-5)
    # Row r mixes its own example with its pair partner r xor 1, with one lam per batch.
    own, partner = p['label'], p['label'].reshape(-1, 2)[:, ::-1].ravel()
    mass = b['label'][rows, own] + np.where(own != partner, b['label'][rows, partner], 0)
    np.testing.assert_allclose(mass, 1.0, rtol=1e-5)
    lam = b['label'][rows, own][own != partner]
    np.testing.assert_allclose(lam, lam[0], rtol=1e-5)


@pytest.mark.parametrize('overrides', [
    dict(flip=True), dict(crop_padding=4), dict(rotation=0.05), dict(zoom=0.2),
    dict(random_resized_crop=True), dict(randaugment_layers=2),
    dict(image_size=48, rotation=0.02, zoom=0.2), dict(image_size=24, random_resized_crop=True)])
def test_each_augmentation_changes_images(archives, source, overrides):
  base = fx.data_config(archive=archives['c100_bin'], flip=False,
                        image_size=overrides.get('image_size', 32))
  config = fx.data_config(archive=archives['c100_bin'], **{'flip': False, **overrides})
  plain, = train_batches(base, 1, source=source)
  aug, = train_batches(config, 1, source=source)
  size = config.image_size
  assert aug['image'].shape == (32, size, size, 3) and np.isfinite(aug['image']).all()
  np.testing.assert_array_equal(aug['label'], plain['label'])
  changed = np.abs(aug['image'] - plain['image']).reshape(32, -1).max(1) > 1e-3
  assert changed.mean() > 0.3
  assert np.abs(aug['image']).max() < 10


@pytest.mark.parametrize('geometry', [dict(), dict(zoom=1e-7), dict(rotation=1e-7)])
def test_train_geometry_without_randomness_equals_eval_resize(archives, source, geometry):
  """The train path's resampling (resize / crop_and_resize / two-pass warp) has no pixel offset."""
  ids = lambda b: (unnormalize(b['image'], source.info)[:, 0, 0, 1:] * [1, 256]).sum(1)
  plain = fx.data_config(archive=archives['c100_bin'], flip=False)
  order_train = np.argsort(ids(train_batches(plain, 1, batch=270, source=source)[0]))
  order_eval = np.argsort(ids(eval_batches(plain, 'train', batch=270, source=source)[0]))
  config = fx.data_config(archive=archives['c100_bin'], flip=False, image_size=56, **geometry)
  train, = train_batches(config, 1, batch=270, source=source)
  ev, = eval_batches(config, 'train', batch=270, source=source)
  np.testing.assert_allclose(train['image'][order_train], ev['image'][order_eval], atol=1e-3)


def test_rotation_two_pass_matches_projective_transform():
  """The fast two-pass warp stays close to a single bilinear ImageProjectiveTransformV3."""
  x = tf.constant(fx.make_examples(8, 10)[0], tf.float32)
  x = tf.image.resize(tf.image.resize(x, (8, 8)), (32, 32))  # smooth images, like photos
  aug = ip._Aug.from_config(fx.data_config(image_size=96, rotation=0.02, zoom=0.2))
  g = tf.random.stateless_uniform([8, 4], seed=[1, 2])
  out = ip._resample(x, aug, g, None)
  theta = (2 * g[:, 1] - 1) * 0.02 * 2 * math.pi
  s = 32 / 96 * (1 + (2 * g[:, 2:] - 1) * 0.2)
  a00, a01 = s[:, 0] * tf.cos(theta), -s[:, 0] * tf.sin(theta)
  a10, a11 = s[:, 1] * tf.sin(theta), s[:, 1] * tf.cos(theta)
  c = 47.5
  t = tf.stack([a00, a01, 15.5 - (a00 + a01) * c, a10, a11, 15.5 - (a10 + a11) * c,
                tf.zeros([8]), tf.zeros([8])], 1)
  ref = tf.raw_ops.ImageProjectiveTransformV3(
      images=x, transforms=t, output_shape=[96, 96], fill_value=0.0, interpolation='BILINEAR',
      fill_mode='REFLECT')
  diff = np.abs(out.numpy() - ref.numpy())
  assert diff.mean() < 0.5 and np.percentile(diff, 99) < 4  # pixel scale 0..255


# ------------------------------------------------------------------------------ eval stream


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
  assert ip.num_examples(fx.data_config(archive=archives['c100_bin']), 'test',
                         source=source) == N_TEST


def test_eval_is_deterministic_and_val_sized(archives, source):
  config = fx.data_config(archive=archives['c100_bin'], image_size=48)
  a = eval_batches(config, 'val', batch=16, source=source)
  assert_same_batches(a, eval_batches(config, 'val', batch=16, source=source))
  assert sum(b['mask'].sum() for b in a) == 30 and len(a) == 2
  assert a[0]['image'].shape == (16, 48, 48, 3)


# ------------------------------------------------------------------------------ TFDS


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
  monkeypatch.setattr(ip, '_unresolvable_download_host', lambda builder: None)


@pytest.mark.usefixtures('hosts_resolve')
def test_tfds_in_memory_matches_archive_stream(archives, data100):
  archive_config = fx.data_config(archive=archives['c100_bin'], crop_padding=4, image_size=40,
                                  rotation=0.02)
  tfds_config = fx.data_config(crop_padding=4, image_size=40, rotation=0.02)
  with tfds.testing.mock_data(as_dataset_fn=_as_dataset_from(data100)):
    src = ip.load_data(tfds_config)
    assert src.info.num_classes == 100  # from the TFDS features
    assert_same_batches(train_batches(tfds_config, 2, source=src),
                        train_batches(archive_config, 2))
    assert_same_batches(eval_batches(tfds_config, 'test', batch=64, source=src),
                        eval_batches(archive_config, 'test', batch=64))


@pytest.mark.usefixtures('hosts_resolve')
def test_tfds_random_mock_data(tmp_path):
  config = fx.data_config(dataset='cifar10', image_size=32, val_fraction=0.2)
  with tfds.testing.mock_data(num_examples=40):
    info = ip.get_dataset_info(config)
    assert info.num_classes == 10 and info.split_sizes['train'] == 32
    batch, = train_batches(config, 1, batch=8)
    assert batch['image'].shape == (8, 32, 32, 3) and (batch['label'] < 10).all()


def test_missing_tfds_dataset_names_both_fixes(tmp_path, monkeypatch):
  attempts = []

  def no_network(self, *args, **kwargs):
    attempts.append(self.name)
    raise ConnectionError('no network here')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_network)
  monkeypatch.setattr(ip, '_unresolvable_download_host', lambda builder: None)  # DNS answers
  config = fx.data_config(tfds_data_dir=str(tmp_path / 'empty'))
  with pytest.raises(ip.DatasetError) as e:
    ip.get_dataset_info(config)
  msg = str(e.value)
  assert attempts == ['cifar100'], 'a missing dataset is downloaded when tfds_download is on'
  assert 'download failed: ConnectionError: no network here' in msg
  assert "'cifar100' is not prepared in" in msg and str(tmp_path / 'empty') in msg
  assert '--config.data.tfds_data_dir=' in msg and '--config.data.archive=' in msg
  assert 'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz' in msg
  with pytest.raises(ip.DatasetError, match='not a TFDS dataset name'):
    ip.get_dataset_info(fx.data_config(dataset='no_such_dataset_xyz'))
  config.tfds_download = False
  with pytest.raises(ip.DatasetError, match='tfds_download=False'):
    ip.get_dataset_info(config)
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
  with pytest.raises(ip.DatasetError) as e:
    ip.get_dataset_info(fx.data_config(tfds_data_dir=str(tmp_path / 'empty')))
  msg = str(e.value)
  assert attempts == [], 'no download is attempted when the host does not resolve'
  assert looked_up == ['www.cs.toronto.edu']
  assert 'the download host www.cs.toronto.edu does not resolve' in msg
  assert '--config.data.tfds_data_dir=' in msg and '--config.data.archive=' in msg


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
  with pytest.raises(ip.DatasetError, match='cache=False'):
    ip.load_data(config)
  config.cache = False
  config.update(dict(random_resized_crop=True, rotation=0.02, zoom=0.1, mixup_alpha=0.2))
  src = ip.load_data(config)
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
  assert ip.num_examples(config, 'val', source=src) == 6
