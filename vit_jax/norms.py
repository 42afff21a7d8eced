"""Normalization in the encoder: which norms sit where, of which type, with which residual scheme.

The study varies the normalization, so it is data read by one block (`models.Encoder1DBlock`),
not a model class per scheme. This module is plain Python (the sweep, the report and the config
checks parse specs without JAX); the norm modules of each type are in vit_jax/layers.py. `config.model.norm_placement` is a preset name (`NORM_PRESETS`) or
an explicit spec; `parse_spec` turns either, for a given depth, into a `NormSpec`.

Sites (a site that is on holds one norm of the site's type):

    attn:in   before attention            y = Attn(N(x))             (pre-LN; vit_jax LayerNorm_0)
    attn:qk   on q and k, per head        softmax(N(q) N(k)^T / sqrt(d))      (QK-norm, ViT-22B)
    attn:mid  on the heads' output, before the output projection             (Sub-LN, Magneto)
    attn:out  on the sublayer's output    x = x + N(Attn(..))        (res-post-norm, Swin V2)
    attn:res  after the residual add      x = N(x + Attn(..))        (post-LN, the Transformer)
    mlp:in / mlp:out / mlp:res            the same for the MLP (mlp:in is vit_jax LayerNorm_2)
    mlp:mid   after the MLP activation, before its last Dense       (NormFormer, Sub-LN)
    patch:in  on each flattened patch, before the embedding          (Dual PatchNorm)
    patch:out on the patch embedding                                  (Dual PatchNorm)
    encoder:pre    after the position embedding                      (CLIP's ln_pre)
    encoder:final  after the last block                               (vit_jax encoder_norm)
    encoder:pool   after pooling                                      (timm fc_norm)

Types (`NORM_TYPES`): `layernorm` (default), `rmsnorm` (Zhang & Sennrich, 2019),
`dyt` (Dynamic Tanh, Zhu et al., CVPR 2025: γ⊙tanh(αx)+β, a learnable scalar α from 0.5) and
`none` (the identity). `model.norm_type` sets every site; `type=T` in the spec overrides it and
`<site>=T` (e.g. `attn_qk=rmsnorm`) sets one site.

A spec is ','-separated parts, applied left to right:

    <preset>                 first part only: start from a preset (e.g. 'pre,layerscale=1e-5')
    attn:<pos>, mlp:<pos>    '+'-joined positions, or 'none'; both needed (a preset gives them)
    patch:<pos>, encoder:<pos>   as above; encoder defaults to 'final' unless the last block
                             ends in an mlp:res norm or residual=dual
    A-B=<block>              layers A..B (0-based, inclusive; 'A-' = to the end, 'A' = one layer)
                             use another block: a block preset ('post') or '/'-joined
                             'attn:res/mlp:res'
    mixln=<a>                Mix-LN (Li et al., 2025): post-LN blocks in the first floor(a*L)
                             layers, a in [0, 1]
    alpha=<v|deepnorm>       x <- N(alpha*x + f(x)); deepnorm: (2L)^(1/4) (Wang et al., 2022).
                             Only on blocks whose sublayers end in a 'res' norm.
    init_gain=<v|deepnorm|magneto>   multiplies the initial value, output, fc1 and fc2 kernels;
                             deepnorm: (8L)^(-1/4); magneto: sqrt(log 2L) (Wang et al., 2023)
    ln_scaling=on            the 'in' norms' outputs of layer l (1-based) times 1/sqrt(l)
                             (LayerNorm Scaling, "The Curse of Depth", Sun et al., 2025)
    layerscale=<eps|cait>    x + diag(gamma) f(.), gamma from eps (Touvron et al., CaiT, 2021);
                             cait: 0.1 up to 18 layers, 1e-5 up to 24, else 1e-6
    head_scale=on            a learnable scale per attention head (NormFormer)
    residual=<standard|b2t|dual>   b2t: the layer input also enters the block's last norm,
                             x_{l+1} = N(x_l + h + MLP(h)), h = N(x_l + Attn(x_l)) (Takase et
                             al., 2023); dual: ResiDual (Xie et al., 2023), a second,
                             un-normalized stream d <- d + f(.) beside the post-LN one, output
                             x_L + N(d_L) (site encoder:dual). Both need post-LN blocks.

`post` is classic post-LN, N(x + f(x)); `respost` is Swin V2's / timm's ResPostBlock,
x + N(f(x)). `sandwich` is also Peri-LN (Kim et al., 2025): a norm in and out of each sublayer.
Admin (Liu et al., 2020) is not here: it needs a profiling pass over data at initialisation.
"""

