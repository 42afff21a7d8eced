"""Input pipeline: CIFAR archives / TFDS -> augmented, normalized, host-local numpy batches.

Why it is built this way:

* **Index stream, not a shuffled record stream.** The decoded uint8 split lives in memory and the
  training order is a pure function of (seed, epoch): global batch k holds stream positions
  [k*B, (k+1)*B); position q belongs to epoch q // N and maps to example
  ``index_shuffle(q % N, seed=(seed, epoch))``. So batch k is a pure function of (data config, seed,
  k): resuming at ``start_step=k`` is exact and free, and the global batch does not depend on the
  number of hosts (host p takes rows [p*b, (p+1)*b) of it, b = B / process_count).
* **Stateless, batch-level augmentation.** Every random number is drawn with
  ``tf.random.stateless_*`` from (seed, batch index k, stream id) for the *global* batch and then
  sliced to the host's rows, i.e. it is keyed by (seed, global example position). Parallel
  ``map`` stays deterministic, and an example is augmented identically whatever the number of
  hosts. Ops run on whole batches (vectorized): per-example ``map`` on 32x32 images is dominated
  by tf.data overhead.
* **Full resolution is touched once.** Padded crop, RandAugment, flip and normalization run at
  source resolution (32x32: cheap). Resize, inception crop, zoom and rotation are composed into
  one map per example and applied as one bilinear resampling to the output size:
  tf.image.resize / crop_and_resize when axis-aligned (exact), a two-pass warp with rotation.
  At 224px every full-size op costs ~0.1-0.3 s per 256-image batch on a 2-core VM (mostly fresh
  154 MB allocations), so there is nothing else at full size.
* **Content-keyed validation split.** ``val`` is the ``round(val_fraction * N)`` examples with the
  smallest keyed hash (blake2b keyed by ``val_split_seed``) of their pixels and label. It is a fixed
  pseudo-random subset that does not depend on the order of records in the file, and the TFDS and
  archive copies of CIFAR give the same split and the same training stream.

Sources: official CIFAR-10/100 archives in python or binary format (``data.archive``), or any TFDS
image-classification dataset. With ``data.cache=True`` (default) the TFDS split is decoded into
memory and goes through the exact same index stream as an archive; ``data.cache=False`` streams
from TFDS files for datasets that do not fit in memory (see ``_TfdsStream`` for what it gives up).

Record counts (``data.strict_counts``, default True): an archive must hold the official CIFAR
counts (50000 train / 10000 test), so a partial download cannot train silently on a short epoch;
tiny test archives set it False. Structural damage (a partial record, a truncated gzip/tar,
pickle arrays of different lengths, labels out of range) is an error either way.

Load the data once with :func:`load_data` and pass ``source=`` to the other public functions;
without it each call re-reads the data (correct, but slow for repeated evals).
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import io
import math
import os
import pickle
import socket
import tarfile
import types
import urllib.parse
import zlib
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

# --------------------------------------------------------------------------------------------
# Public types.


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and train loop need to know before compiling anything."""
  num_classes: int
  class_names: tuple[str, ...]
  split_sizes: dict[str, int]  # 'train' (train_split minus val), 'val', 'test' when known.
  image_shape: tuple[int, int, int]  # Source (H, W, C); None entries when TFDS sizes vary.
  mean: tuple[float, float, float]  # Per-channel pixel mean of the training examples (0..255).
  std: tuple[float, float, float]


class DatasetError(ValueError):
  """A data problem the user can fix; the message says what is wrong and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Split:
  """Decoded examples of one split, in memory."""
  images: np.ndarray  # uint8 [N, H, W, 3]
  labels: np.ndarray  # int32 [N]

  def __len__(self) -> int:
    return len(self.labels)

  def take(self, idx: np.ndarray) -> 'Split':
    return Split(self.images[idx], self.labels[idx])


# --------------------------------------------------------------------------------------------
# Config validation (no disk access).

_CIFAR = ('cifar10', 'cifar100')
_URLS = {
    'cifar10': ('https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
                'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz'),
    'cifar100': ('https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
                 'https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz'),
}
# Config fields that determine the decoded splits; a DataSource is valid only for these values.
_SOURCE_FIELDS = ('dataset', 'archive', 'tfds_data_dir', 'train_split', 'val_fraction',
                  'val_split_seed', 'cache', 'strict_counts')


def validate_data_config(data_config) -> list[str]:
  """Returns human-readable problems with `config.data` values; [] when fine. No disk access."""
  c = data_config
  problems = []

  def bad(field, msg):
    problems.append(f'data.{field}={getattr(c, field)!r}: {msg}')

  if not isinstance(c.dataset, str) or not c.dataset:
    bad('dataset', "must be a dataset name: 'cifar100', 'cifar10' or a TFDS name")
  if c.archive and c.dataset not in _CIFAR:
    bad('dataset', f'data.archive reads official CIFAR archives only; use one of {_CIFAR} '
        'or clear data.archive to load this dataset from TFDS')
  if not 0.0 <= c.val_fraction < 1.0:
    bad('val_fraction', 'must be in [0, 1) (fraction of train_split held out as val)')
  if c.eval_split == 'val' and c.val_fraction == 0:
    bad('eval_split', "'val' needs data.val_fraction > 0")
  if not isinstance(c.image_size, int) or c.image_size <= 0:
    bad('image_size', 'must be a positive int')
  if c.crop_padding < 0:
    bad('crop_padding', 'must be >= 0 (0 turns the padded random crop off)')
  if c.random_resized_crop and c.crop_padding:
    bad('crop_padding', 'cannot be combined with data.random_resized_crop=True; pick one crop')
  if not 0.0 < c.rrc_min_scale <= 1.0:
    bad('rrc_min_scale', 'must be in (0, 1] (smallest crop area as a fraction of the image)')
  if not 0.0 <= c.rotation <= 0.125:
    bad('rotation', 'must be in [0, 0.125]: max angle as a fraction of 2*pi (Keras '
        'RandomRotation factor), at most 45 degrees for the two-pass warp')
  if not 0.0 <= c.zoom < 1.0:
    bad('zoom', 'must be in [0, 1) (Keras RandomZoom factor)')
  if c.randaugment_layers < 0:
    bad('randaugment_layers', 'must be >= 0 (0 turns RandAugment off)')
  if not 0 <= c.randaugment_magnitude <= 30:
    bad('randaugment_magnitude', 'must be in [0, 30] (10 = the maximum of each op)')
  for field in ('mixup_alpha', 'cutmix_alpha'):
    if getattr(c, field) < 0:
      bad(field, 'must be >= 0 (0 turns it off)')
  if not (c.prefetch >= 0 or c.prefetch == -1):
    bad('prefetch', 'must be >= 0 batches, or -1 for AUTOTUNE')
  if not (c.num_parallel_calls >= 1 or c.num_parallel_calls == -1):
    bad('num_parallel_calls', 'must be >= 1, or -1 for AUTOTUNE')
  if not isinstance(c.train_split, str) or not c.train_split:
    bad('train_split', "must be a split name such as 'train' or 'train[:50%]'")
  return problems


def _check_config(data_config) -> None:
  problems = validate_data_config(data_config)
  if problems:
    raise DatasetError('Invalid data config:\n  - ' + '\n  - '.join(problems))


# --------------------------------------------------------------------------------------------
# Official CIFAR archives (python or binary format; .tar.gz/.tgz/.tar or an extracted folder).


@dataclasses.dataclass(frozen=True)
class _Layout:
  """File names and record format of one official CIFAR distribution."""
  dataset: str
  fmt: str  # 'python' | 'binary'
  split_files: dict[str, tuple[str, ...]]  # split -> file basenames, concatenated in this order
  names_file: str
  official_counts: dict[str, int]  # file basename -> records in the official release
  label_bytes: int = 0  # binary only: label bytes before the 3072 pixel bytes; the last one is used
  num_classes: int = 0


def _cifar10_files(suffix):
  return {'train': tuple(f'data_batch_{i}{suffix}' for i in range(1, 6)),
          'test': (f'test_batch{suffix}',)}


_LAYOUTS = (
    _Layout('cifar10', 'python', _cifar10_files(''), 'batches.meta',
            {f: 10000 for fs in _cifar10_files('').values() for f in fs}, num_classes=10),
    _Layout('cifar10', 'binary', _cifar10_files('.bin'), 'batches.meta.txt',
            {f: 10000 for fs in _cifar10_files('.bin').values() for f in fs},
            label_bytes=1, num_classes=10),
    _Layout('cifar100', 'python', {'train': ('train',), 'test': ('test',)}, 'meta',
            {'train': 50000, 'test': 10000}, num_classes=100),
    _Layout('cifar100', 'binary', {'train': ('train.bin',), 'test': ('test.bin',)},
            'fine_label_names.txt', {'train.bin': 50000, 'test.bin': 10000},
            label_bytes=2, num_classes=100),
)
_PIXELS = 3 * 32 * 32


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """CIFAR's python format is pickle; allow only what its files contain (no code execution)."""
  _reconstruct = np.array(0).__reduce__()[0]
  _ALLOWED = {('numpy.core.multiarray', '_reconstruct'): _reconstruct,
              ('numpy._core.multiarray', '_reconstruct'): _reconstruct,
              ('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype,
              ('_codecs', 'encode'): codecs.encode}  # Python 3 protocol-2 pickles of bytes.

  def find_class(self, module, name):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f'unexpected object {module}.{name} in a CIFAR pickle')
    return self._ALLOWED[(module, name)]


