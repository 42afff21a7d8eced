"""vit_jax/data/tfds.py: TFDS datasets: find or download them, open splits, decode into memory.

Why the extra checks around TFDS: a missing dataset should say how to fix it (a prepared
``data.tfds_data_dir``, or a CIFAR ``data.archive``) instead of a TFDS traceback, and offline a
download would retry for minutes; a failed DNS lookup of the recorded download hosts is
immediate, so it is probed first. A decoded split is the same uint8 array an archive gives, so
TFDS and archive copies of CIFAR feed the same index stream (source.py).
"""

from __future__ import annotations

import socket
import urllib.parse

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax.data import cifar
from vit_jax.data.core import DatasetError, Split


def get_builder(data_config):
  """The prepared TFDS builder of data.dataset, downloaded once when missing and allowed."""
  name = data_config.dataset
  try:
    builder = tfds.builder(name, data_dir=data_config.tfds_data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetError(f'data.dataset={name!r} is not a TFDS dataset name ({str(e)[:200]}...).'
                       ) from e
  if not builder.is_prepared():
    if not data_config.tfds_download:
      raise missing_error(data_config, builder, 'not prepared; data.tfds_download=False')
    host = _unresolvable_download_host(builder)
    if host:  # offline: say so now instead of after TFDS's minutes of retries
      raise missing_error(data_config, builder,
                          f'the download host {host} does not resolve (no network?)')
    try:  # Users with network get the dataset the usual TFDS way, once.
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except  (no network, disk full, ...)
      raise missing_error(data_config, builder,
                          f'download failed: {type(e).__name__}: {str(e)[:300]}') from e
  return builder


def _unresolvable_download_host(builder) -> str | None:
  """The first host of the dataset's recorded download URLs that DNS cannot resolve, or None.

  Why: offline, TFDS retries a download for minutes before failing; a failed name lookup is
  immediate. Datasets without recorded URLs, or with hosts that resolve, go to TFDS as usual.
  """
  try:
    urls = list(builder.url_infos or ())
  except Exception:  # pylint: disable=broad-except  (no checksums file: let TFDS decide)
    return None
  for host in sorted({urllib.parse.urlparse(u).hostname for u in urls} - {None}):
    try:
      socket.getaddrinfo(host, 443)
    except OSError:
      return host
  return None


def missing_error(data_config, builder, detail: str) -> DatasetError:
  """The error for a TFDS dataset that is neither prepared nor downloadable, naming both fixes."""
  name = data_config.dataset
  urls = cifar.URLS.get(name, cifar.URLS['cifar100'] + cifar.URLS['cifar10'])
  where = data_config.tfds_data_dir or f'the default TFDS data_dir ({builder.data_dir})'
  return DatasetError(
      f'TFDS dataset {name!r} is not prepared in {where} and could not be downloaded. Fix '
      'one of:\n'
      f'  1. --config.data.tfds_data_dir=DIR where DIR holds a prepared copy (make it on a machine '
      f'with network: `tfds build {name} --data_dir=DIR`);\n'
      '  2. --config.data.archive=PATH to an official CIFAR archive (.tar.gz, or its extracted '
      f'folder; CIFAR-10/100 only), downloaded from {" or ".join(urls)}.\n'
      f'(TFDS said: {detail}. Offline, --config.data.tfds_download=False skips the download '
      'attempt.)')


def supervised_keys(builder) -> tuple[str, str]:
  keys = builder.info.supervised_keys
  if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    return keys
  return 'image', 'label'


def open_split(data_config, builder, split: str, **kwargs) -> tf.data.Dataset:
  try:
    return builder.as_dataset(split=split, **kwargs)
  except AssertionError as e:  # TFDS asserts when the data_dir has no prepared copy.
    raise missing_error(data_config, builder, str(e)) from e
  except ValueError as e:  # Unknown split names.
    raise DatasetError(f'TFDS {data_config.dataset!r} has no split {split!r} (splits: '
                       f'{sorted(builder.info.splits)}): {e}') from e


def load_split(data_config, builder, split: str) -> Split:
  """Decodes a whole TFDS split into memory (same arrays as an archive -> same stream)."""
  image_key, label_key = supervised_keys(builder)
  ds = open_split(data_config, builder, split, shuffle_files=False)
  ds = ds.map(lambda ex: (ex[image_key], ex[label_key])).batch(4096)
  images, labels = [], []
  for x, y in tfds.as_numpy(ds):
    images.append(x)
    labels.append(y)
  if not images:
    raise DatasetError(f'TFDS {data_config.dataset!r} split {split!r} is empty.')
  images = np.concatenate(images)
  if images.shape[-1] == 1:  # Grayscale -> RGB so models always see 3 channels.
    images = np.repeat(images, 3, axis=-1)
  return Split(images, np.concatenate(labels).astype(np.int32))