from __future__ import annotations

import os
import sys

if __name__ == '__main__':  # run as a file: vit_jax/ on sys.path would shadow the stdlib `inspect`
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import dataclasses
import math
import re
from typing import Any

# ----------------------------------------------------------------------------- names
GROUPS: dict[str, tuple[str, ...]] = {
    'attn': ('in', 'qk', 'mid', 'out', 'res'),
    'mlp': ('in', 'mid', 'out', 'res'),
    'patch': ('in', 'out'),
    'encoder': ('pre', 'final', 'pool', 'dual'),
}
BLOCK_GROUPS = ('attn', 'mlp')
NORM_TYPES = ('layernorm', 'rmsnorm', 'dyt', 'none')
RESIDUALS = ('standard', 'b2t', 'dual')
POST_BLOCK = 'attn:res,mlp:res'

# preset -> spec; the docs table (docs/norms.md) follows this order.
NORM_PRESETS: dict[str, str] = {
    'pre': 'attn:in,mlp:in',
    'post': POST_BLOCK,
    'respost': 'attn:out,mlp:out',
    'addnorm': 'attn:in,mlp:in+out',
    'sandwich': 'attn:in+out,mlp:in+out',
    # Pre-LN attention and an LN on the MLP output only (no LN before the MLP): what the seed
    # Keras notebook's code computed, whatever its text proposed.
    'attn_in_mlp_out': 'attn:in,mlp:out',
    'none': 'attn:none,mlp:none',
    'deepnorm': POST_BLOCK + ',alpha=deepnorm,init_gain=deepnorm',
    'mixln': 'attn:in,mlp:in,mixln=0.25',
    'ln_scaling': 'attn:in,mlp:in,ln_scaling=on',
    'layerscale': 'attn:in,mlp:in,layerscale=cait',
    'qknorm': 'attn:in+qk,mlp:in',
    'normformer': 'attn:in+out,mlp:in+mid,head_scale=on',
    'subln': 'attn:in+mid,mlp:in+mid',
    'dual_patchnorm': 'attn:in,mlp:in,patch:in+out',
    'pre_norm': 'attn:in,mlp:in,encoder:pre+final',
    'fc_norm': 'attn:in,mlp:in,encoder:pool',
    'b2t': POST_BLOCK + ',residual=b2t',
    'resi_dual': POST_BLOCK + ',residual=dual',
    'rmsnorm': 'attn:in,mlp:in,type=rmsnorm',
    'dyt': 'attn:in,mlp:in,type=dyt',
}
RENAMED_PRESETS = {'seed': 'attn_in_mlp_out'}

