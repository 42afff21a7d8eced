"""vit_jax/data/stream.py: TFDS files read as they are used (``data.cache=False``).

Why a second source at all: the in-memory index stream (iterators.py) needs random access to
decoded uint8 arrays, which datasets too large for memory, or with images of varying size, do not
allow; TFDS record files are read front to back. So this source keeps what it can: batch k is
deterministic for (config, seed, k), hosts take contiguous rows of the same global batch, and
augmentation is the same stateless batch code (augment.py; the inception crop is done per example
on the decoded image). What it gives up, compared with the in-memory path: the order comes from
TFDS file shuffling + a 10k-example shuffle buffer (not an exact per-epoch permutation); resuming
skips start_step * B encoded records (exact but O(k) reads); every host reads (not decodes) all
records; 'val' is the first val_fraction of train_split in the prepared TFDS record order (TFDS
shuffles records at preparation with a fixed key; val_split_seed is unused); mean/std are
estimated from the first 1024 training examples.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds_lib

from vit_jax.data import augment
from vit_jax.data import tfds
from vit_jax.data.core import DatasetError, DatasetInfo, DataSource


class TfdsStream(DataSource):
  """Streams encoded examples from TFDS files and decodes only the host's rows."""

  _SHUFFLE_BUFFER = 10_000
  _STATS_EXAMPLES = 1024

  def __init__(self, data_config, builder):
    c = data_config
    super().__init__(c, None)
    self.config, self.builder = c, builder
    self.image_key, self.label_key = tfds.supervised_keys(builder)
    tfds.open_split(c, builder, c.train_split)  # Raises the 'not prepared' DatasetError early.
    sizes_all = dict(builder.info.splits)
    instr = tfds_lib.core.ReadInstruction.from_spec(c.train_split).to_absolute(sizes_all)
    if len(instr) != 1:
      raise DatasetError(f'train_split={c.train_split!r}: streaming needs one contiguous range.')
    name, lo = instr[0].splitname, instr[0].from_ or 0
    hi = instr[0].to or sizes_all[name].num_examples
    n_val = int(math.floor(c.val_fraction * (hi - lo) + 0.5))
    self.train_spec = f'{name}[{lo + n_val}:{hi}]'
    self.val_spec = f'{name}[{lo}:{lo + n_val}]' if n_val else None
    label = builder.info.features[self.label_key]
    sizes = {'train': hi - lo - n_val, 'val': n_val}
    if 'test' in sizes_all:
      sizes['test'] = sizes_all['test'].num_examples
    mean, std = self._estimate_stats()
    shape = builder.info.features[self.image_key].shape
    self.info = DatasetInfo(num_classes=label.num_classes, class_names=tuple(label.names),
                            split_sizes=sizes, image_shape=tuple(shape), mean=mean, std=std)

  def _open(self, spec, **kwargs):
    return tfds.open_split(self.config, self.builder, spec,
                           decoders={self.image_key: tfds_lib.decode.SkipDecoding()}, **kwargs)

  def _decode(self, encoded):
    x = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.ensure_shape(x, [None, None, 3])

  def _estimate_stats(self):
    ds = self._open(self.train_spec, shuffle_files=False).take(self._STATS_EXAMPLES)
    s = np.zeros(3)
    s2 = np.zeros(3)
    count = 0
    for ex in ds:
      x = self._decode(ex[self.image_key]).numpy().reshape(-1, 3).astype(np.float64)
      s, s2, count = s + x.sum(0), s2 + (x ** 2).sum(0), count + len(x)
    mean = s / count
    return tuple(float(v) for v in mean), tuple(float(v) for v in np.sqrt(s2 / count - mean ** 2))

  def num_examples(self, split):
    spec = self._spec(split)
    sizes = dict(self.builder.info.splits)
    return sum((i.to or sizes[i.splitname].num_examples) - (i.from_ or 0) for i in
               tfds_lib.core.ReadInstruction.from_spec(spec).to_absolute(sizes))

  def _spec(self, split):
    if split == 'val':
      if self.val_spec is None:
        raise DatasetError('val split is empty: set data.val_fraction > 0.')
      return self.val_spec
    return self.train_spec if split == 'train' else split

  def _host_rows(self, ds, global_batch, rows: slice):
    """(encoded [m], labels [m], global batch k) for this host's rows, m <= host batch."""
    ds = ds.batch(global_batch).enumerate()
    return ds.map(lambda k, ex: (ex[self.image_key][rows],
                                 tf.cast(ex[self.label_key][rows], tf.int32), k))

  def train_batches(self, aug: augment.Aug, global_batch: int, seed: int, start_step: int,
                    rows: slice):
    """(dataset, make_batch) of the training stream from global batch `start_step` on."""
    S, hb = aug.image_size, rows.stop - rows.start
    ds = self._open(self.train_spec, shuffle_files=True,
                    read_config=tfds_lib.ReadConfig(shuffle_seed=seed % 2**31))
    ds = ds.repeat().shuffle(self._SHUFFLE_BUFFER, seed=seed % 2**31)
    ds = self._host_rows(ds.skip(start_step * global_batch), global_batch, rows)

    def make_batch(encoded, y, k):
      k = k + start_step
      u = augment.host_uniform(seed, k, 'rrc', global_batch, rows, 22)

      def one(args):
        enc, ui = args
        x = tf.cast(self._decode(enc), tf.float32)
        hw = tf.shape(x)[:2]
        if aug.random_resized_crop:
          cx, cy, w, h = augment.rrc_boxes(ui[None], hw[0], hw[1], aug.rrc_min_scale)
          xp = tf.pad(x[None], [[0, 0], [1, 1], [1, 1], [0, 0]], mode='SYMMETRIC')
          return augment.crop_resize(xp, 1, hw[0], hw[1], cx, cy, w / S, h / S, S)[0]
        return tf.image.resize(x, (S, S), method='bilinear', antialias=False)

      x = tf.map_fn(one, (encoded, u), fn_output_signature=tf.TensorSpec([S, S, 3], tf.float32))
      x, y = tf.ensure_shape(x, [hb, S, S, 3]), tf.ensure_shape(y, [hb])  # infinite: always full
      x = augment.augment_batch(x, k, aug, seed, global_batch, rows, self.info.mean,
                                self.info.std, sized=True)
      if aug.mixing:
        x, y = augment.mix(x, y, k, aug, seed, self.info.num_classes)
      return {'image': x, 'label': y}

    return ds, make_batch

  def eval_batches(self, split: str, image_size: int, global_batch: int, rows: slice):
    """(dataset, make_batch) of `split` in file order, the last batch padded (mask 0)."""
    S, hb = image_size, rows.stop - rows.start
    ds = self._host_rows(self._open(self._spec(split), shuffle_files=False), global_batch, rows)

    def make_batch(encoded, y, k):
      del k
      x = tf.map_fn(lambda e: tf.image.resize(tf.cast(self._decode(e), tf.float32), (S, S),
                                              method='bilinear', antialias=False),
                    encoded, fn_output_signature=tf.TensorSpec([S, S, 3], tf.float32))
      m = tf.shape(y)[0]
      pad = hb - m
      x = tf.pad(augment.normalize(x, self.info.mean, self.info.std),
                 [[0, pad], [0, 0], [0, 0], [0, 0]])
      return {'image': tf.ensure_shape(x, [hb, S, S, 3]),
              'label': tf.ensure_shape(tf.pad(y, [[0, pad]]), [hb]),
              'mask': tf.ensure_shape(tf.pad(tf.ones([m]), [[0, pad]]), [hb])}

    return ds, make_batch
