"""Model-zoo names ('B/16', 'R50+B/16', 'ViT-B_16', ...) -> the `config.model` fields they set."""

from __future__ import annotations

import re
from typing import Any

from vit_jax import resnet

# name -> (hidden_size, num_layers, num_heads, mlp_dim); ViT paper / AugReg sizes.
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    'Ti': (192, 12, 3, 768),
    'S': (384, 12, 6, 1536),
    'B': (768, 12, 12, 3072),
    'L': (1024, 24, 16, 4096),
    'H': (1280, 32, 16, 5120),
}


# name -> (hidden_size, blocks per stage, heads per stage); Liu et al. 2021, table 1 (patch 4,
# window 7, 224px).
SWIN_VARIANTS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    'swin_t': (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    'swin_s': (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    'swin_b': (128, (2, 2, 18, 2), (4, 8, 16, 32)),
}


def parse_variant(variant: str) -> dict[str, Any]:
  """Model-zoo name -> the `config.model` fields it sets.

  'B' sets hidden_size, num_layers, num_heads, mlp_dim (ViT paper / AugReg sizes, `VARIANTS`);
  'B/16' also patch_size=16 and resnet_layers=() (a pure ViT); hybrids 'R50+B/16', 'R50+L/32',
  'R26+S/32' set resnet_layers (`resnet.RESNET_VARIANTS`), resnet_width=1 and patch_size=1 (on the
  feature map). The official file names' spelling is accepted too: 'ViT-B_16', 'R50+ViT-B_16',
  'R26_S_32' (AugReg).
  """
  text = str(variant).strip()
  if text.lower() in SWIN_VARIANTS:  # 'swin_t': model.name='swin' with the paper's sizes
    hidden, depths, heads = SWIN_VARIANTS[text.lower()]
    return {'name': 'swin', 'hidden_size': hidden, 'stage_depths': depths, 'stage_heads': heads,
            'patch_size': 4, 'window_size': 7}
  m = re.fullmatch(r'(?:(R\d+)[+_])?(?:ViT-)?([A-Za-z]+)(?:[/_](\d+))?', text)
  if not m or m.group(2) not in VARIANTS:
    hybrids = ', '.join(f'{r}+<size>/{p}' for r, p in resnet.RESNET_VARIANTS)
    raise ValueError(f'Unknown model variant {variant!r}; valid: {", ".join(VARIANTS)}, '
                     f'optionally with "/<patch>" (e.g. "B/16"); hybrids {hybrids} '
                     f'(e.g. "R50+B/16"); Swin: {", ".join(SWIN_VARIANTS)}.')
  stem, size, patch = m.groups()  # e.g. ('R50', 'B', '16')
  fields = dict(zip(('hidden_size', 'num_layers', 'num_heads', 'mlp_dim'), VARIANTS[size]))
  if stem:
    if not patch or (stem, int(patch)) not in resnet.RESNET_VARIANTS:
      raise ValueError(f'Unknown hybrid variant {variant!r}; valid hybrids: ' +
                       ', '.join(f'{r}+<size>/{p}' for r, p in resnet.RESNET_VARIANTS) +
                       f' with <size> one of {", ".join(VARIANTS)} (e.g. "R50+B/16").')
    fields.update(resnet_layers=resnet.RESNET_VARIANTS[(stem, int(patch))], resnet_width=1,
                  patch_size=1)
  elif patch:
    fields.update(patch_size=int(patch), resnet_layers=())
  return fields
