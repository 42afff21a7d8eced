"""Released Swin weights in the PyTorch layout -> vit_jax/swin.py params.

Why: Swin checkpoints are published as PyTorch `state_dict`s (the official repository's
`swin_tiny_patch4_window7_224.pth`, timm's `.safetensors`), not as the `.npz` files that
vit_jax/pretrained.py reads for the ViT. Both key layouts are accepted:

  timm      patch_embed.proj / .norm, layers.{i}.blocks.{j}.{norm1, attn.qkv, attn.proj,
            attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2},
            layers.{i}.downsample.{norm, reduction} (merging at the *start* of stage i >= 1),
            norm, head.fc
  official  the same, with the merging at the *end* of stage i (layers.{i}.downsample, i < last),
            `head` instead of `head.fc`, the weights under 'model', and the buffers
            relative_position_index / attn_mask saved too (recomputed here, never loaded)

Linear weights are transposed ([out, in] -> [in, out]), the patch convolution goes from
[out, in, kh, kw] to [kh, kw, in, out]. A block's `norm1` / `norm2` go to the one norm site that
the model's scheme has around that sublayer (attn:in for Swin V1's `pre`, attn:out for V2's
`respost`). A relative-position table of another window size is resized (bicubic over the
(2w-1) x (2w-1) offsets). The head is loaded only with init_head='load' (same class count); with
'fresh' the model's new head is kept. Every file parameter that has no place, and every shape that
does not fit, is listed in one error.

  params = swin_weights.load_swin('swin_tiny_patch4_window7_224.pth', model, init_params)
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_jax import norms
from vit_jax import swin
from vit_jax.npz_layout import PretrainedError, flatten, place, unflatten

logger = logging.getLogger(__name__)

BUFFERS = ('relative_position_index', 'attn_mask')  # recomputed by vit_jax/swin.py
STATE_DICT_KEYS = ('model', 'state_dict', 'model_ema')  # where training checkpoints nest them
_BLOCK = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.(.+)$')
_DOWNSAMPLE = re.compile(r'^layers\.(\d+)\.downsample\.(.+)$')


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """{key: float32 array} of a `.safetensors` or `.pth` / `.pt` / `.bin` file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path!r} is not a file: give a Swin .pth or .safetensors file.')
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    raw = load_file(path)
  else:
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f'Reading {path!r} needs PyTorch (pip install torch), or convert it to '
                        '.safetensors, which needs only the safetensors package.') from e
    raw = torch.load(path, map_location='cpu', weights_only=True)
    for key in STATE_DICT_KEYS:
      if isinstance(raw, Mapping) and isinstance(raw.get(key), Mapping):
        raw = raw[key]
        break
    raw = {k: v.float().numpy() for k, v in raw.items() if hasattr(v, 'numpy')}
  return {k.removeprefix('module.'): np.asarray(v, np.float32) for k, v in raw.items()}


def _sites(spec: norms.NormSpec, layer: int) -> dict[str, str | None]:
  """{'norm1': the model's attention norm site, 'norm2': its MLP one} for one block (None when
  the scheme has none there, or several: the file's one norm cannot go to one place)."""
  block = spec.layers[layer]
  out = {}
  for key, sub in (('norm1', 'attn'), ('norm2', 'mlp')):
    positions = sorted(p for p in getattr(block, sub) if p in ('in', 'out', 'res'))
    out[key] = norms.NORM_NAMES[f'{sub}_{positions[0]}'] if len(positions) == 1 else None
  return out


