"""vit_jax/data/iterators.py: the host-local train and eval batch iterators.

Why an index stream, not a shuffled record stream: the decoded uint8 split lives in memory
(source.MemorySource) and the training order is a pure function of (seed, epoch): global batch k
holds stream positions [k*B, (k+1)*B); position q belongs to epoch q // N and maps to example
``index_shuffle(q % N, seed=(seed, epoch))``. So batch k is a pure function of (data config, seed,
k): resuming at ``start_step=k`` is exact and free, and the global batch does not depend on the
number of hosts (host p takes rows [p*b, (p+1)*b) of it, b = B / process_count). A
stream.TfdsStream (``data.cache=False``) builds its batches from files read in order instead;
both feed the same parallel map + prefetch here.
"""

from __future__ import annotations

import threading
from typing import Iterator

import numpy as np
import tensorflow as tf

from vit_jax.data import augment
from vit_jax.data import source as source_lib
from vit_jax.data import stream
from vit_jax.data.core import DatasetError, DataSource


def host_rows(global_batch_size: int, process_index, process_count) -> slice:
  """This process's rows of every global batch; jax is asked only for missing defaults.

  The user-facing rule (batch sizes divisible by the hosts) is vit_jax/validation.py's; here it is
  an invariant of the callers.
  """
  if process_index is None or process_count is None:
    import jax  # Only the process layout; batches are put on devices by the train loop.
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} not in [0, process_count={process_count})')
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'global batch size {global_batch_size} must be a positive multiple of the '
                     f'number of processes ({process_count}).')
  host_batch = global_batch_size // process_count
  return slice(process_index * host_batch, (process_index + 1) * host_batch)


def _batches(ds: tf.data.Dataset, make_batch, data_config) -> Iterator[dict[str, np.ndarray]]:
  """Parallel, order-preserving map of `make_batch` + prefetch, as a numpy iterator.

  Autograph is off: the batch functions have no Python control flow on tensors, and converting
  them costs seconds per iterator.
  """
  parallel = data_config.num_parallel_calls
  ds = ds.map(tf.autograph.experimental.do_not_convert(make_batch), deterministic=True,
              num_parallel_calls=tf.data.AUTOTUNE if parallel == -1 else parallel)
  if data_config.prefetch:
    ds = ds.prefetch(tf.data.AUTOTUNE if data_config.prefetch == -1 else data_config.prefetch)
  opts = tf.data.Options()
  opts.deterministic = True
  return ds.with_options(opts).as_numpy_iterator()


def _train_indices(k, seed, n, global_batch, rows, balanced):
  """Example indices int64 [host_batch] of global batch k's rows.

  Uniform: position q -> epoch q // n, index_shuffle(q % n) with seed (seed, epoch): each epoch a
  fresh fixed permutation, batches straddle epochs. Class-balanced: weights 1/class_count with
  replacement, i.e. a uniform class then a uniform member of it, keyed by the position.
  """
  if balanced is not None:
    members, starts, counts = balanced
    u = augment.host_uniform(seed, k, 'balanced', global_batch, rows, 2)
    cls = tf.minimum(tf.cast(u[:, 0] * len(counts), tf.int64), len(counts) - 1)
    count = tf.gather(counts, cls)
    member = tf.minimum(tf.cast(u[:, 1] * tf.cast(count, tf.float32), tf.int64), count - 1)
    return tf.gather(members, tf.gather(starts, cls) + member)
  pos = tf.cast(k, tf.int64) * global_batch + tf.range(rows.start, rows.stop, dtype=tf.int64)
  epoch = pos // n
  seeds = tf.stack([tf.fill(tf.shape(pos), tf.constant(seed % 2**63, tf.int64)), epoch,
                    tf.zeros_like(pos)], axis=1)
  return tf.raw_ops.RandomIndexShuffle(index=pos % n, seed=seeds,
                                       max_index=tf.constant(n - 1, tf.int64), rounds=4)


def _balanced_tables(labels: np.ndarray):
  """(example indices sorted by class, start of each present class, its count) as tf constants."""
  members = np.argsort(labels, kind='stable')
  _, starts, counts = np.unique(labels[members], return_index=True, return_counts=True)
  return (tf.constant(members, tf.int64), tf.constant(starts, tf.int64),
          tf.constant(counts, tf.int64))


