"""Normalization placement: which LayerNorms an encoder block has, parsed from the config.

The study varies where the LNs sit, so the placement is data read by one block
(`models.Encoder1DBlock`), not a model class per variant. Per sublayer (attention, MLP) each of
three positions is on or off:

    in    before the sublayer f            y = f(LN(x))
    out   on f's output, before the add    x = x + LN(f(..))
    res   after the residual add           x = LN(x + ..)

`config.model.norm_placement` is a preset name (`NORM_PRESETS`) or an explicit spec such as
'attn:in,mlp:in+out'; `parse_norm_placement` turns either into a `NormPlacement`.
"""

from __future__ import annotations

import os
import sys

if __name__ == '__main__':  # run as a file: vit_jax/ on sys.path would shadow the stdlib `inspect`
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import dataclasses
from typing import Any

SUBLAYERS = ('attn', 'mlp')
NORM_POSITIONS = ('in', 'out', 'res')
NORM_PRESETS: dict[str, str] = {
    'pre': 'attn:in,mlp:in',
    'post': 'attn:res,mlp:res',
    'addnorm': 'attn:in,mlp:in+out',
    'sandwich': 'attn:in+out,mlp:in+out',
    # Named by its positions: pre-LN attention and an LN on the MLP output only (no LN before the
    # MLP). It is what the seed Keras notebook's code computed, whatever its text proposed.
    'attn_in_mlp_out': 'attn:in,mlp:out',
    'none': 'attn:none,mlp:none',
}
RENAMED_PRESETS = {'seed': 'attn_in_mlp_out'}  # old name -> new, named in the error message

# LN module names per (sublayer, position); the 'in' ones keep the vit_jax names, so official
# pre-LN checkpoints load by name.
LN_NAMES = {
    ('attn', 'in'): 'LayerNorm_0', ('attn', 'out'): 'LayerNorm_attn_out',
    ('attn', 'res'): 'LayerNorm_attn_res',
    ('mlp', 'in'): 'LayerNorm_2', ('mlp', 'out'): 'LayerNorm_mlp_out',
    ('mlp', 'res'): 'LayerNorm_mlp_res',
}


@dataclasses.dataclass(frozen=True)
class NormPlacement:
  """Which LN positions ('in', 'out', 'res') are on for each sublayer."""
  attn: frozenset[str]
  mlp: frozenset[str]

  @property
  def final_norm(self) -> bool:
    """Default final LN: needed iff the residual stream leaves the last block unnormalized."""
    return 'res' not in self.mlp

  @property
  def spec(self) -> str:
    """Canonical explicit spec string, e.g. 'attn:in,mlp:in+out'."""
    def fmt(s):
      return '+'.join(p for p in NORM_POSITIONS if p in s) or 'none'
    return f'attn:{fmt(self.attn)},mlp:{fmt(self.mlp)}'


def _placement_error(spec: Any, what: str) -> ValueError:
  presets = ', '.join(f'{k} ({v})' for k, v in NORM_PRESETS.items())
  return ValueError(
      f'Invalid norm_placement {spec!r}: {what}. Use a preset name, one of: {presets}; '
      "or an explicit spec 'attn:<positions>,mlp:<positions>' naming each sublayer once, "
      f"where <positions> is '+'-joined from {', '.join(NORM_POSITIONS)}, or empty/'none' "
      "for no LN, e.g. 'attn:in,mlp:in+out'.")


def parse_norm_placement(spec: str | NormPlacement) -> NormPlacement:
  """Parses a preset name or an explicit spec like 'attn:in,mlp:in+out'."""
  if isinstance(spec, NormPlacement):
    return spec
  if not isinstance(spec, str):
    raise _placement_error(spec, f'expected a string, got {type(spec).__name__}')
  text = spec.strip().lower()
  if ':' not in text:
    if text in RENAMED_PRESETS:
      raise _placement_error(spec, f'preset {text!r} is now called {RENAMED_PRESETS[text]!r}')
    if text not in NORM_PRESETS:
      raise _placement_error(spec, f'unknown preset {text!r}')
    text = NORM_PRESETS[text]
  found: dict[str, frozenset[str]] = {}
  for part in text.split(','):
    if part.count(':') != 1:
      raise _placement_error(spec, f"malformed part {part.strip()!r} (expected 'sublayer:positions')")
    sub, positions = (s.strip() for s in part.split(':'))
    if sub not in SUBLAYERS:
      raise _placement_error(spec, f'unknown sublayer {sub!r} (valid: {", ".join(SUBLAYERS)})')
    if sub in found:
      raise _placement_error(spec, f'sublayer {sub!r} named more than once')
    names = [] if positions in ('', 'none') else [p.strip() for p in positions.split('+')]
    for p in names:
      if p not in NORM_POSITIONS:
        raise _placement_error(
            spec, f'unknown position {p!r} for {sub!r} (valid: {", ".join(NORM_POSITIONS)})')
    if len(set(names)) != len(names):
      raise _placement_error(spec, f'repeated position in {part.strip()!r}')
    found[sub] = frozenset(names)
  missing = [s for s in SUBLAYERS if s not in found]
  if missing:
    raise _placement_error(spec, f'sublayer {", ".join(map(repr, missing))} not given')
  return NormPlacement(attn=found['attn'], mlp=found['mlp'])


if __name__ == '__main__':
  for name, preset in NORM_PRESETS.items():
    print(f'{name:16s} {preset}')