# preset -> (its formula, where it comes from). N is the site's norm, f the sublayer, l the layer
# (1-based), L the depth. docs/norms.md's table is printed from this (benchmarks/norm_table.py).
PRESET_DOCS: dict[str, tuple[str, str]] = {
    'pre': ('x + f(N(x)); final N', 'Xiong et al., 2020; the ViT paper (Dosovitskiy et al., 2021)'),
    'post': ('N(x + f(x)); no final N', 'Vaswani et al., 2017 (the Transformer, BERT)'),
    'respost': ('x + N(f(x)); final N', 'Liu et al., 2022 (Swin V2 res-post-norm; timm ResPostBlock)'),
    'addnorm': ('attention as pre; x + N(MLP(N(x))); final N', "seed 000's proposal"),
    'sandwich': ('x + N(f(N(x))); final N', 'Ding et al., 2021 (CogView); Peri-LN, Kim et al., 2025'),
    'attn_in_mlp_out': ('attention as pre; x + N(MLP(x)); final N', "what seed 000's code computed"),
    'none': ('x + f(x); final N', 'no norm in the blocks (a control)'),
    'deepnorm': ('N(a x + f(x)), a = (2L)^(1/4); v, out, fc1, fc2 init x (8L)^(-1/4)',
                 'Wang et al., 2022 (DeepNet)'),
    'mixln': ('post-LN in layers 1..floor(0.25 L), pre-LN after; final N', 'Li et al., 2025 (Mix-LN)'),
    'ln_scaling': ('x + f(N(x) / sqrt(l)); final N',
                   'Sun et al., 2025 (The Curse of Depth: LayerNorm Scaling)'),
    'layerscale': ('x + diag(g) f(N(x)), g from 0.1 (L <= 18); final N',
                   'Touvron et al., 2021 (CaiT)'),
    'qknorm': ('pre, with softmax(N(q) N(k)^T / sqrt(d)) per head', 'Dehghani et al., 2023 (ViT-22B)'),
    'normformer': ('x + N(Attn_s(N(x))) with per-head scales s; x + MLP(N(x)) with N after GELU',
                   'Shleifer et al., 2021 (NormFormer)'),
    'subln': ('pre, with N before the attention output projection and before fc2',
              'Wang et al., 2022 (Foundation Transformers, Magneto)'),
    'dual_patchnorm': ('pre, with N on each flattened patch and on its embedding',
                       'Kumar et al., 2023 (Dual PatchNorm)'),
    'pre_norm': ('pre, with N after the position embedding', 'Radford et al., 2021 (CLIP ln_pre)'),
    'fc_norm': ('pre, no final N, N after pooling', 'timm fc_norm; He et al., 2022 (MAE fine-tuning)'),
    'b2t': ('h = N(x + Attn(x)); N(x + h + MLP(h)); no final N', 'Takase et al., 2023 (B2T)'),
    'resi_dual': ('post-LN stream x and d = d + f(x); out x_L + N(d_L)', 'Xie et al., 2023 (ResiDual)'),
    'rmsnorm': ('pre with N = RMSNorm: x / rms(x) * g', 'Zhang & Sennrich, 2019'),
    'dyt': ('pre with N = DyT: g tanh(a x) + b, a from 0.5', 'Zhu et al., 2025 (Transformers without Normalization)'),
}
  # old name -> new, named in the error message

# Parameter names per site. The 'in' ones keep the vit_jax names, so official pre-LN checkpoints
# load by name; a site keeps its name whatever its type (LayerNorm_0 may hold an RMSNorm).
NORM_NAMES = {
    'attn_in': 'LayerNorm_0', 'attn_qk': ('query_norm', 'key_norm'), 'attn_mid': 'mid_norm',
    'attn_out': 'LayerNorm_attn_out', 'attn_res': 'LayerNorm_attn_res',
    'mlp_in': 'LayerNorm_2', 'mlp_mid': 'LayerNorm_mid', 'mlp_out': 'LayerNorm_mlp_out',
    'mlp_res': 'LayerNorm_mlp_res',
    'patch_in': 'patch_norm_in', 'patch_out': 'patch_norm_out',
    'encoder_pre': 'pre_norm', 'encoder_final': 'encoder_norm', 'encoder_pool': 'fc_norm',
    'encoder_dual': 'encoder_norm_dual',
}
SITES = tuple(NORM_NAMES)
_OPTIONS = ('type', 'mixln', 'alpha', 'init_gain', 'ln_scaling', 'layerscale', 'head_scale',
            'residual')
_ON, _OFF = ('on', 'true', '1', 'yes'), ('off', 'false', '0', 'no')
_RANGE = re.compile(r'^(\d+)(?:-(\d*))?$')


# ----------------------------------------------------------------------------- the parsed spec
@dataclasses.dataclass(frozen=True)
class BlockNorms:
  """The norm positions of one encoder block."""
  attn: frozenset[str]
  mlp: frozenset[str]

  @property
  def spec(self) -> str:
    return ','.join(f'{g}:{_fmt(g, getattr(self, g))}' for g in BLOCK_GROUPS)


