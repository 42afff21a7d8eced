"""vit_jax/data/splits.py: which examples form each split, and the training statistics.

Why content-keyed: ``val`` is the ``round(val_fraction * N)`` examples of ``train_split`` with
the smallest keyed hash (blake2b keyed by ``val_split_seed``) of their pixels and label. It is a
fixed pseudo-random subset that does not depend on the order of records in the file, so the TFDS
and archive copies of CIFAR give the same split and the same training stream. The per-channel
mean/std used for normalization are exact, computed from 256-bin histograms of the training
part (no float copy of the images).
"""

from __future__ import annotations

import hashlib
import math
import types

import numpy as np
import tensorflow_datasets as tfds

from vit_jax.data.core import DatasetError, Split


def slice_spec(available: dict[str, Split], spec: str, where: str) -> Split:
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


def content_order(split: Split, seed: int) -> np.ndarray:
  """Indices sorted by a keyed hash of (pixels, label): a fixed permutation blind to file order."""
  key = (seed % 2**64).to_bytes(8, 'little')
  flat = split.images.reshape(len(split), -1)
  h = np.fromiter(
      (int.from_bytes(hashlib.blake2b(row.tobytes() + int(lab).to_bytes(4, 'little'),
                                      digest_size=8, key=key).digest(), 'little')
       for row, lab in zip(flat, split.labels)), dtype=np.uint64, count=len(split))
  return np.argsort(h, kind='stable')


def hold_out(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
  """(train, val): val is round(val_fraction * N) examples chosen by content, not file position."""
  order = content_order(split, seed)
  n_val = int(math.floor(val_fraction * len(split) + 0.5))
  return split.take(order[n_val:]), split.take(order[:n_val])


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Exact per-channel mean/std of uint8 images via 256-bin histograms (fast, no float copy)."""
  mean, std = [], []
  v = np.arange(256, dtype=np.float64)
  for c in range(images.shape[-1]):
    hist = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
    m = (hist * v).sum() / hist.sum()
    mean.append(float(m))
    std.append(float(np.sqrt((hist * (v - m) ** 2).sum() / hist.sum())))
  return tuple(mean), tuple(std)