def _read_archive_members(path: str) -> dict[str, tuple[str, bytes]]:
  """Returns {basename: (name to show in errors, bytes)} for every file a CIFAR layout uses."""
  wanted = {f for lay in _LAYOUTS for fs in lay.split_files.values() for f in fs}
  wanted |= {lay.names_file for lay in _LAYOUTS}
  found: dict[str, tuple[str, bytes]] = {}

  def add(base, shown, data):
    if base in found:
      raise DatasetError(f'{path} holds two files named {base!r} ({found[base][0]} and {shown}); '
                         'point data.archive at one official CIFAR archive or folder.')
    found[base] = (shown, data)

  if os.path.isdir(path):
    # The extracted folder itself (cifar-100-binary/) or its parent.
    for folder in [path] + sorted(os.path.join(path, d) for d in os.listdir(path)):
      if not os.path.isdir(folder):
        continue
      for base in sorted(os.listdir(folder)):
        if base in wanted and os.path.isfile(os.path.join(folder, base)):
          with open(os.path.join(folder, base), 'rb') as f:
            add(base, os.path.join(folder, base), f.read())
    return found
  if not os.path.exists(path):
    raise DatasetError(f'data.archive={path!r} does not exist. Set it to an official CIFAR archive '
                       '(.tar.gz) or its extracted folder; download URLs: '
                       + ', '.join(u for us in _URLS.values() for u in us))
  reading, got, seen = None, 0, 0  # member being read, its bytes so far, headers read
  try:
    # Streaming mode ('r|*') decompresses once, front to back, without extracting to disk.
    with tarfile.open(path, mode='r|*') as tar:
      for member in tar:
        seen += 1
        base = os.path.basename(member.name)
        if not member.isfile() or base not in wanted:
          continue
        reading, got, chunks = member, 0, []
        f = tar.extractfile(member)
        while chunk := f.read(1 << 16):  # small reads: an early end reports how far it got
          chunks.append(chunk)
          got += len(chunk)
        add(base, f'{member.name} in {path}', b''.join(chunks))
        reading = None
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    if not seen:
      raise DatasetError(f'{path} is not a readable .tar.gz/.tgz/.tar archive ({e}). Point '
                         'data.archive at an official CIFAR archive or its extracted folder.'
                         ) from e
    where = 'after the last complete file'
    if reading is not None:
      where = f'in {reading.name}: read {got} of {reading.size} bytes'
      for lay in _LAYOUTS:
        if lay.fmt == 'binary' and os.path.basename(reading.name) in lay.official_counts:
          rec = lay.label_bytes + _PIXELS
          where += f' = {got // rec} of {reading.size // rec} records'
    raise DatasetError(f'{path} is truncated or corrupt ({where}; {type(e).__name__}: {e}). '
                       'Download the archive again.') from e
  return found


def _decode_binary(shown: str, data: bytes, lay: _Layout) -> Split:
  rec = lay.label_bytes + _PIXELS
  if len(data) % rec:
    raise DatasetError(
        f'{shown} is truncated or corrupt: {len(data)} bytes = {len(data) // rec} whole '
        f'{rec}-byte records + {len(data) % rec} extra bytes. Download the archive again.')
  arr = np.frombuffer(data, np.uint8).reshape(-1, rec)
  labels = arr[:, lay.label_bytes - 1].astype(np.int32)  # cifar100: [coarse, fine]; use fine.
  images = arr[:, lay.label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW -> HWC
  return Split(np.ascontiguousarray(images), labels)


def _unpickle(shown: str, data: bytes) -> dict:
  try:
    obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding='bytes').load()
  except Exception as e:  # Truncated pickles raise many different types.
    raise DatasetError(f'{shown} is not a readable CIFAR pickle ({type(e).__name__}: {e}); '
                       'the file is truncated or corrupt. Download the archive again.') from e
  if not isinstance(obj, dict):
    raise DatasetError(f'{shown} is not a CIFAR pickle (expected a dict, got {type(obj)}).')
  return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _decode_python(shown: str, data: bytes, lay: _Layout) -> Split:
  d = _unpickle(shown, data)
  key = 'fine_labels' if lay.dataset == 'cifar100' else 'labels'
  if 'data' not in d or key not in d:
    raise DatasetError(f'{shown} lacks the {key!r}/data entries of a {lay.dataset} pickle.')
  pixels, labels = np.asarray(d['data']), np.asarray(d[key])
  if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != _PIXELS:
    raise DatasetError(f'{shown}: data is {pixels.dtype}{list(pixels.shape)}, expected '
                       f'uint8[N, {_PIXELS}]; the file is corrupt.')
  if len(pixels) != len(labels):
    raise DatasetError(f'{shown} is corrupt: {len(pixels)} images but {len(labels)} labels.')
  images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW -> HWC
  return Split(np.ascontiguousarray(images), labels.astype(np.int32))


