"""Tiny CIFAR archives in the official formats, written into a test's tmp_path.

Why: tests must not depend on the real data, yet the readers must be checked against the exact
official layouts (member names, pickle keys, channel-planar record bytes). Images are
deterministic and carry their index and label in the pixels, so a test can tell whether the
image <-> label pairing and the HWC transpose survived.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import ml_collections
import numpy as np

from configs import common


def make_examples(n: int, num_classes: int, *, start: int = 0, labels=None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [n, 32, 32, 3], labels int32 [n]), distinct along every axis.

  Pixel (y, x, c) of example i is a function of (i, y, x, c); pixel (0, 0) holds the label (R),
  i % 256 (G) and i // 256 (B), so `label_from_pixels` recovers the label from the image alone.
  """
  i = np.arange(start, start + n)[:, None, None, None]
  y = np.arange(32)[None, :, None, None]
  x = np.arange(32)[None, None, :, None]
  c = np.arange(3)[None, None, None, :]
  images = ((i * 7 + y * 5 + x * 3 + c * 101) % 256).astype(np.uint8)
  if labels is None:
    labels = (np.arange(start, start + n) * 37) % num_classes
  labels = np.asarray(labels, np.int32)
  images[:, 0, 0, 0] = labels
  images[:, 0, 0, 1] = np.arange(start, start + n) % 256
  images[:, 0, 0, 2] = np.arange(start, start + n) // 256
  return images, labels


def label_from_pixels(images: np.ndarray) -> np.ndarray:
  """The label that `make_examples` wrote into pixel (0, 0, R)."""
  return images[..., 0, 0, 0].astype(np.int32)


def _planar(images: np.ndarray) -> np.ndarray:
  """HWC -> the official channel-planar rows (1024 R, 1024 G, 1024 B), uint8 [N, 3072]."""
  return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _write(root, folder: str, files: dict[str, bytes], kind: str) -> str:
  """Writes files under `folder/` as a .tar.gz ('tar.gz'), a plain .tar or a folder ('dir')."""
  os.makedirs(root, exist_ok=True)
  if kind == 'dir':
    path = os.path.join(root, folder)
    os.makedirs(path, exist_ok=True)
    for name, data in files.items():
      with open(os.path.join(path, name), 'wb') as f:
        f.write(data)
    return path
  path = os.path.join(root, f'{folder}.{kind}')
  with tarfile.open(path, 'w:gz' if kind == 'tar.gz' else 'w') as tar:
    info = tarfile.TarInfo(folder)
    info.type = tarfile.DIRTYPE
    tar.addfile(info)
    for name, data in files.items():
      info = tarfile.TarInfo(f'{folder}/{name}')
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return path


def _names(n):
  return [f'class_{i:03d}' for i in range(n)]


def write_cifar100_binary(root, splits: dict, kind: str = 'tar.gz') -> str:
  """splits: {'train': (images, labels), 'test': ...} -> cifar-100-binary archive or folder."""
  files = {}
  for split, (images, labels) in splits.items():
    coarse = (np.asarray(labels) // 5).astype(np.uint8)[:, None]
    rows = np.concatenate([coarse, np.asarray(labels, np.uint8)[:, None], _planar(images)], 1)
    files[f'{split}.bin'] = rows.tobytes()
  files['fine_label_names.txt'] = ('\n'.join(_names(100)) + '\n').encode()
  files['coarse_label_names.txt'] = ('\n'.join(_names(20)) + '\n').encode()
  return _write(root, 'cifar-100-binary', files, kind)


def write_cifar100_python(root, splits: dict, kind: str = 'tar.gz') -> str:
  files = {}
  for split, (images, labels) in splits.items():
    files[split] = pickle.dumps({
        b'filenames': [f'{i}.png'.encode() for i in range(len(images))],
        b'batch_label': f'{split} batch'.encode(),
        b'fine_labels': [int(v) for v in labels],
        b'coarse_labels': [int(v) // 5 for v in labels],
        b'data': _planar(images)}, protocol=2)
  files['meta'] = pickle.dumps({b'fine_label_names': [n.encode() for n in _names(100)],
                                b'coarse_label_names': [n.encode() for n in _names(20)]},
                               protocol=2)
  files['file.txt~'] = b''
  return _write(root, 'cifar-100-python', files, kind)


def _cifar10_batches(splits):
  """Official CIFAR-10 splits train into 5 equal data_batch files."""
  for split, (images, labels) in splits.items():
    if split == 'train':
      for b, idx in enumerate(np.array_split(np.arange(len(images)), 5), start=1):
        yield f'data_batch_{b}', images[idx], np.asarray(labels)[idx]
    else:
      yield 'test_batch', images, np.asarray(labels)


def write_cifar10_binary(root, splits: dict, kind: str = 'tar.gz') -> str:
  files = {f'{name}.bin': np.concatenate([np.asarray(lab, np.uint8)[:, None], _planar(img)],
                                         1).tobytes()
           for name, img, lab in _cifar10_batches(splits)}
  files['batches.meta.txt'] = ('\n'.join(_names(10)) + '\n\n').encode()
  files['readme.html'] = b'<html></html>'
  return _write(root, 'cifar-10-batches-bin', files, kind)


def write_cifar10_python(root, splits: dict, kind: str = 'tar.gz') -> str:
  files = {name: pickle.dumps({b'batch_label': name.encode(), b'labels': [int(v) for v in lab],
                               b'data': _planar(img),
                               b'filenames': [b'x.png'] * len(img)}, protocol=2)
           for name, img, lab in _cifar10_batches(splits)}
  files['batches.meta'] = pickle.dumps({b'num_cases_per_batch': 10000,
                                        b'label_names': [n.encode() for n in _names(10)],
                                        b'num_vis': 3072}, protocol=2)
  return _write(root, 'cifar-10-batches-py', files, kind)


def truncate(path: str, keep_fraction: float, dest: str | None = None) -> str:
  """Copies the first `keep_fraction` of a file's bytes (a download that stopped early)."""
  with open(path, 'rb') as f:
    data = f.read()
  dest = dest or path + '.truncated'
  with open(dest, 'wb') as f:
    f.write(data[:int(len(data) * keep_fraction)])
  return dest


def data_config(**overrides) -> ml_collections.ConfigDict:
  """configs/common.py's data config for tiny archives: no official-count check, no val."""
  c = common.get_data_config()
  c.strict_counts = False
  for k, v in overrides.items():
    c[k] = v
  return c
