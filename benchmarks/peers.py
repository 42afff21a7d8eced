"""Peer implementations for `benchmarks/train_step.py`: the seeds' Keras ViT and timm's ViT.

Both are built from one `ModelSpec` (the same shapes as our config) and return a `step()`
callable that runs one full training step (forward, loss, backward, optimizer update) on a fixed
random batch, so the caller can time it exactly as it times ours.

Keras (`build_keras_step`): Keras 3 on the TensorFlow backend, rebuilt from the seed notebook's
code: Patches (tf.image.extract_patches) -> Dense(hidden) projection + Embedding position
embedding; per block LayerNorm(1e-6) -> MultiHeadAttention(num_heads, key_dim=head_dim,
dropout=attention dropout) -> add -> LayerNorm -> MLP [mlp_dim, hidden] (GELU on both Dense,
dropout) -> add; final LayerNorm -> Flatten -> Dropout -> MLP head (GELU, dropout) -> Dense(classes);
AdamW(lr 1e-3, wd 1e-4), SparseCategoricalCrossentropy(from_logits=True), accuracy + top-5
metrics, timed with `model.train_on_batch` (Keras' default `jit_compile='auto'`, i.e. XLA). The
seed's `data_augmentation` block (Normalization, Resizing, flip, rotation, zoom) is EXCLUDED: the
model takes images already at `image_size`, as our timed step does. The seed's code is pre-LN;
for specs with a token classifier (not the seed's) the Keras model pools by global average
instead (the seed code has no class token).

timm (`build_timm_step`): `timm.models.vision_transformer.VisionTransformer` in PyTorch eager
mode (CPU: `torch.set_num_threads(threads)`), pre-LN, class token + linear head, or, for the
seed's flatten head, `class_token=False, global_pool=''` with the same flatten -> MLP head on top
(a plain torch head after timm's encoder). `attn_head_dim` reproduces head_dim != hidden/heads.
Differences from ours: timm's MLP has no GELU on its output (the seed's MLP has), fused
`scaled_dot_product_attention` unless attention dropout forces the explicit path,
AdamW(lr 1e-3, wd 1e-4).

timm imports torchvision at import time (timm/layers/create_norm.py: FrozenBatchNorm2d;
timm/data/transforms.py: InterpolationMode), even though VisionTransformer never uses it, and
torchvision is not installable here. `_install_torchvision_stub()` registers an import hook that
serves placeholder `torchvision.*` modules (any attribute is an inert class that raises if
instantiated) when the real package is missing; it is installed only by `build_timm_step`.
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The shapes a peer must reproduce (read off our `config.model` / `config.data`)."""
  image_size: int
  patch_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  mlp_activate_output: bool
  classifier: str            # 'flatten' | 'token' | 'gap'
  head_hidden_sizes: Sequence[int]
  dropout_rate: float
  attention_dropout_rate: float
  head_dropout_rate: float
  num_classes: int = 100
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size)**2


def _random_batch(spec: ModelSpec, batch_size: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(batch_size, spec.image_size, spec.image_size, 3)).astype(np.float32)
  labels = rng.integers(0, spec.num_classes, size=batch_size).astype(np.int32)
  return images, labels


