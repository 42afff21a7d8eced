"""vit_jax/data: CIFAR archives / TFDS -> augmented, normalized, host-local numpy batches.

Use it as ``from vit_jax import data``: load once with ``data.load_data(config.data)`` and pass the
result as ``source=`` to ``data.create_train_iterator`` / ``data.create_eval_iterator``. Config
values are checked before, once, by vit_jax/validation.py; the errors raised here
(``DatasetError``) are those that need the data itself (a missing or damaged archive, a TFDS
dataset that is not prepared, an empty split).

One concept per module, leaves first:

* ``core``: the shared types (DatasetInfo, DatasetError, Split, the DataSource base).
* ``cifar``: the official CIFAR-10/100 archive reader (python or binary format, tar or folder).
* ``tfds``: TFDS builders, the offline download probe, whole splits decoded into memory.
* ``splits``: the content-keyed validation holdout, split strings on in-memory splits, and the
  channel statistics used for normalization.
* ``source``: ``load_data`` and the in-memory source (``data.cache=True``, the default).
* ``stream``: the TFDS streaming source (``data.cache=False``).
* ``augment`` (+ ``randaugment``): stateless, batch-level augmentation keyed by global example
  position, one resampling to the output size.
* ``iterators``: the train/eval iterators and each process's rows of a global batch.

Why two ways to build batches (iterators.py's index stream and stream.py): the index stream needs
random access to decoded arrays and makes batch k a pure function of (seed, k) with an exact
per-epoch permutation; TFDS record files of datasets too large for memory (or with images of
varying size) can only be read in order, through a shuffle buffer. Both share the augmentation and
the host layout, so an example is augmented the same way whichever source it comes from.
"""

from vit_jax.data.cifar import read_cifar_archive
from vit_jax.data.core import DatasetError, DatasetInfo, DataSource, Split
from vit_jax.data.iterators import create_eval_iterator, create_train_iterator
from vit_jax.data.iterators import release_in_background
from vit_jax.data.source import MemorySource, get_dataset_info, load_data, num_examples
from vit_jax.data.stream import TfdsStream

__all__ = [
    'DataSource', 'DatasetError', 'DatasetInfo', 'MemorySource', 'Split', 'TfdsStream',
    'create_eval_iterator', 'create_train_iterator', 'get_dataset_info', 'load_data',
    'num_examples', 'read_cifar_archive', 'release_in_background',
]