@dataclasses.dataclass(frozen=True)
class NormSpec:
  """Everything the model needs to know about its normalization, for one depth (hashable)."""
  layers: tuple[BlockNorms, ...]          # one per layer
  patch: frozenset[str] = frozenset()
  encoder: frozenset[str] = frozenset({'final'})
  types: tuple[tuple[str, str], ...] = ()  # (site, type) for every site that is on
  alpha: float = 1.0
  init_gain: float = 1.0
  ln_scaling: bool = False
  layerscale: float = 0.0                  # 0 = off
  head_scale: bool = False
  residual: str = 'standard'

  def type_of(self, site: str) -> str:
    return dict(self.types)[site]

  @property
  def final_norm(self) -> bool:
    return 'final' in self.encoder

  def segments(self) -> list[tuple[int, int, BlockNorms]]:
    """Maximal runs of identical blocks: (first layer, end layer (exclusive), block)."""
    out = []
    for i, block in enumerate(self.layers):
      if out and out[-1][2] == block:
        out[-1] = (out[-1][0], i + 1, block)
      else:
        out.append((i, i + 1, block))
    return out

  @property
  def spec(self) -> str:
    """A canonical explicit spec, e.g. 'attn:in,mlp:in' for `pre`."""
    segments = self.segments()
    base = segments[-1][2] if segments else BlockNorms(frozenset(), frozenset())
    parts = [base.spec]
    for start, end, block in segments:
      if block != base:
        parts.append(f'{start}-{end - 1}={block.spec.replace(",", "/")}')
    if self.patch:
      parts.append(f'patch:{_fmt("patch", self.patch)}')
    if self.encoder != _default_encoder(self.layers[-1] if self.layers else None, self.residual):
      parts.append(f'encoder:{_fmt("encoder", self.encoder - {"dual"})}')
    kinds = dict(self.types)
    common = max(set(kinds.values()), key=list(kinds.values()).count) if kinds else 'layernorm'
    if common != 'layernorm':
      parts.append(f'type={common}')
    parts += [f'{s}={t}' for s, t in self.types if t != common]
    for key, default in (('alpha', 1.0), ('init_gain', 1.0), ('layerscale', 0.0)):
      if getattr(self, key) != default:
        parts.append(f'{key}={getattr(self, key)!r}')
    parts += [f'{k}=on' for k in ('ln_scaling', 'head_scale') if getattr(self, k)]
    if self.residual != 'standard':
      parts.append(f'residual={self.residual}')
    return ','.join(parts)

  def sites_on(self) -> list[str]:
    return [s for s, _ in self.types]

  @property
  def inside_attention(self) -> bool:
    """Whether some block has a norm or scale inside its attention (QK-norm, Sub-LN's attn:mid,
    NormFormer's head scale): the folded attention, which folds q and k away, cannot hold it."""
    return self.head_scale or any({'qk', 'mid'} & b.attn for b in self.layers)


def _fmt(group: str, positions: frozenset[str]) -> str:
  return '+'.join(p for p in GROUPS[group] if p in positions) or 'none'


def _default_encoder(last: BlockNorms | None, residual: str) -> frozenset[str]:
  """A final norm exactly when the residual stream would leave the last block unnormalized."""
  if residual == 'dual':
    return frozenset({'dual'})
  return frozenset() if last is not None and 'res' in last.mlp else frozenset({'final'})


# ----------------------------------------------------------------------------- parsing
def spec_error(spec: Any, what: str) -> ValueError:
  presets = ', '.join(NORM_PRESETS)
  return ValueError(
      f'Invalid norm_placement {spec!r}: {what}. Use a preset ({presets}) or an explicit spec '
      "like 'attn:in,mlp:in+out' (positions per group: " +
      '; '.join(f'{g}: {"+".join(p)}' for g, p in GROUPS.items() if g != 'encoder') +
      '; encoder: pre+final+pool), optionally with options ' + ', '.join(_OPTIONS) +
      ' and per-site types (<site>=<type>, sites ' + ', '.join(SITES) + f', types '
      f'{", ".join(NORM_TYPES)}); see vit_jax/norms.py.')


def _positions(spec: Any, group: str, text: str) -> frozenset[str]:
  names = [] if text.strip() in ('', 'none') else [p.strip() for p in text.split('+')]
  valid = GROUPS[group] if group != 'encoder' else ('pre', 'final', 'pool')
  for p in names:
    if p not in valid:
      raise spec_error(spec, f'unknown position {p!r} for {group!r} (valid: {", ".join(valid)})')
  if len(set(names)) != len(names):
    raise spec_error(spec, f'repeated position in {group}:{text}')
  return frozenset(names)