def to_flax_names(state: Mapping[str, np.ndarray], model: Any) -> tuple[dict[str, np.ndarray],
                                                                          list[str]]:
  """({our flat name: array in our layout}, [file keys with no place in `model`])."""
  spec = model.norm_spec()
  first_layer = np.cumsum((0,) + tuple(model.depths))
  last_stage = len(model.depths) - 1
  official = any(k.startswith('layers.0.downsample.') for k in state)  # merging at stage ends
  out, unused = {}, []
  for key, value in state.items():
    if key.rsplit('.', 1)[-1] in BUFFERS:
      continue
    name, kind = key.rsplit('.', 1)  # kind: weight | bias | relative_position_bias_table
    if kind == 'relative_position_bias_table':
      name, kind = key, 'table'
    target, array = None, value
    leaf = {'weight': 'scale', 'bias': 'bias'}.get(kind)
    if name == 'patch_embed.proj':
      target = 'patch_embed/' + ('kernel' if kind == 'weight' else 'bias')
      array = value.transpose(2, 3, 1, 0) if kind == 'weight' else value
    elif name == 'patch_embed.norm':
      target = f'{norms.NORM_NAMES["patch_out"]}/{leaf}'
    elif name == 'norm':
      target = f'{norms.NORM_NAMES["encoder_final"]}/{leaf}'
    elif name in ('head', 'head.fc'):
      target = 'head/' + ('kernel' if kind == 'weight' else 'bias')
      array = value.T if kind == 'weight' else value
    elif m := _DOWNSAMPLE.match(name):
      stage = int(m.group(1)) + (1 if official else 0)
      if 1 <= stage <= last_stage:
        module = f'layers_{stage}_downsample/{m.group(2)}'
        target = (f'{module}/kernel' if m.group(2) == 'reduction' else f'{module}/{leaf}')
        array = value.T if m.group(2) == 'reduction' else value
    elif m := _BLOCK.match(key if kind == 'table' else name):
      stage, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
      if stage <= last_stage and j < model.depths[stage]:
        block = f'layers_{stage}_blocks_{j}'
        if kind == 'table':
          target = f'{block}/attn/relative_position_bias_table'
        elif rest in ('norm1', 'norm2'):
          site = _sites(spec, first_layer[stage] + j)[rest]
          target = f'{block}/{site}/{leaf}' if site else None
        elif rest in ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'):
          target = f'{block}/{rest.replace(".", "/")}/' + ('kernel' if kind == 'weight' else 'bias')
          array = value.T if kind == 'weight' else value
    if target is None:
      unused.append(key)
    else:
      out[target] = array
  return out, unused


def resize_bias_table(table: np.ndarray, window: int) -> np.ndarray:
  """[(2w'-1)^2, heads] -> [(2w-1)^2, heads]: bicubic over the grid of (dy, dx) offsets."""
  import jax  # pylint: disable=g-import-not-at-top
  side, heads = math.isqrt(table.shape[0]), table.shape[1]
  new = 2 * window - 1
  grid = table.reshape(side, side, heads)
  resized = jax.image.resize(grid, (new, new, heads), method='bicubic')
  return np.asarray(resized, table.dtype).reshape(new * new, heads)


def load_swin(path: str | Mapping[str, np.ndarray], model: Any, init_params: Any, *,
              init_head: str = 'fresh', shardings: Any = None) -> dict:
  """Params like `init_params` (the model's fresh init: names, shapes, dtypes, the new head),
  filled from a Swin state_dict (a file, or an already read {key: array} dict)."""
  state = read_state_dict(path) if isinstance(path, str) else {
      k: np.asarray(v, np.float32) for k, v in path.items()}
  where = repr(path) if isinstance(path, str) else 'the given state_dict'
  source, unused = to_flax_names(state, model)
  scanned_like = init_params if model.scan else None  # load block by block, then restack
  target = flatten(swin.unstack_params(init_params) if model.scan else init_params)
  out, loaded, kept, mismatched = {}, [], [], []
  for name, init in target.items():
    if name.startswith('head/') and init_head != 'load':
      out[name] = init
      continue
    if name not in source:
      out[name], _ = init, kept.append(name)
      continue
    value = source.pop(name)
    if name.endswith('relative_position_bias_table') and value.shape != init.shape and \
        value.shape[1] == init.shape[1]:
      value = resize_bias_table(value, (math.isqrt(init.shape[0]) + 1) // 2)
    if value.shape != init.shape:
      mismatched.append(f'{name}: file {value.shape} vs model {init.shape}')
      continue
    out[name] = value.astype(init.dtype)
    loaded.append(name)
  unused += [n for n in source if not n.startswith('head/')]
  if mismatched or unused or not loaded:
    raise PretrainedError(
        f'Swin weights {where} do not fit the model: ' +
        (f'{len(mismatched)} shapes differ ({"; ".join(mismatched)}). ' if mismatched else '') +
        (f'{len(unused)} file parameters have no place in it ({", ".join(unused[:20])}'
         f'{" ..." if len(unused) > 20 else ""}): check model.variant / stage_depths / '
         'stage_heads / window_size, and that model.norm_placement has one norm per sublayer '
         '(pre = Swin V1, respost = V2). ' if unused else '') +
        ('Nothing was loaded. ' if not loaded else ''))
  if kept:
    logger.info('Swin weights %s: %d model parameters keep their fresh init: %s', where,
                len(kept), ', '.join(kept[:20]))
  logger.info("Swin weights %s: loaded %d of the model's %d parameter arrays (head: %s).",
              where, len(loaded), len(target), init_head)
  out = unflatten(out)
  if scanned_like is not None:
    out = swin.stack_params(out, scanned_like)
  if shardings is not None:
    out = place(out, shardings)
  return out
