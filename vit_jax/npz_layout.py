"""The official ViT `.npz` layout: flat '/'-joined parameter names, reading a file into our names,
and describing what a file (or a param tree) holds.

Why separate: reading and naming the official layout is what both directions need, and what
`python -m vit_jax.pretrained --inspect` prints; fitting a file to a model (head, pos-emb
resampling, shape checks) and exporting ours are `vit_jax.pretrained`. Nothing here builds a model.

The official files (ViT paper, AugReg; gs://vit_models/{imagenet21k,augreg}/*.npz, see docs/pretrained.md)
hold the parameter tree flattened with '/' (`np.savez`), e.g. `Transformer/encoderblock_0/
MultiHeadDotProductAttention_1/query/kernel`. Our model (`vit_jax/models.py`, norm placement
`pre`, classifier `token`) uses the same names, so the mapping is the identity plus a few
normalizations applied by `read_npz` (`canonicalize`):

  * a common prefix `opt/target/` (older vit_jax files) or `params/` (big_vision) is dropped;
  * linen-numbered block names (`MultiHeadDotProductAttention_0`, `LayerNorm_1`, `MlpBlock_0`,
    as vit_jax/big_vision linen code writes them) become the file names above (`_1`, `_2`, `_3`);
  * a scanned `Transformer/encoderblock/...` with a leading layer axis is split per layer;
  * big_vision's top-level `pos_embedding` becomes `Transformer/posembed_input/pos_embedding`;
  * GroupNorm scales/biases of hybrids, stored [1, 1, 1, C] by pre-0.3.6 flax, become [C].
"""

from __future__ import annotations

import collections
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vit_jax import checkpoint
from vit_jax import models
from vit_jax import resnet
from vit_jax import variants

POSEMB = 'Transformer/posembed_input/pos_embedding'
BLOCK_NAME = re.compile(r'^Transformer/encoderblock_(\d+)/')
SCANNED_NAME = re.compile(r'^Transformer/encoderblock(?:_(\d+)-(\d+))?/')  # models.scan_names
GROUPNORM_NAME = re.compile(r'(^|/)gn(\d+|_root|_proj)/(scale|bias)$')

# Every name of the official layout (ViT, optional pre_logits, R+ViT hybrids).
_OFFICIAL = [re.compile(p) for p in (
    r'^cls$', r'^embedding/(kernel|bias)$', r'^Transformer/posembed_input/pos_embedding$',
    r'^Transformer/encoder_norm/(scale|bias)$',
    r'^Transformer/encoderblock_\d+/LayerNorm_[02]/(scale|bias)$',
    r'^Transformer/encoderblock_\d+/MultiHeadDotProductAttention_1/(query|key|value|out)/'
    r'(kernel|bias)$',
    r'^Transformer/encoderblock_\d+/MlpBlock_3/Dense_[01]/(kernel|bias)$',
    r'^(pre_logits|head)/(kernel|bias)$',
    r'^conv_root/kernel$', r'^gn_root/(scale|bias)$',
    r'^block\d+/unit\d+/conv([123]|_proj)/kernel$', r'^block\d+/unit\d+/gn([123]|_proj)/(scale|bias)$',
)]


class PretrainedError(checkpoint.CheckpointError):
  """A pretrained file that cannot be used as asked; the message says which names and why."""


# ----------------------------------------------------------------------------- flat trees


