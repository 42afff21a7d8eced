"""Reading the official `.npz` layout: other files' names and shapes canonicalized, and described.

The official files cannot be downloaded here: `npz_fixtures` builds arrays with the names and
shapes of the released ones, from a table written out by hand (not from our model).
"""

import numpy as np

import npz_fixtures
from vit_jax import npz_layout


def test_other_file_layouts_are_canonicalized():
  """big_vision / linen files (params/ prefix, linen numbering, scanned blocks, top-level
  pos_embedding) and pre-0.3.6 GroupNorm shapes read as the official names."""
  shapes = npz_fixtures.official_shapes((32, 3, 2, 64), 2, image=32, num_classes=5,
                                        resnet_layers=(1,))
  official = npz_fixtures.random_arrays(shapes)
  linen = {}
  for k, v in official.items():
    k = (k.replace('MultiHeadDotProductAttention_1', 'MultiHeadDotProductAttention_0')
         .replace('LayerNorm_2', 'LayerNorm_1').replace('MlpBlock_3', 'MlpBlock_0'))
    linen['params/' + k.replace('Transformer/posembed_input/', '')] = v
  stacked = {}
  for k in [k for k in linen if '/encoderblock_' in k]:
    layer, rest = k.split('/encoderblock_')[1].split('/', 1)
    stacked.setdefault('params/Transformer/encoderblock/' + rest, {})[int(layer)] = linen.pop(k)
  linen.update({k: np.stack([v[i] for i in range(3)]) for k, v in stacked.items()})

  flat = npz_layout.canonicalize(linen)
  assert flat.keys() == official.keys()
  for k, v in official.items():
    np.testing.assert_array_equal(flat[k], v.reshape(-1) if v.shape[:3] == (1, 1, 1) else v)
  d = npz_layout.describe(flat)
  assert (d['num_layers'], d['num_heads'], d['resnet_layers'], d['grid']) == (3, 2, (1,), (4, 4))