def _block(spec: Any, text: str) -> BlockNorms:
  """A block preset name or 'attn:../mlp:..' ('/' or ',' between the two)."""
  text = text.strip()
  if text in NORM_PRESETS:
    text = NORM_PRESETS[text]
    if any(':' not in part or part.split(':')[0] not in BLOCK_GROUPS for part in text.split(',')):
      raise spec_error(spec, f'a layer range takes a block preset (positions only); '
                             f'{text!r} sets more')
  found = {}
  for part in re.split('[,/]', text):
    group, _, positions = part.partition(':')
    group = group.strip()
    if group not in BLOCK_GROUPS or group in found:
      raise spec_error(spec, f'block {text!r} must name attn and mlp once each')
    found[group] = _positions(spec, group, positions)
  if set(found) != set(BLOCK_GROUPS):
    raise spec_error(spec, f'block {text!r} must name attn and mlp once each')
  return BlockNorms(**found)


def _number(spec: Any, key: str, value: str, named: dict[str, float]) -> float:
  if value in named:
    return named[value]
  try:
    number = float(value)
  except ValueError:
    names = f' or one of {", ".join(named)}' if named else ''
    raise spec_error(spec, f'{key}={value!r} is not a number{names}') from None
  if not math.isfinite(number) or number < 0:
    raise spec_error(spec, f'{key}={value!r} must be a finite number >= 0')
  return number


def _switch(spec: Any, key: str, value: str) -> bool:
  if value not in _ON + _OFF:
    raise spec_error(spec, f'{key}={value!r}: use on or off')
  return value in _ON