def flatten(params: Any) -> dict[str, np.ndarray]:
  """Nested params -> {'a/b/c': host numpy array}."""
  flat = {}

  def walk(node, prefix):
    if isinstance(node, Mapping):
      for k, v in node.items():
        walk(v, f'{prefix}/{k}' if prefix else str(k))
    else:
      flat[prefix] = np.asarray(node)

  walk(params, '')
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict:
  tree: dict = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def place(tree: Any, shardings: Any) -> Any:
  """Host arrays -> global jax Arrays with `shardings` (a like tree); each process supplies
  only its shards (`jax.make_array_from_callback`), so it also works on several hosts."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(
      lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: x[index]),
      tree, shardings)


def unstack_scanned(flat: dict[str, np.ndarray]
                    ) -> tuple[dict[str, np.ndarray], list[tuple[int, int]] | None]:
  """Scanned blocks -> 'Transformer/encoderblock_{i}/X'; returns their (first, end) layer
  segments for `stack_scanned`, or None when nothing was scanned.

  A scanned stack is 'Transformer/encoderblock/X' [layers, ...], or, when the norm spec changes
  over depth, one 'Transformer/encoderblock_{a}-{b}/X' [b - a + 1, ...] per run of identical
  layers (`models.scan_names`).
  """
  out, lengths = {}, collections.defaultdict(set)
  for k, v in flat.items():
    m = SCANNED_NAME.match(k)
    if not m:
      out[k] = v
      continue
    first = int(m.group(1)) if m.group(1) else 0
    lengths[first].add(v.shape[0])
    if m.group(1) and v.shape[0] != int(m.group(2)) - first + 1:
      raise PretrainedError(f'{k}: {v.shape[0]} stacked layers, but its name says layers '
                            f'{m.group(1)}-{m.group(2)}.')
    for i in range(v.shape[0]):
      out[f'Transformer/encoderblock_{first + i}/{k[m.end():]}'] = v[i]
  if not lengths:
    return flat, None
  uneven = {a: sorted(n) for a, n in lengths.items() if len(n) != 1}
  if uneven:
    raise PretrainedError(f'Scanned encoder blocks with different leading (layer) axes: {uneven}.')
  return out, [(a, a + n.pop()) for a, n in sorted(lengths.items())]


def stack_scanned(flat: dict[str, np.ndarray],
                  segments: int | Sequence[tuple[int, int]]) -> dict[str, np.ndarray]:
  """Inverse of `unstack_scanned` (`segments`: its result, or a layer count for one stack)."""
  segments = [(0, segments)] if isinstance(segments, int) else list(segments)
  out = {k: v for k, v in flat.items() if not BLOCK_NAME.match(k)}
  per_name = collections.defaultdict(dict)
  for k, v in flat.items():
    m = BLOCK_NAME.match(k)
    if m:
      per_name[k[m.end():]][int(m.group(1))] = v
  for name, (a, b) in zip(models.scan_names(segments), segments):
    for rest, layers in per_name.items():
      if a in layers:
        out[f'Transformer/{name}/{rest}'] = np.stack([layers[i] for i in range(a, b)])
  return out


# ----------------------------------------------------------------------------- reading files


def canonicalize(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Names/shapes of an official-style file -> the names/shapes of our model (module docstring)."""
  flat = {k: np.asarray(v) for k, v in raw.items()}
  for prefix in ('opt/target/', 'params/'):
    if flat and all(k.startswith(prefix) for k in flat):
      flat = {k[len(prefix):]: v for k, v in flat.items()}
  if 'pos_embedding' in flat and POSEMB not in flat:  # big_vision
    flat[POSEMB] = flat.pop('pos_embedding')
  flat, _ = unstack_scanned(flat)
  # Linen auto-numbering counts per class; the released files count per module (pre-linen).
  blocks = [k for k in flat if BLOCK_NAME.match(k)]
  if any('/MlpBlock_0/' in k for k in blocks) and not any('/MlpBlock_3/' in k for k in blocks):
    renames = (('/MultiHeadDotProductAttention_0/', '/MultiHeadDotProductAttention_1/'),
               ('/LayerNorm_1/', '/LayerNorm_2/'), ('/MlpBlock_0/', '/MlpBlock_3/'))
    fixed = {}
    for k, v in flat.items():
      if BLOCK_NAME.match(k):
        for old, new in renames:
          k = k.replace(old, new)
      fixed[k] = v
    flat = fixed
  for k, v in flat.items():
    if GROUPNORM_NAME.search(k) and v.ndim > 1 and all(d == 1 for d in v.shape[:-1]):
      flat[k] = v.reshape(v.shape[-1])
  return flat


def read_npz(path: str) -> dict[str, np.ndarray]:
  """The arrays of an official-layout `.npz`, with `canonicalize`d names."""
  if not os.path.exists(path):
    raise PretrainedError(
        f'Pretrained file {path!r} does not exist. Download an official checkpoint first, e.g. '
        'https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz (see '
        'docs/pretrained.md).')
  try:
    with np.load(path, allow_pickle=False) as f:
      raw = {k: f[k] for k in f.files}
  except Exception as e:  # pylint: disable=broad-except
    raise PretrainedError(f'Cannot read {path!r} as an .npz file ({type(e).__name__}: {e}); '
                          'was the download complete?') from e
  if not raw:
    raise PretrainedError(f'{path!r} holds no arrays.')
  return canonicalize(raw)


