"""The official ViT `.npz` layout, written out by hand, and random-valued files in it.

Why by hand: the loader must be checked against the names and shapes of the released files
(vit_jax `models_vit.py` / `models_resnet.py`, pre-linen module numbering, as timm's
`_load_weights` reads them), not against our own model, which would make the check circular.
The real files cannot be downloaded here; these have their names and shapes, random values.
"""

from __future__ import annotations

import numpy as np

# ViT paper / AugReg: hidden, layers, heads, MLP.
SIZES = {'Ti': (192, 12, 3, 768), 'S': (384, 12, 6, 1536), 'B': (768, 12, 12, 3072),
         'L': (1024, 24, 16, 4096), 'H': (1280, 32, 16, 5120)}


def official_shapes(size: str | tuple[int, int, int, int], patch: int, image: int = 224, num_classes: int = 21843,
                    representation_size: int | None = None,
                    resnet_layers: tuple[int, ...] = ()) -> dict[str, tuple[int, ...]]:
  """Names -> shapes of an official checkpoint, e.g. ('B', 16, 224, 21843, 768) = ViT-B_16.npz
  (imagenet21k, with pre-logits); ('B', 1, ..., resnet_layers=(3, 4, 9)) = R50+ViT-B_16.npz.
  `size` may also be (hidden, layers, heads, mlp) for small files in the same layout."""
  d, layers, heads, mlp = SIZES[size] if isinstance(size, str) else size
  s: dict[str, tuple[int, ...]] = {}
  channels, stride = 3, 1
  if resnet_layers:
    width = 64
    s['conv_root/kernel'] = (7, 7, 3, width)
    s['gn_root/scale'] = s['gn_root/bias'] = (1, 1, 1, width)  # pre-0.3.6 flax GroupNorm
    channels, stride = width, 4
    for b, units in enumerate(resnet_layers, 1):
      f = width * 2**(b - 1)
      if b > 1:
        stride *= 2
      for u in range(1, units + 1):
        p = f'block{b}/unit{u}/'
        s[p + 'conv1/kernel'] = (1, 1, channels, f)
        s[p + 'conv2/kernel'] = (3, 3, f, f)
        s[p + 'conv3/kernel'] = (1, 1, f, 4 * f)
        for g, c in (('gn1', f), ('gn2', f), ('gn3', 4 * f)):
          s[p + g + '/scale'] = s[p + g + '/bias'] = (1, 1, 1, c)
        if u == 1:
          s[p + 'conv_proj/kernel'] = (1, 1, channels, 4 * f)
          s[p + 'gn_proj/scale'] = s[p + 'gn_proj/bias'] = (1, 1, 1, 4 * f)
        channels = 4 * f
  grid = image // stride // patch
  s['embedding/kernel'] = (patch, patch, channels, d)
  s['embedding/bias'] = (d,)
  s['cls'] = (1, 1, d)
  s['Transformer/posembed_input/pos_embedding'] = (1, 1 + grid * grid, d)
  for i in range(layers):
    p = f'Transformer/encoderblock_{i}/'
    for ln in ('LayerNorm_0', 'LayerNorm_2'):
      s[f'{p}{ln}/scale'] = s[f'{p}{ln}/bias'] = (d,)
    a = p + 'MultiHeadDotProductAttention_1/'
    for n in ('query', 'key', 'value'):
      s[f'{a}{n}/kernel'] = (d, heads, d // heads)
      s[f'{a}{n}/bias'] = (heads, d // heads)
    s[a + 'out/kernel'] = (heads, d // heads, d)
    s[a + 'out/bias'] = (d,)
    s[p + 'MlpBlock_3/Dense_0/kernel'] = (d, mlp)
    s[p + 'MlpBlock_3/Dense_0/bias'] = (mlp,)
    s[p + 'MlpBlock_3/Dense_1/kernel'] = (mlp, d)
    s[p + 'MlpBlock_3/Dense_1/bias'] = (d,)
  s['Transformer/encoder_norm/scale'] = s['Transformer/encoder_norm/bias'] = (d,)
  head_in = d
  if representation_size:
    s['pre_logits/kernel'] = (d, representation_size)
    s['pre_logits/bias'] = (representation_size,)
    head_in = representation_size
  s['head/kernel'] = (head_in, num_classes)
  s['head/bias'] = (num_classes,)
  return s


def random_arrays(shapes: dict[str, tuple[int, ...]], seed: int = 0,
                  scale: float = 0.02) -> dict[str, np.ndarray]:
  """float32 noise; norm scales around 1 so normalization stays well conditioned."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in shapes.items():
    v = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
    if name.endswith('/scale'):
      v += 1.0
    out[name] = v
  return out


def write_official_npz(path, shapes: dict[str, tuple[int, ...]], seed: int = 0,
                       prefix: str = '') -> dict[str, np.ndarray]:
  """Writes a random-valued file with exactly these names (optionally prefixed, e.g.
  'opt/target/'); returns the arrays."""
  arrays = random_arrays(shapes, seed)
  np.savez(path, **{prefix + k: v for k, v in arrays.items()})
  return arrays
