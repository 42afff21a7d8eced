"""vit_jax/data/source.py: `load_data`, the one place a dataset is read, and the in-memory source.

Why one load: reading and decoding an archive or a TFDS split takes seconds, so the caller
(train.py) loads once and passes the result as ``source=`` to every iterator; nothing is cached
behind its back. With ``data.cache=True`` (default) the decoded uint8 splits live in memory
(MemorySource) and an archive and a TFDS copy of the same data give the same arrays, hence the
same batches. ``data.cache=False`` returns a stream.TfdsStream instead, for TFDS datasets that do
not fit in memory or have images of varying size. The config values are checked beforehand by
vit_jax/validation.py; what is raised here (DatasetError) needs the data itself to be found.
"""

from __future__ import annotations

from typing import Callable

from vit_jax.data import cifar
from vit_jax.data import splits
from vit_jax.data import stream
from vit_jax.data import tfds
from vit_jax.data.core import DatasetError, DatasetInfo, DataSource, Split


class MemorySource(DataSource):
  """Decoded splits of one dataset in memory, plus its DatasetInfo.

  'train' (train_split minus val) and 'val' are decoded by load_data; other splits (e.g. 'test')
  are decoded on first use and kept in this object.
  """

  def __init__(self, data_config, info: DatasetInfo, decoded: dict[str, Split],
               load_raw: Callable[[str], Split]):
    super().__init__(data_config, info)
    self._splits = dict(decoded)
    self._load_raw = load_raw

  def split(self, name: str) -> Split:
    """'train' (train_split minus val), 'val', 'test', or a raw split string of the source."""
    if name not in self._splits:
      self._splits[name] = self._load_raw(name)
    return self._splits[name]

  def num_examples(self, split: str) -> int:
    return len(self.split(split))


def load_data(data_config) -> DataSource:
  """Reads and decodes the source once; raises DatasetError with a fix when it is missing."""
  c = data_config
  if c.archive:
    raw, names = cifar.read_cifar_archive(c.archive, c.dataset, c.strict_counts)
    where = f'archive {c.archive}'
    load_raw = lambda spec: splits.slice_spec(raw, spec, where)
    test_size = len(raw['test']) if 'test' in raw else None
    num_classes = len(names)
  else:
    builder = tfds.get_builder(c)
    if not c.cache:
      return stream.TfdsStream(c, builder)
    image_key, label_key = tfds.supervised_keys(builder)
    shape = builder.info.features[image_key].shape
    if None in shape:
      raise DatasetError(
          f'TFDS {c.dataset!r} has images of varying size {shape}; they cannot be held as one '
          'array. Set --config.data.cache=False to stream it from TFDS files.')
    load_raw = lambda spec: tfds.load_split(c, builder, spec)
    label = builder.info.features[label_key]
    num_classes = label.num_classes
    names = tuple(label.names)
    test_size = (builder.info.splits['test'].num_examples
                 if 'test' in builder.info.splits else None)
  source_split = load_raw(c.train_split)
  if len(source_split) and source_split.labels.max() >= num_classes:
    raise DatasetError(f'{c.dataset}: label {source_split.labels.max()} >= num_classes '
                       f'{num_classes}; the data is corrupt.')
  train, val = splits.hold_out(source_split, c.val_fraction, c.val_split_seed)
  if not len(train):
    raise DatasetError(f'train_split={c.train_split!r} minus val leaves no training examples.')
  mean, std = splits.channel_stats(train.images)
  sizes = {'train': len(train), 'val': len(val)}
  if test_size is not None:
    sizes['test'] = test_size
  info = DatasetInfo(num_classes=num_classes, class_names=tuple(names), split_sizes=sizes,
                     image_shape=tuple(int(d) for d in train.images.shape[1:]),
                     mean=mean, std=std)
  return MemorySource(c, info, {'train': train, 'val': val}, load_raw)


def resolve(data_config, source: DataSource | None) -> DataSource:
  """`source` after checking it was loaded for `data_config`; loads the data when None."""
  if source is None:
    return load_data(data_config)
  source.check(data_config)
  return source


def get_dataset_info(data_config, source: DataSource | None = None) -> DatasetInfo:
  """DatasetInfo (num_classes, split sizes, normalization stats); loads the data if not given."""
  return resolve(data_config, source).info


def num_examples(data_config, split: str, source: DataSource | None = None) -> int:
  """Number of examples an eval over `split` covers (each exactly once)."""
  return resolve(data_config, source).num_examples(split)
