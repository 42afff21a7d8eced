"""vit_jax/data/core.py: the types every data module passes around.

Why a file of its own: the readers (cifar.py, tfds.py), the split logic (splits.py), the
sources (source.py, stream.py) and the iterators all exchange these few types; keeping them in
a leaf module lets each of those import it without importing one another.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Config fields that determine the decoded splits; a DataSource is valid only for these values.
SOURCE_FIELDS = ('dataset', 'archive', 'tfds_data_dir', 'train_split', 'val_fraction',
                 'val_split_seed', 'cache', 'strict_counts')


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


class DataSource:
  """A loaded dataset: its DatasetInfo, for the data config values it was loaded with.

  Why: reading and decoding the archive (or TFDS split) takes seconds; train.py does it once
  (``load_data``) and passes it as ``source=`` to the iterators instead of hiding a global cache.
  Two kinds exist (see the package docstring): ``source.MemorySource`` (decoded splits in memory,
  ``data.cache=True``) and ``stream.TfdsStream`` (TFDS files read as they are used).
  """

  def __init__(self, data_config, info: DatasetInfo | None):
    self.key = {f: data_config[f] for f in SOURCE_FIELDS}
    self.info = info

  def check(self, data_config) -> None:
    """Raises ValueError when `data_config` asks for other splits than this source holds."""
    key = {f: data_config[f] for f in SOURCE_FIELDS}
    if key != self.key:
      diff = {f: (self.key[f], key[f]) for f in key if key[f] != self.key[f]}
      raise ValueError(f'source= was loaded for other data config values {diff}.')

  def num_examples(self, split: str) -> int:
    """Number of examples an eval over `split` covers (each exactly once)."""
    raise NotImplementedError