def _class_names(lay: _Layout, members) -> tuple[str, ...]:
  if lay.names_file not in members:
    return tuple(str(i) for i in range(lay.num_classes))
  shown, data = members[lay.names_file]
  if lay.fmt == 'binary':
    names = [n.strip() for n in data.decode('utf-8', 'replace').splitlines() if n.strip()]
  else:
    meta = _unpickle(shown, data)
    names = meta.get('fine_label_names' if lay.dataset == 'cifar100' else 'label_names', [])
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
  if len(names) != lay.num_classes:
    raise DatasetError(f'{shown} lists {len(names)} class names, expected {lay.num_classes}.')
  return tuple(names)


def read_cifar_archive(path: str, dataset: str, strict_counts: bool = True
                       ) -> tuple[dict[str, Split], tuple[str, ...]]:
  """Reads every split present in an official CIFAR archive or folder.

  Returns ({'train': Split, 'test': Split} for the splits present, class names). Format and dataset
  are detected from file names. Raises DatasetError for a wrong dataset, missing files of a present
  split, structural damage, and (with strict_counts) record counts that differ from the official.
  """
  members = _read_archive_members(path)
  layouts = [lay for lay in _LAYOUTS
             if any(f in members for fs in lay.split_files.values() for f in fs)]
  if not layouts:
    raise DatasetError(
        f'{path} contains no CIFAR data files (looked for e.g. cifar-100-binary/train.bin, '
        'cifar-100-python/train, cifar-10-batches-*/data_batch_1[.bin]). Point data.archive at an '
        f'official archive: {", ".join(u for us in _URLS.values() for u in us)}')
  if len(layouts) > 1:
    raise DatasetError(f'{path} mixes files of several CIFAR distributions '
                       f'({", ".join(f"{l.dataset}/{l.fmt}" for l in layouts)}); use one.')
  lay = layouts[0]
  if lay.dataset != dataset:
    raise DatasetError(
        f'{path} holds {lay.dataset.upper()} ({lay.fmt} format) but data.dataset={dataset!r}. '
        f'Set --config.data.dataset={lay.dataset}, or point data.archive at a '
        f'{dataset.upper()} archive ({" or ".join(_URLS.get(dataset, ()))}).')
  decode = _decode_binary if lay.fmt == 'binary' else _decode_python
  splits = {}
  for split, files in lay.split_files.items():
    present = [f for f in files if f in members]
    if not present:
      continue
    if len(present) != len(files):
      raise DatasetError(f'{path} has only {present} of the {split} files {list(files)}; '
                         'the archive is incomplete. Download it again.')
    parts = []
    for f in files:
      shown, data = members.pop(f)
      part = decode(shown, data, lay)
      if strict_counts and len(part) != lay.official_counts[f]:
        raise DatasetError(
            f'{shown} has {len(part)} records; the official {lay.dataset} file has '
            f'{lay.official_counts[f]}. The file is incomplete: download it again, or set '
            '--config.data.strict_counts=False if you reduced the archive on purpose.')
      if len(part) and (part.labels.min() < 0 or part.labels.max() >= lay.num_classes):
        raise DatasetError(f'{shown} has labels outside [0, {lay.num_classes}); it is corrupt.')
      parts.append(part)
    splits[split] = Split(np.concatenate([p.images for p in parts]),
                          np.concatenate([p.labels for p in parts]))
  return splits, _class_names(lay, members)


def _slice_spec(available: dict[str, Split], spec: str, where: str) -> Split:
  """Applies a TFDS split string ('train', 'test[:10%]', 'train[:100]+test') to in-memory splits."""
  try:
    instructions = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
        {k: types.SimpleNamespace(num_examples=len(v)) for k, v in available.items()})
  except (ValueError, KeyError) as e:
    raise DatasetError(f'split {spec!r} is not available in {where}, which has the splits '
                       f'{sorted(available)}. Evaluate on the held-out part of train_split with '
                       '--config.data.eval_split=val, or use an archive that holds the test '
                       f'file (test.bin / test / test_batch). ({e})') from e
  parts = [available[i.splitname].take(np.arange(i.from_ or 0, i.to or len(available[i.splitname])))
           for i in instructions]
  return Split(np.concatenate([p.images for p in parts]),
               np.concatenate([p.labels for p in parts]))


# --------------------------------------------------------------------------------------------
# TFDS.


