"""Official ViT `.npz` checkpoints: load them into our model for fine-tuning, export ours to them.

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

`load_pretrained` then fits the file to the model: a fresh classifier `head` for the new number
of classes (or the file's, `init_head='load'`), `pre_logits` dropped when the model has no
`representation_size` (vit_jax's "drop-head variant"), and the position embeddings resampled to
the model's token grid (`resample_posemb`: bilinear on the grid, the class-token row kept).
Model parameters without a counterpart in the file (LayerNorms of other placements, the seed's
head MLP) keep their fresh init and are logged at INFO; file parameters the model lacks, and
shapes that differ, raise `PretrainedError` naming every one of them and what the file holds.

`export_npz` writes our params in the official layout (float32, per-layer names, GroupNorm as
[1, 1, 1, C]) so that vit_jax (`checkpoint.load`) and timm (`_load_weights`) read them.

CLI: export a trained run's params (newest checkpoint, 'best', a step, or a step folder):

  python -m vit_jax.pretrained --workdir=runs/x --out=x.npz [--checkpoint=best] [--ema]
  python -m vit_jax.pretrained --inspect=ViT-B_16.npz     # names, shapes and the variant
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_jax import checkpoint
from vit_jax import models

logger = logging.getLogger(__name__)

INIT_HEADS = ('fresh', 'load')
POSEMB_RESIZE = ('zoom', 'bilinear')
POSEMB = 'Transformer/posembed_input/pos_embedding'
_BLOCK = re.compile(r'^Transformer/encoderblock_(\d+)/')
_GN = re.compile(r'(^|/)gn(\d+|_root|_proj)/(scale|bias)$')

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


def _unstack_scanned(flat: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int | None]:
  """'Transformer/encoderblock/X' [layers, ...] -> 'Transformer/encoderblock_{i}/X'."""
  stacked = {k: v for k, v in flat.items() if k.startswith('Transformer/encoderblock/')}
  if not stacked:
    return flat, None
  num_layers = {v.shape[0] for v in stacked.values()}
  if len(num_layers) != 1:
    raise PretrainedError(f'Scanned encoder blocks with different leading (layer) axes: '
                          f'{sorted(num_layers)}.')
  n = num_layers.pop()
  out = {k: v for k, v in flat.items() if k not in stacked}
  for k, v in stacked.items():
    rest = k[len('Transformer/encoderblock/'):]
    for i in range(n):
      out[f'Transformer/encoderblock_{i}/{rest}'] = v[i]
  return out, n


def _stack_scanned(flat: dict[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
  """Inverse of `_unstack_scanned`."""
  out = {k: v for k, v in flat.items() if not _BLOCK.match(k)}
  per_name = collections.defaultdict(dict)
  for k, v in flat.items():
    m = _BLOCK.match(k)
    if m:
      per_name[k[m.end():]][int(m.group(1))] = v
  for rest, layers in per_name.items():
    out[f'Transformer/encoderblock/{rest}'] = np.stack([layers[i] for i in range(num_layers)])
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
  flat, _ = _unstack_scanned(flat)
  # Linen auto-numbering counts per class; the released files count per module (pre-linen).
  blocks = [k for k in flat if _BLOCK.match(k)]
  if any('/MlpBlock_0/' in k for k in blocks) and not any('/MlpBlock_3/' in k for k in blocks):
    renames = (('/MultiHeadDotProductAttention_0/', '/MultiHeadDotProductAttention_1/'),
               ('/LayerNorm_1/', '/LayerNorm_2/'), ('/MlpBlock_0/', '/MlpBlock_3/'))
    fixed = {}
    for k, v in flat.items():
      if _BLOCK.match(k):
        for old, new in renames:
          k = k.replace(old, new)
      fixed[k] = v
    flat = fixed
  for k, v in flat.items():
    if _GN.search(k) and v.ndim > 1 and all(d == 1 for d in v.shape[:-1]):
      flat[k] = v.reshape(v.shape[-1])
  return flat


def read_npz(path: str) -> dict[str, np.ndarray]:
  """The arrays of an official-layout `.npz`, with `canonicalize`d names."""
  if not os.path.exists(path):
    raise PretrainedError(
        f'Pretrained file {path!r} does not exist. Download an official checkpoint first, e.g. '
        'https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz (see docs/pretrained.md).')
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
  layers = {int(m.group(1)) for k in flat if (m := _BLOCK.match(k))}
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
  placement = sorted({k.split('/')[2] for k in flat if _BLOCK.match(k) and
                      k.split('/')[2].startswith('LayerNorm')})
  d['block_layernorms'] = placement
  sizes = (d.get('hidden_size'), d['num_layers'], d.get('num_heads'), d.get('mlp_dim'))
  name = next((v for v, s in models.VARIANTS.items() if s == sizes), None)
  if name and 'patch_size' in d:
    if not d['resnet_layers']:
      d['variant'] = f'{name}/{d["patch_size"]}'
    else:
      effective = d['patch_size'] * models.resnet_stride(d['resnet_layers'])
      r = next((r for (r, p), ls in models.RESNET_VARIANTS.items()
                if ls == d['resnet_layers'] and p == effective), None)
      if r:
        d['variant'] = f'{r}+{name}/{effective}'
  return d


def _summary(d: Mapping[str, Any]) -> str:
  parts = [f"variant {d['variant']}" if d.get('variant') else 'no zoo variant']
  for key in ('hidden_size', 'num_layers', 'num_heads', 'mlp_dim', 'patch_size', 'resnet_layers',
              'classifier', 'representation_size', 'num_classes', 'grid', 'block_layernorms'):
    if key in d and d[key] not in ((), None) or key == 'representation_size':
      parts.append(f'{key}={d.get(key)}')
  return ', '.join(parts)


def _compress(names, suffixes=None) -> list[str]:
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


# ----------------------------------------------------------------------------- position embeddings


def resample_posemb(posemb: np.ndarray, new_grid: tuple[int, int], num_prefix: int = 1,
                    method: str = 'zoom') -> np.ndarray:
  """[1, prefix + g*g, D] learned embedding -> [1, prefix + gh*gw, D] on a new token grid.

  The prefix rows (the class token's) are kept as they are; the grid part is resampled
  bilinearly as a [g, g, D] image. 'zoom' is vit_jax's and big_vision's
  `scipy.ndimage.zoom(order=1)` (corners map to corners, so a linear field stays exact and
  fine-tuning numbers match theirs); 'bilinear' is `jax.image.resize` (pixel centres,
  antialiased when shrinking), closer to timm.
  """
  if method not in POSEMB_RESIZE:
    raise ValueError(f'posemb_resize={method!r}: expected one of {POSEMB_RESIZE}.')
  prefix, grid = posemb[:, :num_prefix], posemb[0, num_prefix:]
  g = math.isqrt(grid.shape[0])
  if g * g != grid.shape[0]:
    raise PretrainedError(f'Cannot resample a position embedding of {grid.shape[0]} grid tokens '
                          '(not a square grid).')
  gh, gw = new_grid
  grid = grid.reshape(g, g, -1).astype(np.float32)
  if (gh, gw) != (g, g):
    if method == 'zoom':
      import scipy.ndimage  # pylint: disable=g-import-not-at-top
      grid = scipy.ndimage.zoom(grid, (gh / g, gw / g, 1), order=1)
    else:
      import jax  # pylint: disable=g-import-not-at-top
      grid = np.asarray(jax.image.resize(grid, (gh, gw, grid.shape[-1]), 'bilinear',
                                         antialias=True))
  grid = grid.reshape(1, gh * gw, -1).astype(posemb.dtype)
  return np.concatenate([prefix, grid], axis=1)


# ----------------------------------------------------------------------------- loading


def load_pretrained(path: str | Mapping[str, np.ndarray], init_params: Any, *,
                    init_head: str = 'fresh', grid: tuple[int, int] | None = None,
                    posemb_resize: str = 'zoom', allow_unused: bool = False,
                    shardings: Any = None) -> dict:
  """Params like `init_params` (same tree, dtypes), filled from an official-layout `.npz`.

  Args:
    path: the `.npz` file (or an already read {name: array} dict).
    init_params: the freshly initialized params of the target model (concrete arrays). They
      give the names, shapes and dtypes, the fresh head, and the init of params that have no
      counterpart in the file. Scanned (`scan=True`) trees work too.
    init_head: 'fresh' (the new task's head from `init_params`; a file head of any size is
      ignored) or 'load' (the file's `head`; the number of classes must match).
    grid: the model's token grid (gh, gw); default: a square grid from the pos-emb length.
    posemb_resize: 'zoom' (vit_jax) or 'bilinear' (see `resample_posemb`).
    allow_unused: file params the model does not have are logged instead of raising (e.g. the
      `pre`-placement LayerNorms when loading into a `post` model).
    shardings: optional tree of `jax.sharding.Sharding`s like `init_params` (e.g. the
      TrainState's params sharding): the result is then placed as global jax Arrays with them
      (`jax.make_array_from_callback`, so it also works on several hosts).

  Returns:
    A nested dict like `init_params`: host numpy arrays, or jax Arrays when `shardings` given.
  Raises:
    PretrainedError listing every mismatched shape and unused file parameter.
  """
  if init_head not in INIT_HEADS:
    raise ValueError(f'init_head={init_head!r}: expected one of {INIT_HEADS}.')
  source = canonicalize(path) if isinstance(path, Mapping) else read_npz(path)
  where = 'the given arrays' if isinstance(path, Mapping) else repr(path)
  target = flatten(init_params)
  target, scanned_layers = _unstack_scanned(target)

  out, loaded, kept, dropped, mismatched = {}, [], [], [], []
  for name, init in target.items():
    fresh_head = init_head == 'fresh' and name.startswith('head/')
    if fresh_head or name not in source:
      out[name] = init
      if not fresh_head:
        kept.append(name)
      continue
    value = source[name]
    if name == POSEMB and value.shape != init.shape and value.ndim == 3 and init.ndim == 3:
      prefix_file, prefix_model = int('cls' in source), int('cls' in target)
      if value.shape[-1] == init.shape[-1] and prefix_file == prefix_model:
        n = init.shape[1] - prefix_model
        new_grid = tuple(grid) if grid else (math.isqrt(n), math.isqrt(n))
        if new_grid[0] * new_grid[1] == n:
          old = value.shape[1] - prefix_file
          logger.info('Resampling the position embedding from a %s grid to %dx%d (%s).',
                      f'{math.isqrt(old)}x{math.isqrt(old)}', *new_grid, posemb_resize)
          value = resample_posemb(value, new_grid, prefix_file, posemb_resize)
    if value.shape != init.shape:
      mismatched.append((name, f': file {tuple(value.shape)} vs model {tuple(init.shape)}'))
      continue
    out[name] = np.asarray(value, dtype=init.dtype)
    loaded.append(name)

  unused = []
  for name in source:
    if name in target:
      continue
    if name.startswith('head/') and init_head == 'fresh':
      dropped.append(name)
    elif name.startswith('pre_logits/') and 'pre_logits/kernel' not in target:
      dropped.append(name)  # vit_jax's drop-head variant (model.representation_size=None)
    else:
      unused.append(name)

  if mismatched or (unused and not allow_unused) or not loaded:
    _raise_mismatch(where, source, target, mismatched, unused, kept, loaded)
  if unused:
    logger.warning('Pretrained %s: %d file parameters have no place in the model and are '
                   'ignored (allow_unused): %s', where, len(unused), ', '.join(_compress(unused)))
  if dropped:
    logger.info('Pretrained %s: not loaded (new head): %s', where, ', '.join(_compress(dropped)))
  if kept:
    logger.info('Pretrained %s: %d model parameters have no counterpart in the file and keep '
                'their fresh init: %s', where, len(kept), ', '.join(_compress(kept)))
  logger.info("Pretrained %s: loaded %d of the model's %d parameter arrays (head: %s).", where,
              len(loaded), len(target), init_head)
  if scanned_layers is not None:
    out = _stack_scanned(out, scanned_layers)
  out = unflatten(out)
  if shardings is not None:
    import jax  # pylint: disable=g-import-not-at-top
    out = jax.tree.map(
        lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: x[index]),
        out, shardings)
  return out


def _raise_mismatch(where, source, target, mismatched, unused, kept, loaded):
  lines = []
  if mismatched:
    lines.append(f'shapes that differ ({len(mismatched)}):')
    lines += [f'  {m}' for m in _compress(*zip(*mismatched))]
  if unused:
    lines.append(f'in the file, not in the model ({len(unused)}):')
    lines += [f'  {n}' for n in _compress(unused)]
  if not loaded and not mismatched:
    lines.append('no parameter of the model is in the file: is it a ViT checkpoint in the '
                 'official layout?')
  if kept:
    lines.append(f'in the model, not in the file ({len(kept)}; these would keep their init):')
    lines += [f'  {n}' for n in _compress(kept)]
  file_d, model_d = describe(source), describe(target)
  hints = []
  if file_d.get('variant') and file_d.get('variant') != model_d.get('variant'):
    hints.append(f'--config.model.variant={file_d["variant"]}')
  elif not file_d.get('variant'):
    for key in ('hidden_size', 'num_layers', 'num_heads', 'mlp_dim', 'patch_size'):
      if key in file_d and file_d[key] != model_d.get(key):
        hints.append(f'--config.model.{key}={file_d[key]}')
    if file_d['resnet_layers'] != model_d['resnet_layers']:
      hints.append(f'--config.model.resnet_layers="{file_d["resnet_layers"]}"')
  if file_d['classifier'] != model_d['classifier']:
    hints.append(f'--config.model.classifier={file_d["classifier"]}')
  model_blocks = {m.group(0) for k in target if (m := _BLOCK.match(k))}
  if any('/LayerNorm_' in n and _BLOCK.match(n) and _BLOCK.match(n).group(0) in model_blocks
         for n in unused):
    hints.append('--config.model.norm_placement=pre (official files are pre-LN)')
  raise PretrainedError(
      f'Pretrained file {where} does not fit the configured model:\n  ' + '\n  '.join(lines) +
      f'\nThe file holds: {_summary(file_d)}.\nThe model has: {_summary(model_d)}.' +
      (f'\nTry: {" ".join(hints)}.' if hints else ''))


# ----------------------------------------------------------------------------- export


def is_official_name(name: str) -> bool:
  """Whether `name` exists in the official (vit_jax / timm) ViT or R+ViT layout."""
  return any(p.match(name) for p in _OFFICIAL)


def export_npz(params: Any, path: str) -> list[str]:
  """Writes `params` as an official-layout `.npz` (float32); returns the names written.

  Scanned trees are split per layer; GroupNorm params are stored [1, 1, 1, C] like the released
  hybrid files. Names without an official counterpart (other norm placements' LayerNorms, the
  seed's head MLP) are written too, with a warning: vit_jax / timm ViTs ignore them, so only
  `load_pretrained` reproduces such a model exactly.
  """
  flat, _ = _unstack_scanned(flatten(params))
  arrays = {}
  for name, v in flat.items():
    v = np.asarray(v, dtype=np.float32) if v.dtype != np.float32 else v
    if _GN.search(name) and v.ndim == 1:
      v = v.reshape(1, 1, 1, -1)
    arrays[name] = v
  extra = [n for n in arrays if not is_official_name(n)]
  if extra:
    logger.warning('export_npz: %d parameters have no counterpart in the official ViT layout '
                   '(vit_jax / timm will not use them): %s', len(extra), ', '.join(_compress(extra)))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.npz'  # np.savez appends .npz to names without it
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
  return sorted(arrays)


def compatibility_problems(model_config: Mapping[str, Any]) -> list[str]:
  """Settings under which a vit_jax / timm ViT computes a different function from our model.

  The names can match while the function differs (e.g. GELU on the MLP output has no param),
  so the export CLI checks the run's config too.
  """
  m = dict(model_config)
  if m.get('variant'):
    m.update(models.parse_variant(m['variant']))
  p = []
  try:
    placement = models.parse_norm_placement(m.get('norm_placement', 'pre'))
    if placement.spec != models.NORM_PRESETS['pre']:
      p.append(f"norm_placement={m.get('norm_placement')!r} (official ViTs are pre-LN)")
    final = m.get('final_norm')
    if final is False or (final is None and not placement.final_norm):
      p.append('no final encoder LayerNorm')
  except ValueError as e:
    p.append(str(e))
  checks = [
      ('classifier', lambda v: v in ('token', 'gap', None), "classifier must be 'token' or 'gap'"),
      ('posemb', lambda v: v in ('learn', None), "posemb must be 'learn'"),
      ('mlp_activate_output', lambda v: not v, 'GELU on the MLP output'),
      ('head_hidden_sizes', lambda v: not v, 'a head MLP (head_hidden_sizes)'),
      ('mlp_dim', lambda v: v is None or isinstance(v, int) or len(v) == 1,
       'more than one MLP hidden width'),
      ('layer_norm_epsilon', lambda v: v in (None, 1e-6), 'layer_norm_epsilon != 1e-6'),
  ]
  for key, ok, what in checks:
    if key in m and not ok(m[key]):
      p.append(f'{what} ({key}={m[key]!r})')
  hd = m.get('head_dim')
  if hd is not None and m.get('hidden_size') and hd * m.get('num_heads', 1) != m['hidden_size']:
    p.append(f'head_dim={hd} != hidden_size / num_heads')
  return p


# ----------------------------------------------------------------------------- CLI


def restore_params(workdir: str, checkpoint_spec: str = '', ema: bool = False
                   ) -> tuple[dict, int]:
  """Params (or EMA params) of a run's checkpoint, without building the model or the data.

  `checkpoint_spec` as in `run.py --mode=eval`: '' / 'latest', 'best', a step, or a path
  WORKDIR/checkpoints/<step>.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  if checkpoint_spec and os.sep in checkpoint_spec:
    workdir, checkpoint_spec = checkpoint.split_checkpoint_path(checkpoint_spec)
  if not os.path.isdir(checkpoint.checkpoint_dir(workdir)):
    raise checkpoint.CheckpointError(f'No checkpoints in {checkpoint.checkpoint_dir(workdir)}.')
  manager = checkpoint.create_manager(workdir, read_only=True, async_save=False)
  try:
    step = checkpoint.resolve_step(manager, checkpoint_spec)
    if step is None:
      step = manager.latest_step()
    if step is None or step not in manager.all_steps():
      raise checkpoint.CheckpointError(
          f'No checkpoint {checkpoint_spec or "(latest)"} in {manager.directory}; available steps: '
          f'{sorted(manager.all_steps())}.')
    meta = manager.item_metadata(step)
    tree = getattr(meta, 'tree', meta)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  finally:
    manager.close()
  key = 'ema_params' if ema else 'params'
  if state.get(key) is None:
    raise checkpoint.CheckpointError(f'Checkpoint step {step} in {workdir} has no {key} '
                                     '(EMA is saved only when config.ema_decay > 0).')
  return jax.device_get(state[key]), step


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m vit_jax.pretrained',
      description='Export a trained run to an official-layout ViT .npz, or inspect an .npz.')
  parser.add_argument('--workdir', help='run folder (with checkpoints/ and config.json)')
  parser.add_argument('--out', help='the .npz to write')
  parser.add_argument('--checkpoint', default='', help='"" / latest, best, a step, or a path '
                      'WORKDIR/checkpoints/<step>')
  parser.add_argument('--ema', action='store_true', help='export the EMA params')
  parser.add_argument('--inspect', help='print the names, shapes and architecture of an .npz')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(message)s')
  logging.getLogger('absl').setLevel(logging.WARNING)
  try:
    if args.inspect:
      flat = read_npz(args.inspect)
      for name in sorted(flat):
        print(f'{name}  {tuple(flat[name].shape)}  {flat[name].dtype}')
      print(f'# {len(flat)} arrays, {sum(v.size for v in flat.values()):,} values; '
            f'{_summary(describe(flat))}')
      return 0
    if not (args.workdir or args.checkpoint) or not args.out:
      parser.error('give --workdir (or --checkpoint=PATH) and --out, or --inspect=FILE')
    params, step = restore_params(args.workdir or '', args.checkpoint, args.ema)
    workdir = args.workdir
    if args.checkpoint and os.sep in args.checkpoint:
      workdir = checkpoint.split_checkpoint_path(args.checkpoint)[0]
    config_path = os.path.join(workdir, 'config.json')
    if os.path.exists(config_path):
      with open(config_path) as f:
        model_config = json.load(f).get('model', {})
      problems = compatibility_problems(model_config)
      if problems:
        logger.warning('This model differs from the official ViT in ways the names do not show '
                       '(vit_jax / timm would compute something else): %s. It still reloads '
                       'exactly with vit_jax.pretrained.load_pretrained.', '; '.join(problems))
    names = export_npz(params, args.out)
    print(f'wrote {args.out}: step {step}, {len(names)} arrays, '
          f'{_summary(describe(read_npz(args.out)))}')
    return 0
  except checkpoint.CheckpointError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