# ----------------------------------------------------------------------------- Keras (seed)
def build_keras_step(spec: ModelSpec, batch_size: int, dtype: str = 'float32') -> tuple[Callable, int]:
  """The seed's Keras ViT; returns (step, number of parameters). step() runs one train_on_batch."""
  import os  # pylint: disable=g-import-not-at-top
  os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
  import keras  # pylint: disable=g-import-not-at-top
  from keras import layers, ops  # pylint: disable=g-import-not-at-top

  keras.config.set_dtype_policy('mixed_bfloat16' if dtype == 'bfloat16' else 'float32')
  keras.utils.set_random_seed(0)

  class Patches(layers.Layer):
    def __init__(self, patch_size, **kwargs):
      super().__init__(**kwargs)
      self.patch_size = patch_size

    def call(self, images):
      batch = ops.shape(images)[0]
      patches = ops.image.extract_patches(images, size=self.patch_size)  # tf.image.extract_patches
      return ops.reshape(patches, (batch, -1, patches.shape[-1]))

  class PatchEncoder(layers.Layer):
    def __init__(self, num_patches, projection_dim, **kwargs):
      super().__init__(**kwargs)
      self.num_patches = num_patches
      self.projection = layers.Dense(projection_dim)
      self.position_embedding = layers.Embedding(num_patches, projection_dim)

    def call(self, patch):
      positions = ops.expand_dims(ops.arange(0, self.num_patches, 1), axis=0)
      return self.projection(patch) + self.position_embedding(positions)

  def mlp(x, hidden_units, dropout_rate, activate_last=True):
    for i, units in enumerate(hidden_units):
      last = i == len(hidden_units) - 1
      x = layers.Dense(units, activation=keras.activations.gelu if (activate_last or not last)
                       else None)(x)
      x = layers.Dropout(dropout_rate)(x)
    return x

  inputs = keras.Input(shape=(spec.image_size, spec.image_size, 3))
  encoded = PatchEncoder(spec.num_patches, spec.hidden_size)(Patches(spec.patch_size)(inputs))
  for _ in range(spec.num_layers):
    x1 = layers.LayerNormalization(epsilon=1e-6)(encoded)
    attn = layers.MultiHeadAttention(num_heads=spec.num_heads, key_dim=spec.head_dim,
                                     dropout=spec.attention_dropout_rate)(x1, x1)
    x2 = layers.Add()([attn, encoded])
    x3 = layers.LayerNormalization(epsilon=1e-6)(x2)
    x3 = mlp(x3, [spec.mlp_dim, spec.hidden_size], spec.dropout_rate,
             activate_last=spec.mlp_activate_output)
    encoded = layers.Add()([x3, x2])
  rep = layers.LayerNormalization(epsilon=1e-6)(encoded)
  rep = layers.Flatten()(rep) if spec.classifier == 'flatten' else layers.GlobalAveragePooling1D()(rep)
  rep = layers.Dropout(spec.head_dropout_rate)(rep)
  features = mlp(rep, list(spec.head_hidden_sizes), spec.head_dropout_rate)
  logits = layers.Dense(spec.num_classes, dtype='float32')(features)
  model = keras.Model(inputs=inputs, outputs=logits)
  model.compile(
      optimizer=keras.optimizers.AdamW(learning_rate=spec.learning_rate,
                                       weight_decay=spec.weight_decay),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=[keras.metrics.SparseCategoricalAccuracy(name='accuracy'),
               keras.metrics.SparseTopKCategoricalAccuracy(5, name='top-5-accuracy')])
  keras.config.set_dtype_policy('float32')
  images, labels = _random_batch(spec, batch_size)

  def step():
    return model.train_on_batch(images, labels)  # returns host floats: synchronous

  return step, int(model.count_params())


# ----------------------------------------------------------------------------- timm
class _StubMeta(type):
  def __getattr__(cls, attr):
    if attr.startswith('__'):
      raise AttributeError(attr)
    return f'{cls.__name__}.{attr}'  # hashable placeholder (e.g. InterpolationMode.NEAREST)

  def __call__(cls, *args, **kwargs):
    raise RuntimeError(f'torchvision is not installed: {cls.__name__} is a placeholder')