def _tfds_builder(data_config):
  name = data_config.dataset
  try:
    builder = tfds.builder(name, data_dir=data_config.tfds_data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetError(f'data.dataset={name!r} is not a TFDS dataset name ({str(e)[:200]}...).'
                       ) from e
  if not builder.is_prepared():
    if not data_config.tfds_download:
      raise _missing_tfds_error(data_config, builder, 'not prepared; data.tfds_download=False')
    host = _unresolvable_download_host(builder)
    if host:  # offline: say so now instead of after TFDS's minutes of retries
      raise _missing_tfds_error(data_config, builder,
                                f'the download host {host} does not resolve (no network?)')
    try:  # Users with network get the dataset the usual TFDS way, once.
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except  (no network, disk full, ...)
      raise _missing_tfds_error(data_config, builder,
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


def _missing_tfds_error(data_config, builder, detail: str) -> DatasetError:
  name = data_config.dataset
  urls = _URLS.get(name, _URLS['cifar100'] + _URLS['cifar10'])
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


def _tfds_keys(builder) -> tuple[str, str]:
  keys = builder.info.supervised_keys
  if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    return keys
  return 'image', 'label'


def _tfds_open(data_config, builder, split: str, **kwargs) -> tf.data.Dataset:
  try:
    return builder.as_dataset(split=split, **kwargs)
  except AssertionError as e:  # TFDS asserts when the data_dir has no prepared copy.
    raise _missing_tfds_error(data_config, builder, str(e)) from e
  except ValueError as e:  # Unknown split names.
    raise DatasetError(f'TFDS {data_config.dataset!r} has no split {split!r} (splits: '
                       f'{sorted(builder.info.splits)}): {e}') from e


def _tfds_load_split(data_config, builder, split: str) -> Split:
  """Decodes a whole TFDS split into memory (same arrays as an archive -> same stream)."""
  image_key, label_key = _tfds_keys(builder)
  ds = _tfds_open(data_config, builder, split, shuffle_files=False)
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


# --------------------------------------------------------------------------------------------
# Held-out validation split and normalization statistics.


def _content_order(split: Split, seed: int) -> np.ndarray:
  """Indices sorted by a keyed hash of (pixels, label): a fixed permutation blind to file order."""
  key = (seed % 2**64).to_bytes(8, 'little')
  flat = split.images.reshape(len(split), -1)
  h = np.fromiter(
      (int.from_bytes(hashlib.blake2b(row.tobytes() + int(lab).to_bytes(4, 'little'),
                                      digest_size=8, key=key).digest(), 'little')
       for row, lab in zip(flat, split.labels)), dtype=np.uint64, count=len(split))
  return np.argsort(h, kind='stable')


def _hold_out(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
  """(train, val): val is round(val_fraction * N) examples chosen by content, not file position."""
  order = _content_order(split, seed)
  n_val = int(math.floor(val_fraction * len(split) + 0.5))
  return split.take(order[n_val:]), split.take(order[:n_val])


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Exact per-channel mean/std of uint8 images via 256-bin histograms (fast, no float copy)."""
  mean, std = [], []
  v = np.arange(256, dtype=np.float64)
  for c in range(images.shape[-1]):
    hist = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
    m = (hist * v).sum() / hist.sum()
    mean.append(float(m))
    std.append(float(np.sqrt((hist * (v - m) ** 2).sum() / hist.sum())))
  return tuple(mean), tuple(std)


# --------------------------------------------------------------------------------------------
# DataSource: the decoded data, loaded once and passed around explicitly.


class DataSource:
  """Decoded splits of one dataset plus its DatasetInfo.

  Why: reading and decoding the archive (or TFDS split) takes seconds; train.py should do it once
  (``load_data``) and pass it as ``source=`` to the iterators instead of hiding a global cache.
  Splits other than train/val (e.g. 'test') are decoded on first use and kept in this object.
  """

  def __init__(self, data_config, info: DatasetInfo, splits: dict[str, Split],
               load_raw: Callable[[str], Split] | None, stream: '_TfdsStream | None' = None):
    self.key = {f: data_config[f] for f in _SOURCE_FIELDS}
    self.info = info
    self._splits = dict(splits)
    self._load_raw = load_raw
    self.stream = stream  # Set instead of splits when streaming from TFDS (data.cache=False).

  def check(self, data_config) -> None:
    key = {f: data_config[f] for f in _SOURCE_FIELDS}
    if key != self.key:
      diff = {f: (self.key[f], key[f]) for f in key if key[f] != self.key[f]}
      raise ValueError(f'source= was loaded for other data config values {diff}.')

  def split(self, name: str) -> Split:
    """'train' (train_split minus val), 'val', 'test', or a raw split string of the source."""
    if self.stream is not None:
      raise ValueError('streaming DataSource has no in-memory splits')
    if name not in self._splits:
      self._splits[name] = self._load_raw(name)
    return self._splits[name]


def load_data(data_config) -> DataSource:
  """Reads and decodes the source once; raises DatasetError with a fix when it is missing."""
  _check_config(data_config)
  c = data_config
  if c.archive:
    raw, names = read_cifar_archive(c.archive, c.dataset, c.strict_counts)
    where = f'archive {c.archive}'
    load_raw = lambda spec: _slice_spec(raw, spec, where)
    test_size = len(raw['test']) if 'test' in raw else None
    num_classes = len(names)
  else:
    builder = _tfds_builder(c)
    if not c.cache:
      return _TfdsStream.make_source(c, builder)
    shape = builder.info.features[_tfds_keys(builder)[0]].shape
    if None in shape:
      raise DatasetError(
          f'TFDS {c.dataset!r} has images of varying size {shape}; they cannot be held as one '
          'array. Set --config.data.cache=False to stream it from TFDS files.')
    load_raw = lambda spec: _tfds_load_split(c, builder, spec)
    label = builder.info.features[_tfds_keys(builder)[1]]
    num_classes = label.num_classes
    names = tuple(label.names)
    test_size = (builder.info.splits['test'].num_examples
                 if 'test' in builder.info.splits else None)
  source_split = load_raw(c.train_split)
  if len(source_split) and source_split.labels.max() >= num_classes:
    raise DatasetError(f'{c.dataset}: label {source_split.labels.max()} >= num_classes '
                       f'{num_classes}; the data is corrupt.')
  train, val = _hold_out(source_split, c.val_fraction, c.val_split_seed)
  if not len(train):
    raise DatasetError(f'train_split={c.train_split!r} minus val leaves no training examples.')
  mean, std = _channel_stats(train.images)
  sizes = {'train': len(train), 'val': len(val)}
  if test_size is not None:
    sizes['test'] = test_size
  info = DatasetInfo(num_classes=num_classes, class_names=tuple(names), split_sizes=sizes,
                     image_shape=tuple(int(d) for d in train.images.shape[1:]),
                     mean=mean, std=std)

  return DataSource(c, info, {'train': train, 'val': val}, load_raw)


def _source(data_config, source: DataSource | None) -> DataSource:
  if source is None:
    return load_data(data_config)
  _check_config(data_config)
  source.check(data_config)
  return source


def get_dataset_info(data_config, source: DataSource | None = None) -> DatasetInfo:
  """DatasetInfo (num_classes, split sizes, normalization stats); loads the data if not given."""
  return _source(data_config, source).info


def num_examples(data_config, split: str, source: DataSource | None = None) -> int:
  """Number of examples an eval over `split` covers (each exactly once)."""
  src = _source(data_config, source)
  if src.stream is not None:
    return src.stream.num_examples(split)
  return len(src.split(split))


# --------------------------------------------------------------------------------------------
# Stateless randomness. Every draw is for the *global* batch k and then sliced to a host's rows.

_STREAMS = dict(balanced=1, crop=2, randaugment=3, geometry=4, rrc=5, cutmix_box=6, mix_lam=7,
                cut_lam=8, mix_choice=9)


def _seed_pair(seed: int, k, stream: str):
  """Stateless seed for (run seed, global batch k, purpose); TF scrambles seeds internally."""
  k = tf.cast(k, tf.int64)
  return tf.stack([tf.constant(seed % 2**63, tf.int64), k * 64 + _STREAMS[stream]])


def _host_uniform(seed, k, stream, global_batch, rows: slice, n: int):
  """float32 [host_batch, n] uniforms in [0, 1); global row r is the same on any host."""
  u = tf.random.stateless_uniform([global_batch, n], seed=_seed_pair(seed, k, stream))
  return u[rows]


# --------------------------------------------------------------------------------------------
# Augmentation (batch-level, float32 pixels in 0..255 unless said otherwise).


@dataclasses.dataclass(frozen=True)
class _Aug:
  """The augmentation switches of config.data, read once."""
  image_size: int
  crop_padding: int
  random_resized_crop: bool
  rrc_min_scale: float
  flip: bool
  rotation: float
  zoom: float
  randaugment_layers: int
  randaugment_magnitude: float
  mixup_alpha: float
  cutmix_alpha: float

  @classmethod
  def from_config(cls, c) -> '_Aug':
    return cls(**{f.name: c[f.name] for f in dataclasses.fields(cls)})

  @property
  def mixing(self) -> bool:
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def _pad_crop(x, offsets, pad: int):
  """Random crop with zero padding (torchvision RandomCrop(size, padding)). x [b,H,W,C]."""
  _, h, w, _ = x.shape
  xp = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  rows = offsets[:, :1] + tf.range(h)[None]  # [b, H]
  cols = offsets[:, 1:] + tf.range(w)[None]  # [b, W]
  xp = tf.gather(xp, rows, axis=1, batch_dims=1)  # [b, H, W+2p, C]
  return tf.gather(xp, cols, axis=2, batch_dims=1)  # [b, H, W, C]


def _rrc_boxes(u, height, width, min_scale: float, attempts: int = 10):
  """Inception crop boxes (area in [min_scale, 1], aspect in [3/4, 4/3]), torchvision's sampler.

  u: [b, 2*attempts+2] uniforms; height/width: source size (scalars or [b]). Returns the box
  center (cx, cy) in pixel-index coordinates and its size (w, h) in pixels, each [b]. Falls back to
  the whole image when no attempt fits.
  """
  height = tf.cast(height, tf.float32)
  width = tf.cast(width, tf.float32)
  area = (min_scale + (1.0 - min_scale) * u[:, :attempts]) * (height * width)[..., None]
  log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, attempts:2 * attempts]
  w = tf.sqrt(area * tf.exp(log_r))
  h = tf.sqrt(area / tf.exp(log_r))
  ok = (w <= width[..., None]) & (h <= height[..., None])
  first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)
  w = tf.where(tf.reduce_any(ok, 1), tf.gather(w, first, batch_dims=1), width)
  h = tf.where(tf.reduce_any(ok, 1), tf.gather(h, first, batch_dims=1), height)
  x0 = u[:, 2 * attempts] * (width - w)
  y0 = u[:, 2 * attempts + 1] * (height - h)
  return x0 + w / 2 - 0.5, y0 + h / 2 - 0.5, w, h


# RandAugment (Cubuk et al. 2020): each layer applies one of the paper's 14 ops (_RA_OPS), chosen
# uniformly per example, at strength level = magnitude / 10 of the op's maximum, with a random
# sign where it has one. Maxima: rotate 30 deg, shear 0.3, translate 10/32 of the image side,
# enhance factors 1 +- 0.9, posterize to 4 bits, solarize threshold 256 -> 0 (timm's increasing
# variants). Geometric ops fill with grey 128 and act about the image centre; ops work on float
# pixels (no uint8 rounding between ops). Examples are grouped by op (dynamic_partition), so each
# op runs only on its own examples.


def _blend(degenerate, x, factor):
  return tf.clip_by_value(degenerate + factor[:, None, None, None] * (x - degenerate), 0.0, 255.0)


def _enhance_factor(sign, level):
  return tf.maximum(1.0 + sign * 0.9 * level, 0.0)


def _autocontrast(x, sign, level):
  del sign, level
  lo = tf.reduce_min(x, axis=[1, 2], keepdims=True)
  hi = tf.reduce_max(x, axis=[1, 2], keepdims=True)
  return tf.where(hi > lo, (x - lo) * 255.0 / tf.maximum(hi - lo, 1e-3), x)


def _equalize(x, sign, level):
  """PIL ImageOps.equalize per image and channel, vectorized with a batched bincount."""
  del sign, level
  _, h, w, c = x.shape
  v = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.int32)
  rows = tf.reshape(tf.transpose(v, [0, 3, 1, 2]), [-1, h * w])  # [m*C, H*W]
  hist = tf.math.bincount(rows, minlength=256, maxlength=256, axis=-1)  # [m*C, 256]
  last = tf.reduce_max(tf.where(hist > 0, tf.range(256)[None], 0), axis=1)
  step = (h * w - tf.gather(hist, last, batch_dims=1)) // 255  # [m*C]
  lut = (tf.cumsum(hist, axis=1, exclusive=True) + (step // 2)[:, None]) // tf.maximum(
      step, 1)[:, None]
  eq = tf.where((step > 0)[:, None], tf.gather(tf.minimum(lut, 255), rows, batch_dims=1), rows)
  return tf.transpose(tf.reshape(tf.cast(eq, tf.float32), [-1, c, h, w]), [0, 2, 3, 1])


def _solarize(x, sign, level):
  del sign
  return tf.where(x >= 256.0 * (1.0 - min(level, 1.0)), 255.0 - x, x)


def _posterize(x, sign, level):
  del sign
  shift = 2.0 ** (8 - max(1, 8 - round(4 * level)))
  return tf.floor(x / shift) * shift


def _color(x, sign, level):
  return _blend(tf.image.rgb_to_grayscale(x), x, _enhance_factor(sign, level))


def _contrast(x, sign, level):
  mean = tf.reduce_mean(tf.image.rgb_to_grayscale(x), axis=[1, 2, 3], keepdims=True)
  return _blend(mean, x, _enhance_factor(sign, level))


def _brightness(x, sign, level):
  return _blend(tf.zeros_like(x), x, _enhance_factor(sign, level))


def _sharpness(x, sign, level):
  """Blend with PIL's SMOOTH filter (interior only; border pixels unchanged)."""
  k = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  k = tf.tile(k[:, :, None, None], [1, 1, x.shape[-1], 1])
  blur = tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], 'VALID')
  paddings = [[0, 0], [1, 1], [1, 1], [0, 0]]
  smooth = tf.pad(blur, paddings) + x - tf.pad(x[:, 1:-1, 1:-1], paddings)
  return _blend(smooth, x, _enhance_factor(sign, level))


_RA_WARPS = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')


def _ra_warp(x, sign, level, kind):
  """Rotate / Shear / Translate (kind indexes _RA_WARPS) about the centre, grey fill, one op."""
  _, h, w, _ = x.shape
  v = sign * level
  is_kind = lambda name: tf.equal(kind, _RA_WARPS.index(name))
  zero = tf.zeros_like(v)
  theta = tf.where(is_kind('Rotate'), v * math.radians(30), zero)
  shx = tf.where(is_kind('ShearX'), 0.3 * v, zero)
  shy = tf.where(is_kind('ShearY'), 0.3 * v, zero)
  tx = tf.where(is_kind('TranslateX'), (10 / 32) * w * v, zero)
  ty = tf.where(is_kind('TranslateY'), (10 / 32) * h * v, zero)
  # Rot(theta) + the shears: exact because each example has only one of theta, shx, shy != 0.
  a00, a01 = tf.cos(theta), shx - tf.sin(theta)
  a10, a11 = shy + tf.sin(theta), tf.cos(theta)
  cx, cy = (w - 1) / 2, (h - 1) / 2
  t = tf.stack([a00, a01, cx + tx - a00 * cx - a01 * cy,
                a10, a11, cy + ty - a10 * cx - a11 * cy, zero, zero], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=x, transforms=t, output_shape=tf.constant([h, w]), fill_value=tf.constant(128.0),
      interpolation='BILINEAR', fill_mode='CONSTANT')


# Op name -> fn(x [m,H,W,3], sign [m], level); the five warps share one group (see _ra_warp).
_RA_COLOR_OPS = {
    'Identity': lambda x, sign, level: x, 'AutoContrast': _autocontrast, 'Equalize': _equalize,
    'Solarize': _solarize, 'Color': _color, 'Posterize': _posterize, 'Contrast': _contrast,
    'Brightness': _brightness, 'Sharpness': _sharpness,
}
_RA_OPS = tuple(_RA_COLOR_OPS) + _RA_WARPS


def _randaugment_layer(x, op, sign, level: float):
  """One RandAugment layer. x [b,H,W,3] float 0..255; op int32 [b] indexes _RA_OPS; sign +-1."""
  n = len(_RA_COLOR_OPS)
  group = tf.minimum(op, n)  # all warps -> group n
  parts = lambda t: tf.dynamic_partition(t, group, n + 1)
  index, xs, signs, ops = parts(tf.range(tf.shape(x)[0])), parts(x), parts(sign), parts(op)
  outs = [fn(xi, si, level) for fn, xi, si in zip(_RA_COLOR_OPS.values(), xs, signs)]
  outs.append(_ra_warp(xs[n], signs[n], level, ops[n] - n))
  return tf.reshape(tf.clip_by_value(tf.dynamic_stitch(index, outs), 0.0, 255.0), x.shape)


def _augment(x, k, aug: _Aug, seed: int, global_batch: int, rows: slice, mean, std,
             sized: bool = False):
  """Train augmentation of one host batch: uint8 [b,H,W,3] -> normalized float32 [b,S,S,3].

  Order: padded crop -> RandAugment -> flip -> normalize, all at source resolution (cheap), then
  one bilinear resampling to S x S for resize / inception crop / zoom / rotation. Normalizing
  before the resampling is exact (reflect fill only forms convex combinations of pixels) and
  saves a full-resolution pass. `sized`: x is already S x S and any inception crop was done by
  the caller (TFDS streaming path).
  """
  x = tf.cast(x, tf.float32)
  uni = lambda stream, n: _host_uniform(seed, k, stream, global_batch, rows, n)
  if aug.crop_padding:
    offsets = tf.cast(tf.floor(uni('crop', 2) * (2 * aug.crop_padding + 1)), tf.int32)
    x = _pad_crop(x, offsets, aug.crop_padding)
  if aug.randaugment_layers:
    u = uni('randaugment', 2 * aug.randaugment_layers)
    # Traced once, called per layer: tracing the 14 ops is the slow part of building the pipeline.
    layer_fn = tf.function(_randaugment_layer, autograph=False)
    for layer in range(aug.randaugment_layers):
      op = tf.minimum(tf.cast(u[:, 2 * layer] * len(_RA_OPS), tf.int32), len(_RA_OPS) - 1)
      sign = tf.where(u[:, 2 * layer + 1] < 0.5, -1.0, 1.0)
      x = layer_fn(x, op, sign, aug.randaugment_magnitude / 10)
  g = uni('geometry', 4)  # flip, rotation, zoom x, zoom y
  if aug.flip:  # Exact mirror; commutes in distribution with the symmetric ops that follow.
    x = tf.where((g[:, 0] < 0.5)[:, None, None, None], tf.reverse(x, axis=[2]), x)
  x = _normalize(x, mean, std)
  rrc_u = uni('rrc', 22) if aug.random_resized_crop and not sized else None
  return _resample(x, aug, g, rrc_u)


def _resample(x, aug: _Aug, g, rrc_u):
  """Bilinear resampling to S x S: Keras Resize -> RandomRotation -> RandomZoom in one go.

  The output pixel (i, j) samples the source at c + diag(sx, sy) @ Rot(theta) @ ((j, i) - c_out)
  (rotation and zoom about the centre, reflect fill), i.e. the three Keras layers composed so the
  image is resampled once. Without rotation this is exact and uses tf.image.resize or one
  crop_and_resize; with rotation it uses the two-pass warp below (~2x less CPU than
  ImageProjectiveTransformV3 at 224px on CPU). x [b,H,W,3] float32; g [b,4]; rrc_u [b,22] | None.
  """
  b, h, w, _ = x.shape
  S = aug.image_size
  if rrc_u is None and not aug.rotation and not aug.zoom:
    return x if (h, w) == (S, S) else tf.image.resize(x, (S, S), 'bilinear', antialias=False)
  ones = tf.ones([b])
  if rrc_u is not None:
    cx, cy, bw, bh = _rrc_boxes(rrc_u, h, w, aug.rrc_min_scale)
  else:
    cx, cy, bw, bh = ones * (w - 1) / 2, ones * (h - 1) / 2, ones * w, ones * h
  # Source pixels per output pixel along x and y, including the zoom.
  sx = bw / S * (1.0 + (2 * g[:, 2] - 1) * aug.zoom)
  sy = bh / S * (1.0 + (2 * g[:, 3] - 1) * aug.zoom)
  # Reflect padding wide enough for the farthest sample (corner of a zoomed-out, rotated box).
  reach = (1 + aug.zoom) * (math.cos(aug.rotation * 2 * math.pi) +
                            math.sin(aug.rotation * 2 * math.pi))
  pad = min(int(math.ceil(max(h, w) / 2 * (reach - 1) + 0.5)) + 2, h, w)
  xp = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode='SYMMETRIC')  # = reflect fill
  if not aug.rotation:
    return _crop_resize(xp, pad, h, w, cx, cy, sx, sy, S)
  theta = (2 * g[:, 1] - 1) * aug.rotation * 2 * math.pi
  return _two_pass_warp(xp, pad, cx, cy, sx * tf.cos(theta), -sx * tf.sin(theta),
                        sy * tf.sin(theta), sy * tf.cos(theta), S)