def parse_spec(spec: str | NormSpec, num_layers: int, norm_type: str = 'layernorm') -> NormSpec:
  """Parses a preset name or an explicit spec for a `num_layers`-deep encoder (module docstring)."""
  if isinstance(spec, NormSpec):
    return spec
  if not isinstance(spec, str):
    raise spec_error(spec, f'expected a string, got {type(spec).__name__}')
  if norm_type not in NORM_TYPES:
    raise ValueError(f'model.norm_type={norm_type!r} is not one of {", ".join(NORM_TYPES)}')
  if not isinstance(num_layers, int) or num_layers < 0:
    raise ValueError(f'num_layers={num_layers!r} must be an integer >= 0')
  L = num_layers
  parts = [p.strip() for p in spec.strip().lower().split(',')]
  if parts and parts[0] in RENAMED_PRESETS:
    raise spec_error(spec, f'preset {parts[0]!r} is now called {RENAMED_PRESETS[parts[0]]!r}')
  if parts and ':' not in parts[0] and '=' not in parts[0]:
    if parts[0] not in NORM_PRESETS:
      raise spec_error(spec, f'unknown preset {parts[0]!r}')
    preset = [p.strip() for p in NORM_PRESETS[parts[0]].split(',')]
    parts = preset + parts[1:]
  groups: dict[str, frozenset[str]] = {}
  options: dict[str, str] = {}
  ranges: list[tuple[int, int, BlockNorms]] = []
  site_types: dict[str, str] = {}
  for part in parts:
    if ':' in part.split('=')[0]:
      group, _, positions = part.partition(':')
      group = group.strip()
      if group not in GROUPS:
        raise spec_error(spec, f'unknown group {group!r} (valid: {", ".join(GROUPS)})')
      groups[group] = _positions(spec, group, positions)  # a later part overrides a preset's
    elif '=' in part:
      key, _, value = (s.strip() for s in part.partition('='))
      if m := _RANGE.match(key):
        start = int(m.group(1))
        end = start if m.group(2) is None else (L - 1 if m.group(2) == '' else int(m.group(2)))
        if not start <= end < L:
          raise spec_error(spec, f'layer range {key!r} is outside layers 0-{L - 1}')
        ranges.append((start, end + 1, _block(spec, value)))
      elif key in SITES:
        if value not in NORM_TYPES:
          raise spec_error(spec, f'{key}={value!r}: not a norm type ({", ".join(NORM_TYPES)})')
        site_types[key] = value
      elif key in _OPTIONS:
        options[key] = value
      else:
        raise spec_error(spec, f'unknown option or site {key!r}')
    else:
      what = 'a preset must come first' if part in NORM_PRESETS else f'malformed part {part!r}'
      raise spec_error(spec, what)
  missing = [g for g in BLOCK_GROUPS if g not in groups]
  if missing:
    raise spec_error(spec, f'group {", ".join(map(repr, missing))} not given')

  base = BlockNorms(attn=groups['attn'], mlp=groups['mlp'])
  layers = [base] * L
  if 'mixln' in options:
    fraction = _number(spec, 'mixln', options['mixln'], {})
    if fraction > 1:
      raise spec_error(spec, f'mixln={options["mixln"]} must be a fraction in [0, 1]')
    layers[:math.floor(fraction * L)] = [_block(spec, POST_BLOCK)] * math.floor(fraction * L)
  for start, end, block in ranges:
    layers[start:end] = [block] * (end - start)

  residual = options.get('residual', 'standard')
  if residual not in RESIDUALS:
    raise spec_error(spec, f'residual={residual!r} is not one of {", ".join(RESIDUALS)}')
  encoder = groups.get('encoder', _default_encoder(layers[-1] if layers else None, residual))
  if residual == 'dual':
    encoder = encoder | {'dual'}
  n = max(L, 1)  # the depth-scaled values at depth 0 (an encoder-less model) are never used
  values = dict(
      alpha=_number(spec, 'alpha', options.get('alpha', '1'), {'deepnorm': (2 * n)**0.25}),
      init_gain=_number(spec, 'init_gain', options.get('init_gain', '1'),
                        {'deepnorm': (8 * n)**-0.25, 'magneto': math.sqrt(math.log(2 * n))}),
      layerscale=_number(spec, 'layerscale', options.get('layerscale', '0'),
                         {'cait': 0.1 if L <= 18 else 1e-5 if L <= 24 else 1e-6}),
      ln_scaling=_switch(spec, 'ln_scaling', options.get('ln_scaling', 'off')),
      head_scale=_switch(spec, 'head_scale', options.get('head_scale', 'off')))
  if values['alpha'] <= 0 or values['init_gain'] <= 0:
    raise spec_error(spec, 'alpha and init_gain must be > 0')

  # Which combinations cannot work.
  post_everywhere = all('res' in b.attn and 'res' in b.mlp for b in layers)
  if values['alpha'] != 1 and not post_everywhere:
    raise spec_error(spec, f'alpha={values["alpha"]:g} scales the residual before a res norm '
                           '(DeepNorm); every layer needs attn:res and mlp:res (e.g. preset post)')
  if residual != 'standard' and not post_everywhere:
    raise spec_error(spec, f'residual={residual} is built on post-LN blocks; every layer needs '
                           'attn:res and mlp:res')
  if values['ln_scaling'] and not any('in' in b.attn or 'in' in b.mlp for b in layers):
    raise spec_error(spec, "ln_scaling scales the 'in' norms' outputs; the spec has none")

  default_type = options.get('type', norm_type)
  if default_type not in NORM_TYPES:
    raise spec_error(spec, f'type={default_type!r} is not one of {", ".join(NORM_TYPES)}')
  on = [f'{g}_{p}' for g in BLOCK_GROUPS for p in GROUPS[g] if any(p in getattr(b, g) for b in layers)]
  on += [f'patch_{p}' for p in GROUPS['patch'] if p in groups.get('patch', ())]
  on += [f'encoder_{p}' for p in GROUPS['encoder'] if p in encoder]
  for site in site_types:
    if site not in on:
      raise spec_error(spec, f'a type is given for site {site!r}, which this spec does not have '
                             f'(its sites: {", ".join(on) or "none"})')
  types = tuple((s, site_types.get(s, default_type)) for s in on)
  return NormSpec(layers=tuple(layers), patch=groups.get('patch', frozenset()),
                  encoder=frozenset(encoder), types=types, residual=residual, **values)


def with_final_norm(spec: NormSpec, final_norm: bool | None) -> NormSpec:
  """`model.final_norm` (None: the spec decides) turns encoder:final on or off."""
  if final_norm is None or final_norm == spec.final_norm:
    return spec
  encoder = spec.encoder | {'final'} if final_norm else spec.encoder - {'final'}
  types = dict(spec.types)
  default = max(set(types.values()), key=list(types.values()).count) if types else 'layernorm'
  if final_norm:
    types['encoder_final'] = default
  else:
    types.pop('encoder_final', None)
  order = [s for s in SITES if s in types]
  return dataclasses.replace(spec, encoder=frozenset(encoder),
                             types=tuple((s, types[s]) for s in order))


if __name__ == '__main__':
  for name, preset in NORM_PRESETS.items():
    print(f'{name:16s} {preset:52s} -> {parse_spec(name, 12).spec}')