class _StubModule(types.ModuleType):
  def __getattr__(self, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _StubMeta(name, (), {})


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  def find_spec(self, name, path, target=None):
    del path, target
    if name == 'torchvision' or name.startswith('torchvision.'):
      return importlib.machinery.ModuleSpec(name, self, is_package=True)
    return None

  def create_module(self, spec):
    module = _StubModule(spec.name)
    module.__path__ = []
    return module

  def exec_module(self, module):
    pass


def _install_torchvision_stub() -> bool:
  """Placeholder torchvision modules if the real one is missing or does not import; True if the
  stub is in use."""
  if 'torchvision' in sys.modules:
    return isinstance(sys.modules['torchvision'], _StubModule)
  if importlib.util.find_spec('torchvision') is not None:
    try:  # `pip install timm` can bring a torchvision built for another torch, which fails here
      import torchvision  # pylint: disable=g-import-not-at-top,unused-import
      return False
    except Exception:  # pylint: disable=broad-except
      for name in [m for m in sys.modules if m == 'torchvision' or m.startswith('torchvision.')]:
        del sys.modules[name]
  sys.meta_path.insert(0, _TorchvisionStub())
  return True


def timm_available() -> str | None:
  """None if torch + timm import (with the stub if needed), else the reason."""
  try:
    _install_torchvision_stub()
    import timm.models.vision_transformer  # pylint: disable=g-import-not-at-top,unused-import
  except Exception as e:  # pylint: disable=broad-except
    return f'{type(e).__name__}: {e}'
  return None


def build_timm_step(spec: ModelSpec, batch_size: int, dtype: str = 'float32',
                    threads: int | None = None) -> tuple[Callable, int]:
  """timm's VisionTransformer (+ the seed's flatten head when asked); returns (step, params)."""
  _install_torchvision_stub()
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  from timm.layers.attention import Attention  # pylint: disable=g-import-not-at-top
  from timm.models.vision_transformer import VisionTransformer  # pylint: disable=g-import-not-at-top

  if threads:
    torch.set_num_threads(threads)
  torch.manual_seed(0)

  class _Attention(Attention):  # timm wants a class (issubclass check), not a partial
    def __init__(self, dim, **kwargs):
      super().__init__(dim, attn_head_dim=spec.head_dim, **kwargs)

  flatten = spec.classifier == 'flatten'
  backbone = VisionTransformer(
      img_size=spec.image_size, patch_size=spec.patch_size, embed_dim=spec.hidden_size,
      depth=spec.num_layers, num_heads=spec.num_heads, mlp_ratio=spec.mlp_dim / spec.hidden_size,
      num_classes=0 if flatten or spec.head_hidden_sizes else spec.num_classes,
      class_token=spec.classifier == 'token',
      global_pool='' if flatten else ('token' if spec.classifier == 'token' else 'avg'),
      drop_rate=spec.head_dropout_rate, proj_drop_rate=spec.dropout_rate,
      pos_drop_rate=spec.dropout_rate, attn_drop_rate=spec.attention_dropout_rate,
      attn_layer=_Attention)
  if flatten or spec.head_hidden_sizes:
    head = [nn.Flatten()] if flatten else []
    width = spec.num_patches * spec.hidden_size if flatten else spec.hidden_size
    head.append(nn.Dropout(spec.head_dropout_rate))
    for units in spec.head_hidden_sizes:
      head += [nn.Linear(width, units), nn.GELU(), nn.Dropout(spec.head_dropout_rate)]
      width = units
    head.append(nn.Linear(width, spec.num_classes))
    model = nn.Sequential(backbone, *head)
  else:
    model = backbone
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
  images, labels = _random_batch(spec, batch_size)
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW
  y = torch.from_numpy(labels).long()
  loss_fn = nn.CrossEntropyLoss()
  bf16 = dtype == 'bfloat16'

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
      logits = model(x)
    loss = loss_fn(logits.float(), y)
    loss.backward()
    opt.step()
    return float(loss)  # synchronous

  return step, sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
  """One peer, one shape: prints a JSON line {img_per_sec, step_times, cpu_ms_per_img, params}."""
  import argparse  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument('--framework', choices=('keras', 'timm'), required=True)
  parser.add_argument('--spec', required=True, help='JSON of ModelSpec fields')
  parser.add_argument('--batch_size', type=int, required=True)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--threads', type=int, default=os.cpu_count())
  args = parser.parse_args(argv)
  spec = ModelSpec(**json.loads(args.spec))
  t0 = time.perf_counter()
  if args.framework == 'keras':
    step, n_params = build_keras_step(spec, args.batch_size, args.dtype)
  else:
    step, n_params = build_timm_step(spec, args.batch_size, args.dtype, threads=args.threads)
  for _ in range(max(1, args.warmup)):
    step()
  setup_s = time.perf_counter() - t0
  times, cpus = [], []
  for _ in range(args.steps):
    t0, c0 = time.perf_counter(), time.process_time()
    step()
    times.append(time.perf_counter() - t0)
    cpus.append(time.process_time() - c0)
  print(json.dumps({'img_per_sec': args.batch_size / min(times),
                    'step_times': [round(t, 4) for t in times],
                    'cpu_ms_per_img': 1e3 * min(cpus) / args.batch_size, 'params': n_params,
                    'setup_s': round(setup_s, 1)}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