def _crop_resize(xp, pad: int, h, w, cx, cy, sx, sy, S: int):
  """Output (i, j) samples the source at (cx + sx (j - c), cy + sy (i - c)), c = (S-1)/2.

  xp: the [b, H, W, C] source reflect-padded by `pad` px; crop_and_resize's corner-aligned boxes
  reproduce the half-pixel-centre mapping exactly.
  """
  half = (S - 1) / 2
  hp = tf.cast(h, tf.float32) + 2 * pad - 1
  wp = tf.cast(w, tf.float32) + 2 * pad - 1
  boxes = tf.stack([(cy - sy * half + pad) / hp, (cx - sx * half + pad) / wp,
                    (cy + sy * half + pad) / hp, (cx + sx * half + pad) / wp], axis=1)
  return tf.image.crop_and_resize(xp, boxes, tf.range(tf.shape(xp)[0]), (S, S))


def _two_pass_warp(xp, pad: int, cx, cy, a00, a01, a10, a11, S: int):
  """Affine bilinear warp as two 1-D passes (Catmull-Smith), each a batched crop_and_resize.

  Output (i, j) should sample the source at x = a00 (j - c) + a01 (i - c) + cx,
  y = a10 (j - c) + a11 (i - c) + cy (c = (S-1)/2). Pass 1 resamples every source column w along
  y, at the rows where output row i's source line crosses that column; pass 2 resamples every
  output row along x. Exact for axis-aligned maps; for rotations the x-interpolation uses the
  neighbouring rows' crossing points instead of the exact sample (within tan(theta) px):
  mean |diff| ~0.1/255 vs ImageProjectiveTransformV3 for the seed-000 recipe.
  Needs a00 != 0 (|theta| < 90 deg). xp: source padded by `pad` px (reflect), [b, Hp, Wp, C].
  """
  b, hp, wp, ch = xp.shape
  c = (S - 1) / 2.0
  t0 = cx - (a00 + a01) * c  # source x of output (i, j) = a00 j + a01 i + t0
  t1 = cy - (a10 + a11) * c  # source y = a10 j + a11 i + t1
  # Pass 1: column w (source x = w - pad), y(i) = Y0(w) + k1 i, as crops of 1-px-wide images.
  k1 = a11 - a10 * a01 / a00
  wx = tf.range(wp, dtype=tf.float32) - pad
  y0 = (a10 / a00)[:, None] * (wx[None] - t0[:, None]) + t1[:, None]  # [b, Wp]
  y0 = tf.reshape(y0, [-1]) + pad
  y1 = y0 + tf.repeat(k1, wp) * (S - 1)
  zeros = tf.zeros_like(y0)
  cols = tf.reshape(tf.transpose(xp, [0, 2, 1, 3]), [b * wp, hp, 1, ch])
  boxes = tf.stack([y0 / (hp - 1), zeros, y1 / (hp - 1), zeros], axis=1)
  inter = tf.image.crop_and_resize(cols, boxes, tf.range(b * wp), (S, 1))  # [b*Wp, S, 1, C]
  rows = tf.reshape(tf.transpose(tf.reshape(inter, [b, wp, S, ch]), [0, 2, 1, 3]),
                    [b * S, 1, wp, ch])  # [b*S, 1, Wp, C]
  # Pass 2: output row i, x(j) = a01 i + t0 + a00 j.
  x0 = a01[:, None] * tf.range(S, dtype=tf.float32)[None] + t0[:, None]  # [b, S]
  x0 = tf.reshape(x0, [-1]) + pad
  x1 = x0 + tf.repeat(a00, S) * (S - 1)
  zeros = tf.zeros_like(x0)
  boxes = tf.stack([zeros, x0 / (wp - 1), zeros, x1 / (wp - 1)], axis=1)
  out = tf.image.crop_and_resize(rows, boxes, tf.range(b * S), (1, S))  # [b*S, 1, S, C]
  return tf.reshape(out, [b, S, S, ch])