def _memory_train_batches(src: source_lib.MemorySource, data_config, aug: augment.Aug,
                          global_batch: int, seed: int, start_step: int, rows: slice):
  """(dataset, make_batch) of the in-memory index stream from global batch `start_step` on."""
  train = src.split('train')
  info = src.info
  images = tf.constant(train.images)  # uint8 [N, H, W, 3], captured by reference below.
  labels = tf.constant(train.labels)
  balanced = _balanced_tables(train.labels) if data_config.class_balanced else None

  def make_batch(k):
    idx = _train_indices(k, seed, len(train), global_batch, rows, balanced)
    x = augment.augment_batch(tf.gather(images, idx), k, aug, seed, global_batch, rows,
                              info.mean, info.std)
    y = tf.gather(labels, idx)
    if aug.mixing:
      x, y = augment.mix(x, y, k, aug, seed, info.num_classes)
    return {'image': x, 'label': y}

  return tf.data.Dataset.range(start_step, 2**62), make_batch


def _memory_eval_batches(src: source_lib.MemorySource, data_config, split: str,
                         global_batch: int, rows: slice):
  """(dataset, make_batch) covering `split` once; the last global batch is padded (mask 0)."""
  data = src.split(split)
  n = len(data)
  if not n:
    raise DatasetError(f'eval split {split!r} of {data_config.dataset} is empty '
                       '(for val set data.val_fraction > 0).')
  images, labels = tf.constant(data.images), tf.constant(data.labels)
  size, info = data_config.image_size, src.info

  def make_batch(k):
    pos = k * global_batch + tf.range(rows.start, rows.stop, dtype=tf.int64)  # [b]
    valid = pos < n
    idx = tf.minimum(pos, n - 1)
    mask = tf.cast(valid, tf.float32)
    # Normalize and zero the padding at source resolution: resizing is linear, so this is exact
    # and keeps full-resolution work to the one resize.
    x = augment.normalize(tf.cast(tf.gather(images, idx), tf.float32), info.mean, info.std)
    x = x * mask[:, None, None, None]
    if x.shape[1:3] != (size, size):
      x = tf.image.resize(x, (size, size), method='bilinear', antialias=False)
    return {'image': x, 'label': tf.where(valid, tf.gather(labels, idx), 0), 'mask': mask}

  return tf.data.Dataset.range(-(-n // global_batch)), make_batch


def create_train_iterator(data_config, *, global_batch_size: int, seed: int, start_step: int = 0,
                          process_index: int | None = None, process_count: int | None = None,
                          source: DataSource | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Infinite host-local training batches; batch k is a pure function of (config, seed, k).

  Yields {'image': float32 [b, S, S, 3] normalized, 'label': int32 [b] or, with mixup/cutmix,
  float32 [b, num_classes] soft labels}, b = global_batch_size // process_count. The first batch
  yielded is global batch `start_step`.
  """
  src = source_lib.resolve(data_config, source)
  rows = host_rows(global_batch_size, process_index, process_count)
  aug = augment.Aug.from_config(data_config)
  if aug.mixing and (rows.stop - rows.start) % 2:
    raise ValueError(f'mixup/cutmix pair examples within a host batch, which must be even; the '
                     f'host batch is {rows.stop - rows.start}.')
  if isinstance(src, stream.TfdsStream):
    ds, make_batch = src.train_batches(aug, global_batch_size, seed, start_step, rows)
  else:
    ds, make_batch = _memory_train_batches(src, data_config, aug, global_batch_size, seed,
                                           start_step, rows)
  return _batches(ds, make_batch, data_config)


def create_eval_iterator(data_config, split: str, *, global_batch_size: int,
                         process_index: int | None = None, process_count: int | None = None,
                         source: DataSource | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Finite, deterministic eval batches covering `split` exactly once over all hosts.

  Yields {'image': float32 [b, S, S, 3], 'label': int32 [b], 'mask': float32 [b]}; the last global
  batch is padded (mask 0, zero image, label 0) so all batches are full and every host yields
  ceil(N / global_batch_size) batches. split: 'train' (train_split minus val), 'val', 'test', or
  a raw split string of the source.
  """
  src = source_lib.resolve(data_config, source)
  rows = host_rows(global_batch_size, process_index, process_count)
  if isinstance(src, stream.TfdsStream):
    ds, make_batch = src.eval_batches(split, data_config.image_size, global_batch_size, rows)
  else:
    ds, make_batch = _memory_eval_batches(src, data_config, split, global_batch_size, rows)
  return _batches(ds, make_batch, data_config)


def release_in_background(holder: list) -> None:
  """Empties `holder` (a list with the last references to iterators) on a daemon thread.

  Destroying a tf.data iterator that ran for minutes waits for tf.data's autotuning thread to
  wake from its sleep, which grows to a minute (28 s measured after a SIGTERM at 2 min of
  cpu_quick); the wait releases the GIL, so on another thread it costs the caller nothing, and a
  preempted job exits as soon as its checkpoint is written.
  """
  threading.Thread(target=holder.clear, name='release-tf-data-iterators', daemon=True).start()