def describe(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The architecture a flat (canonical) param dict implies, with the matching zoo variant."""
  d: dict[str, Any] = {}
  emb = flat.get('embedding/kernel')
  if emb is not None:
    d['patch_size'], d['hidden_size'] = int(emb.shape[0]), int(emb.shape[-1])
  layers = {int(m.group(1)) for k in flat if (m := BLOCK_NAME.match(k))}
  d['num_layers'] = len(layers)
  q = flat.get('Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel')
  if q is not None and q.ndim == 3:
    d['num_heads'] = int(q.shape[1])
  mlp = flat.get('Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel')
  if mlp is not None:
    d['mlp_dim'] = int(mlp.shape[-1])
  d['classifier'] = 'token' if 'cls' in flat else 'gap'
  pre = flat.get('pre_logits/kernel')
  d['representation_size'] = int(pre.shape[-1]) if pre is not None else None
  head = flat.get('head/kernel')
  if head is not None:
    d['num_classes'] = int(head.shape[-1])
  stages = collections.Counter(m.group(1) for k in flat
                               if (m := re.match(r'^block(\d+)/unit(\d+)/conv1/kernel$', k)))
  d['resnet_layers'] = tuple(stages[str(s)] for s in range(1, len(stages) + 1))
  pe = flat.get(POSEMB)
  if pe is not None:
    n = pe.shape[1] - (1 if 'cls' in flat else 0)
    g = math.isqrt(n)
    d['grid'] = (g, g) if g * g == n else (n,)
  placement = sorted({k.split('/')[2] for k in flat if BLOCK_NAME.match(k) and
                      k.split('/')[2].startswith('LayerNorm')})
  d['block_layernorms'] = placement
  sizes = (d.get('hidden_size'), d['num_layers'], d.get('num_heads'), d.get('mlp_dim'))
  name = next((v for v, s in variants.VARIANTS.items() if s == sizes), None)
  if name and 'patch_size' in d:
    if not d['resnet_layers']:
      d['variant'] = f'{name}/{d["patch_size"]}'
    else:
      effective = d['patch_size'] * resnet.resnet_stride(d['resnet_layers'])
      r = next((r for (r, p), ls in resnet.RESNET_VARIANTS.items()
                if ls == d['resnet_layers'] and p == effective), None)
      if r:
        d['variant'] = f'{r}+{name}/{effective}'
  return d


def summary_line(d: Mapping[str, Any]) -> str:
  parts = [f"variant {d['variant']}" if d.get('variant') else 'no zoo variant']
  for key in ('hidden_size', 'num_layers', 'num_heads', 'mlp_dim', 'patch_size', 'resnet_layers',
              'classifier', 'representation_size', 'num_classes', 'grid', 'block_layernorms'):
    if key in d and d[key] not in ((), None) or key == 'representation_size':
      parts.append(f'{key}={d.get(key)}')
  return ', '.join(parts)


def compress_names(names, suffixes=None) -> list[str]:
  """Groups names that differ only in a block/unit index (and share their `suffixes` entry):
  'Transformer/encoderblock_{6..11}/LayerNorm_0/scale'."""
  suffixes = suffixes or [''] * len(names)
  groups = collections.defaultdict(list)
  for n, sfx in zip(names, suffixes):
    m = re.search(r'(encoderblock_|unit)(\d+)', n)
    if m:
      groups[(n[:m.start(2)], n[m.end(2):], sfx)].append(int(m.group(2)))
    else:
      groups[(n, None, sfx)].append(None)
  out = []
  for (head, tail, sfx), idx in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or '')):
    if tail is None:
      out.append(head + sfx)
    elif len(idx) == 1:
      out.append(f'{head}{idx[0]}{tail}{sfx}')
    else:
      idx = sorted(idx)
      span = f'{idx[0]}..{idx[-1]}' if idx == list(range(idx[0], idx[-1] + 1)) else ','.join(
          map(str, idx))
      out.append(f'{head}{{{span}}}{tail}{sfx}')
  return out


def is_official_name(name: str) -> bool:
  """Whether `name` exists in the official (vit_jax / timm) ViT or R+ViT layout."""
  return any(p.match(name) for p in _OFFICIAL)