def _normalize(x, mean, std):
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _beta(seed, k, stream, alpha: float):
  """Beta(alpha, alpha) scalar from two stateless gammas."""
  g = tf.random.stateless_gamma([2], seed=_seed_pair(seed, k, stream), alpha=alpha)
  return g[0] / (g[0] + g[1])


def _mix(images, labels, k, aug: _Aug, seed: int, num_classes: int):
  """Mixup / CutMix with soft labels; one lam (and, with both on, one choice) per global batch.

  Partners are adjacent pairs (row r with r xor 1) so mixing never crosses hosts and the mixed
  global batch is the same for any number of hosts (host batch must be even).
  images [b,S,S,3] float32, labels int32 [b] -> images, float32 [b, num_classes].
  """
  b, S = images.shape[0], images.shape[1]
  onehot = tf.one_hot(labels, num_classes, dtype=tf.float32)
  partner = tf.bitwise.bitwise_xor(tf.range(b), 1)

  def mixup():
    lam = _beta(seed, k, 'mix_lam', aug.mixup_alpha)
    return lam * images + (1 - lam) * tf.gather(images, partner), lam

  def cutmix():
    lam0 = _beta(seed, k, 'cut_lam', aug.cutmix_alpha)
    u = tf.random.stateless_uniform([2], seed=_seed_pair(seed, k, 'cutmix_box'))
    cut = tf.cast(tf.round(S * tf.sqrt(1.0 - lam0)), tf.int32)
    cy, cx = tf.cast(u[0] * S, tf.int32), tf.cast(u[1] * S, tf.int32)
    y0, y1 = tf.clip_by_value(cy - cut // 2, 0, S), tf.clip_by_value(cy - cut // 2 + cut, 0, S)
    x0, x1 = tf.clip_by_value(cx - cut // 2, 0, S), tf.clip_by_value(cx - cut // 2 + cut, 0, S)
    r = tf.range(S)
    inside = (((r >= y0) & (r < y1))[:, None] & ((r >= x0) & (r < x1))[None, :])  # [S, S]
    lam = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / float(S * S)
    return tf.where(inside[None, :, :, None], tf.gather(images, partner), images), lam

  if aug.mixup_alpha > 0 and aug.cutmix_alpha > 0:
    choose_cut = tf.random.stateless_uniform([], seed=_seed_pair(seed, k, 'mix_choice')) < 0.5
    images, lam = tf.cond(choose_cut, cutmix, mixup)
  else:
    images, lam = cutmix() if aug.cutmix_alpha > 0 else mixup()
  return images, lam * onehot + (1.0 - lam) * tf.gather(onehot, partner)


# --------------------------------------------------------------------------------------------
# Iterators.


def _process_layout(global_batch_size: int, process_index, process_count) -> tuple[int, int, int]:
  """(process_index, process_count, host_batch); jax is asked only for missing defaults."""
  if process_index is None or process_count is None:
    import jax  # Only the process layout; batches are put on devices by the train loop.
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} not in [0, process_count={process_count})')
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise DatasetError(
        f'global batch size {global_batch_size} must be a positive multiple of the number of '
        f'processes ({process_count}); change --config.batch_size / eval_batch_size.')
  return process_index, process_count, global_batch_size // process_count


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
    u = _host_uniform(seed, k, 'balanced', global_batch, rows, 2)
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
  classes, starts, counts = np.unique(labels[members], return_index=True, return_counts=True)
  del classes
  return (tf.constant(members, tf.int64), tf.constant(starts, tf.int64),
          tf.constant(counts, tf.int64))


def create_train_iterator(data_config, *, global_batch_size: int, seed: int, start_step: int = 0,
                          process_index: int | None = None, process_count: int | None = None,
                          source: DataSource | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Infinite host-local training batches; batch k is a pure function of (config, seed, k).

  Yields {'image': float32 [b, S, S, 3] normalized, 'label': int32 [b] or, with mixup/cutmix,
  float32 [b, num_classes] soft labels}, b = global_batch_size // process_count. The first batch
  yielded is global batch `start_step`.
  """
  src = _source(data_config, source)
  p, _, hb = _process_layout(global_batch_size, process_index, process_count)
  aug = _Aug.from_config(data_config)
  if aug.mixing and hb % 2:
    raise DatasetError(f'mixup/cutmix pair examples within a host batch, which must be even; '
                       f'the host batch is {hb}. Change --config.batch_size.')
  if src.stream is not None:
    return src.stream.train_iterator(data_config, aug, global_batch_size, seed, start_step, p, hb)
  train = src.split('train')
  info = src.info
  rows = slice(p * hb, (p + 1) * hb)
  images = tf.constant(train.images)  # uint8 [N, H, W, 3], captured by reference below.
  labels = tf.constant(train.labels)
  balanced = _balanced_tables(train.labels) if data_config.class_balanced else None

  def make_batch(k):
    idx = _train_indices(k, seed, len(train), global_batch_size, rows, balanced)
    x = _augment(tf.gather(images, idx), k, aug, seed, global_batch_size, rows, info.mean,
                 info.std)
    y = tf.gather(labels, idx)
    if aug.mixing:
      x, y = _mix(x, y, k, aug, seed, info.num_classes)
    return {'image': x, 'label': y}

  return _batches(tf.data.Dataset.range(start_step, 2**62), make_batch, data_config)


def create_eval_iterator(data_config, split: str, *, global_batch_size: int,
                         process_index: int | None = None, process_count: int | None = None,
                         source: DataSource | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Finite, deterministic eval batches covering `split` exactly once over all hosts.

  Yields {'image': float32 [b, S, S, 3], 'label': int32 [b], 'mask': float32 [b]}; the last global
  batch is padded (mask 0, zero image, label 0) so all batches are full and every host yields
  ceil(N / global_batch_size) batches. split: 'train' (train_split minus val), 'val', 'test', or
  a raw split string of the source.
  """
  src = _source(data_config, source)
  p, _, hb = _process_layout(global_batch_size, process_index, process_count)
  if src.stream is not None:
    return src.stream.eval_iterator(data_config, split, global_batch_size, p, hb)
  data = src.split(split)
  n = len(data)
  if not n:
    raise DatasetError(f'eval split {split!r} of {data_config.dataset} is empty '
                       '(for val set data.val_fraction > 0).')
  images, labels = tf.constant(data.images), tf.constant(data.labels)
  size, info = data_config.image_size, src.info

  def make_batch(k):
    pos = k * global_batch_size + tf.range(p * hb, (p + 1) * hb, dtype=tf.int64)  # [b]
    valid = pos < n
    idx = tf.minimum(pos, n - 1)
    mask = tf.cast(valid, tf.float32)
    # Normalize and zero the padding at source resolution: resizing is linear, so this is exact
    # and keeps full-resolution work to the one resize.
    x = _normalize(tf.cast(tf.gather(images, idx), tf.float32), info.mean, info.std)
    x = x * mask[:, None, None, None]
    if x.shape[1:3] != (size, size):
      x = tf.image.resize(x, (size, size), method='bilinear', antialias=False)
    return {'image': x, 'label': tf.where(valid, tf.gather(labels, idx), 0), 'mask': mask}

  return _batches(tf.data.Dataset.range(-(-n // global_batch_size)), make_batch, data_config)


# --------------------------------------------------------------------------------------------
# TFDS streaming (data.cache=False): for datasets too large or too ragged for memory.


class _TfdsStream:
  """Streams encoded examples from TFDS files and decodes only the host's rows.

  What it keeps: batch k is deterministic for (config, seed, k), hosts take contiguous rows of
  the same global batch, augmentation is the same stateless batch code (inception crop is done
  per example on the decoded image). What it gives up, compared with the in-memory path:
  the order comes from TFDS file shuffling + a 10k-example shuffle buffer (not an exact per-epoch
  permutation); resuming skips start_step * B encoded records (exact but O(k) reads); every host
  reads (not decodes) all records; 'val' is the first val_fraction of train_split in the prepared
  TFDS record order (TFDS shuffles records at preparation with a fixed key; val_split_seed is
  unused); mean/std are estimated from the first 1024 training examples.
  """

  _SHUFFLE_BUFFER = 10_000
  _STATS_EXAMPLES = 1024

  def __init__(self, data_config, builder, train_spec: str, val_spec: str | None, info):
    self.config, self.builder = data_config, builder
    self.train_spec, self.val_spec, self.info = train_spec, val_spec, info
    self.image_key, self.label_key = _tfds_keys(builder)

  @classmethod
  def make_source(cls, c, builder) -> DataSource:
    _tfds_open(c, builder, c.train_split)  # Raises the 'not prepared' DatasetError early.
    sizes_all = dict(builder.info.splits)
    instr = tfds.core.ReadInstruction.from_spec(c.train_split).to_absolute(sizes_all)
    if len(instr) != 1:
      raise DatasetError(f'train_split={c.train_split!r}: streaming needs one contiguous range.')
    name, lo = instr[0].splitname, instr[0].from_ or 0
    hi = instr[0].to or sizes_all[name].num_examples
    n_val = int(math.floor(c.val_fraction * (hi - lo) + 0.5))
    train_spec = f'{name}[{lo + n_val}:{hi}]'
    val_spec = f'{name}[{lo}:{lo + n_val}]' if n_val else None
    label = builder.info.features[_tfds_keys(builder)[1]]
    sizes = {'train': hi - lo - n_val, 'val': n_val}
    if 'test' in sizes_all:
      sizes['test'] = sizes_all['test'].num_examples
    stream = cls(c, builder, train_spec, val_spec, None)
    mean, std = stream._estimate_stats()
    shape = builder.info.features[stream.image_key].shape
    stream.info = DatasetInfo(num_classes=label.num_classes, class_names=tuple(label.names),
                              split_sizes=sizes, image_shape=tuple(shape), mean=mean, std=std)
    return DataSource(c, stream.info, {}, None, stream=stream)

  def _open(self, spec, **kwargs):
    return _tfds_open(self.config, self.builder, spec,
                      decoders={self.image_key: tfds.decode.SkipDecoding()}, **kwargs)

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
               tfds.core.ReadInstruction.from_spec(spec).to_absolute(sizes))

  def _spec(self, split):
    if split == 'val':
      if self.val_spec is None:
        raise DatasetError('val split is empty: set data.val_fraction > 0.')
      return self.val_spec
    return self.train_spec if split == 'train' else split

  def _host_rows(self, ds, global_batch, p, hb):
    """(encoded [m], labels [m], global batch k) for this host's rows, m <= hb."""
    ds = ds.batch(global_batch).enumerate()
    return ds.map(lambda k, ex: (ex[self.image_key][p * hb:(p + 1) * hb],
                                 tf.cast(ex[self.label_key][p * hb:(p + 1) * hb], tf.int32), k))

  def train_iterator(self, c, aug, global_batch, seed, start_step, p, hb):
    S = aug.image_size
    ds = self._open(self.train_spec, shuffle_files=True,
                    read_config=tfds.ReadConfig(shuffle_seed=seed % 2**31))
    ds = ds.repeat().shuffle(self._SHUFFLE_BUFFER, seed=seed % 2**31)
    ds = self._host_rows(ds.skip(start_step * global_batch), global_batch, p, hb)
    rows = slice(p * hb, (p + 1) * hb)

    def make_batch(encoded, y, k):
      k = k + start_step
      u = _host_uniform(seed, k, 'rrc', global_batch, rows, 22)

      def one(args):
        enc, ui = args
        x = tf.cast(self._decode(enc), tf.float32)
        hw = tf.shape(x)[:2]
        if aug.random_resized_crop:
          cx, cy, w, h = _rrc_boxes(ui[None], hw[0], hw[1], aug.rrc_min_scale)
          xp = tf.pad(x[None], [[0, 0], [1, 1], [1, 1], [0, 0]], mode='SYMMETRIC')
          return _crop_resize(xp, 1, hw[0], hw[1], cx, cy, w / S, h / S, S)[0]
        return tf.image.resize(x, (S, S), method='bilinear', antialias=False)

      x = tf.map_fn(one, (encoded, u), fn_output_signature=tf.TensorSpec([S, S, 3], tf.float32))
      x, y = tf.ensure_shape(x, [hb, S, S, 3]), tf.ensure_shape(y, [hb])  # infinite: always full
      x = _augment(x, k, aug, seed, global_batch, rows, self.info.mean, self.info.std,
                   sized=True)
      if aug.mixing:
        x, y = _mix(x, y, k, aug, seed, self.info.num_classes)
      return {'image': x, 'label': y}

    return _batches(ds, make_batch, c)

  def eval_iterator(self, c, split, global_batch, p, hb):
    S = c.image_size
    ds = self._host_rows(self._open(self._spec(split), shuffle_files=False), global_batch, p, hb)

    def make_batch(encoded, y, k):
      del k
      x = tf.map_fn(lambda e: tf.image.resize(tf.cast(self._decode(e), tf.float32), (S, S),
                                              method='bilinear', antialias=False),
                    encoded, fn_output_signature=tf.TensorSpec([S, S, 3], tf.float32))
      m = tf.shape(y)[0]
      pad = hb - m
      x = tf.pad(_normalize(x, self.info.mean, self.info.std), [[0, pad], [0, 0], [0, 0], [0, 0]])
      return {'image': tf.ensure_shape(x, [hb, S, S, 3]),
              'label': tf.ensure_shape(tf.pad(y, [[0, pad]]), [hb]),
              'mask': tf.ensure_shape(tf.pad(tf.ones([m]), [[0, pad]]), [hb])}

    return _batches(ds, make_batch, c)
