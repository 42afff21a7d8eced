"""Official ViT `.npz` checkpoints: load them into our model for fine-tuning, export ours to them.

The official layout (names flattened with '/', the normalizations `read_npz` applies, and
`describe`) is `vit_jax.npz_layout`; this module fits a file to a model and writes ours.

`load_pretrained` fits a read file to the model: a fresh classifier `head` for the new number
of classes (or the file's, `init_head='load'`), `pre_logits` dropped when the model has no
`representation_size` (vit_jax's "drop-head variant"), and the position embeddings resampled to
the model's token grid (`resample_posemb`: bilinear on the grid, the class-token row kept).
Official files are pre-LN with LayerNorm, and they load into every norm scheme of
vit_jax/norms.py: model parameters without a counterpart in the file (other norm sites, DyT's
alpha, LayerScale, the seed's head MLP) keep their fresh init and are logged at INFO; file norms
the scheme does not have (pre-LN's LayerNorm_0 in a post-LN model, a LayerNorm's bias in an
RMSNorm) are not loaded and are logged at WARNING. Any other file parameter the model lacks, and
shapes that differ, raise `npz_layout.PretrainedError` naming every one of them and what the
file holds.

`export_npz` writes our params in the official layout (float32, per-layer names, GroupNorm as
[1, 1, 1, C]) so that vit_jax (`checkpoint.load`) and timm (`_load_weights`) read them.

CLI: export a trained run's params (newest checkpoint, 'best', a step, or a step folder):

  python -m vit_jax.pretrained --workdir=runs/x --out=x.npz [--checkpoint=best] [--ema]
  python -m vit_jax.pretrained --inspect=ViT-B_16.npz     # names, shapes and the variant
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

if __name__ == '__main__' and not __package__:  # run as a file: `vit_jax` from the repo root
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

from vit_jax import checkpoint
from vit_jax import norms
from vit_jax import npz_layout
from vit_jax import variants

logger = logging.getLogger(__name__)
# Module names of the norm sites (a site keeps its name whatever its norm type).
NORM_MODULES = frozenset(n for v in norms.NORM_NAMES.values()
                         for n in (v if isinstance(v, tuple) else (v,)))

INIT_HEADS = ('fresh', 'load')
POSEMB_RESIZE = ('zoom', 'bilinear')


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
    raise npz_layout.PretrainedError(f'Cannot resample a position embedding of {grid.shape[0]} '
                                     'grid tokens (not a square grid).')
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
    allow_unused: file params the model does not have are logged instead of raising (file
      norms of sites the model's scheme lacks are always logged, never raised).
    shardings: optional tree of `jax.sharding.Sharding`s like `init_params` (e.g. the
      TrainState's params sharding): the result is then placed as global jax Arrays with them
      (`jax.make_array_from_callback`, so it also works on several hosts).

  Returns:
    A nested dict like `init_params`: host numpy arrays, or jax Arrays when `shardings` given.
  Raises:
    npz_layout.PretrainedError listing every mismatched shape and unused file parameter.
  """
  if init_head not in INIT_HEADS:
    raise ValueError(f'init_head={init_head!r}: expected one of {INIT_HEADS}.')
  source = npz_layout.canonicalize(path) if isinstance(path, Mapping) else npz_layout.read_npz(path)
  where = 'the given arrays' if isinstance(path, Mapping) else repr(path)
  target = npz_layout.flatten(init_params)
  target, scanned_layers = npz_layout.unstack_scanned(target)

  out, loaded, kept, dropped, mismatched = {}, [], [], [], []
  for name, init in target.items():
    fresh_head = init_head == 'fresh' and name.startswith('head/')
    if fresh_head or name not in source:
      out[name] = init
      if not fresh_head:
        kept.append(name)
      continue
    value = source[name]
    if (name == npz_layout.POSEMB and value.shape != init.shape and value.ndim == 3 and
        init.ndim == 3):
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

  unused, other_norms = [], []
  for name in source:
    if name in target:
      continue
    if name.startswith('head/') and init_head == 'fresh':
      dropped.append(name)
    elif name.startswith('pre_logits/') and 'pre_logits/kernel' not in target:
      dropped.append(name)  # vit_jax's drop-head variant (model.representation_size=None)
    elif _is_norm(name) and _has_module(target, name.rsplit('/', 2)[0]):
      other_norms.append(name)  # a norm this model's scheme lacks (or types without a bias)
    else:
      unused.append(name)

  if mismatched or (unused and not allow_unused) or not loaded:
    _raise_mismatch(where, source, target, mismatched, unused, kept, loaded)
  if other_norms:
    logger.warning('Pretrained %s: %d norm parameters of the file are not loaded: the model '
                   "normalizes elsewhere or with another norm type (its norm_placement / "
                   'norm_type): %s', where, len(other_norms),
                   ', '.join(npz_layout.compress_names(other_norms)))
  if unused:
    logger.warning('Pretrained %s: %d file parameters have no place in the model and are '
                   'ignored (allow_unused): %s', where, len(unused),
                   ', '.join(npz_layout.compress_names(unused)))
  if dropped:
    logger.info('Pretrained %s: not loaded (new head): %s', where,
                ', '.join(npz_layout.compress_names(dropped)))
  if kept:
    logger.info('Pretrained %s: %d model parameters have no counterpart in the file and keep '
                'their fresh init: %s', where, len(kept),
                ', '.join(npz_layout.compress_names(kept)))
  logger.info("Pretrained %s: loaded %d of the model's %d parameter arrays (head: %s).", where,
              len(loaded), len(target), init_head)
  if scanned_layers is not None:
    out = npz_layout.stack_scanned(out, scanned_layers)
  out = npz_layout.unflatten(out)
  if shardings is not None:
    out = npz_layout.place(out, shardings)
  return out


