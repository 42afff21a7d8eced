"""vit_jax/data/cifar.py: reads the official CIFAR-10/100 archives (python or binary format).

Why a reader of our own instead of TFDS: the archives are what users download by hand (offline
machines, shared data folders), and a partial download must fail loudly instead of training on a
short epoch. So the reader checks structure (partial records, truncated gzip/tar, pickle arrays
of different lengths, labels out of range) always, and the official record counts with
``data.strict_counts`` (default True; tiny test archives set it False). It accepts a .tar.gz /
.tgz / .tar or an extracted folder (or its parent), streams the tar once without extracting, and
unpickles with an allow-list (numpy arrays and bytes only: no code execution).
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from vit_jax.data.core import DatasetError, Split

DATASETS = ('cifar10', 'cifar100')
URLS = {
    'cifar10': ('https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
                'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz'),
    'cifar100': ('https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
                 'https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz'),
}


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
                       + ', '.join(u for us in URLS.values() for u in us))
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
        f'official archive: {", ".join(u for us in URLS.values() for u in us)}')
  if len(layouts) > 1:
    raise DatasetError(f'{path} mixes files of several CIFAR distributions '
                       f'({", ".join(f"{l.dataset}/{l.fmt}" for l in layouts)}); use one.')
  lay = layouts[0]
  if lay.dataset != dataset:
    raise DatasetError(
        f'{path} holds {lay.dataset.upper()} ({lay.fmt} format) but data.dataset={dataset!r}. '
        f'Set --config.data.dataset={lay.dataset}, or point data.archive at a '
        f'{dataset.upper()} archive ({" or ".join(URLS.get(dataset, ()))}).')
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