def _is_norm(name: str) -> bool:
  """Whether `name` is a parameter of a norm site (norms.NORM_NAMES), e.g. the file's pre-LN
  'Transformer/encoderblock_3/LayerNorm_0/bias' or 'Transformer/encoder_norm/scale'."""
  parts = name.split('/')
  return len(parts) >= 2 and parts[-2] in NORM_MODULES


def _has_module(flat: Mapping[str, Any], module: str) -> bool:
  """Whether the model has the block (or encoder) that holds a file norm: a norm of a block the
  model lacks is a depth mismatch, not the scheme's choice."""
  return not module or any(k.startswith(module + '/') for k in flat)


def _raise_mismatch(where, source, target, mismatched, unused, kept, loaded):
  lines = []
  if mismatched:
    lines.append(f'shapes that differ ({len(mismatched)}):')
    lines += [f'  {m}' for m in npz_layout.compress_names(*zip(*mismatched))]
  if unused:
    lines.append(f'in the file, not in the model ({len(unused)}):')
    lines += [f'  {n}' for n in npz_layout.compress_names(unused)]
  if not loaded and not mismatched:
    lines.append('no parameter of the model is in the file: is it a ViT checkpoint in the '
                 'official layout?')
  if kept:
    lines.append(f'in the model, not in the file ({len(kept)}; these would keep their init):')
    lines += [f'  {n}' for n in npz_layout.compress_names(kept)]
  file_d, model_d = npz_layout.describe(source), npz_layout.describe(target)
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
  raise npz_layout.PretrainedError(
      f'Pretrained file {where} does not fit the configured model:\n  ' + '\n  '.join(lines) +
      f'\nThe file holds: {npz_layout.summary_line(file_d)}.'
      f'\nThe model has: {npz_layout.summary_line(model_d)}.' +
      (f'\nTry: {" ".join(hints)}.' if hints else ''))


# ----------------------------------------------------------------------------- export



def export_npz(params: Any, path: str) -> list[str]:
  """Writes `params` as an official-layout `.npz` (float32); returns the names written.

  Scanned trees are split per layer; GroupNorm params are stored [1, 1, 1, C] like the released
  hybrid files. Names without an official counterpart (other norm placements' LayerNorms, the
  seed's head MLP) are written too, with a warning: vit_jax / timm ViTs ignore them, so only
  `load_pretrained` reproduces such a model exactly.
  """
  flat, _ = npz_layout.unstack_scanned(npz_layout.flatten(params))
  arrays = {}
  for name, v in flat.items():
    v = np.asarray(v, dtype=np.float32) if v.dtype != np.float32 else v
    if npz_layout.GROUPNORM_NAME.search(name) and v.ndim == 1:
      v = v.reshape(1, 1, 1, -1)
    arrays[name] = v
  extra = [n for n in arrays if not npz_layout.is_official_name(n)]
  if extra:
    logger.warning('export_npz: %d parameters have no counterpart in the official ViT layout '
                   '(vit_jax / timm will not use them): %s', len(extra),
                   ', '.join(npz_layout.compress_names(extra)))
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
    m.update(variants.parse_variant(m['variant']))
  p = []
  try:
    spec = norms.with_final_norm(
        norms.parse_spec(m.get('norm_placement', 'pre'), m.get('num_layers', 12),
                         m.get('norm_type', 'layernorm')), m.get('final_norm'))
    if spec.spec != norms.NORM_PRESETS['pre']:
      kind = m.get('norm_type', 'layernorm')
      p.append(f"norm_placement={m.get('norm_placement')!r}" +
               (f', norm_type={kind!r}' if kind != 'layernorm' else '') +
               ' (official ViTs are pre-LN with LayerNorm)')
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
  state, step = checkpoint.load(workdir, checkpoint_spec)  # the stored tree, on one device
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
      flat = npz_layout.read_npz(args.inspect)
      for name in sorted(flat):
        print(f'{name}  {tuple(flat[name].shape)}  {flat[name].dtype}')
      print(f'# {len(flat)} arrays, {sum(v.size for v in flat.values()):,} values; '
            f'{npz_layout.summary_line(npz_layout.describe(flat))}')
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
          f'{npz_layout.summary_line(npz_layout.describe(npz_layout.read_npz(args.out)))}')
    return 0
  except checkpoint.CheckpointError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
