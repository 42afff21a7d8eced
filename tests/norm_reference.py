"""The normalization schemes written out from their papers, in float64 numpy, for tests/test_norms.py.

Nothing here comes from vit_jax: `EXPECTED` says, per preset, what the paper's block computes at
depth `DEPTH`, and `ref_model` computes a token-classifier ViT from that description and a
parameter tree (the names of models.py's docstring).
"""

import jax
import numpy as np

from model_fixtures import ref_gelu

DEPTH = 4
PRE = ({'in'}, {'in'})
POST = ({'res'}, {'res'})
FINAL = {'final'}


def scheme(layers, encoder=FINAL, **kw):
  """One scheme: per-layer (attn positions, mlp positions), the encoder norms, the options."""
  layers = layers if isinstance(layers, list) else [layers] * DEPTH
  return dict(dict(layers=layers, patch=set(), encoder=encoder, kind='layernorm', alpha=1.0,
                   init_gain=1.0, ln_scaling=False, layerscale=0.0, head_scale=False,
                   residual='standard'), **kw)


EXPECTED = {
    'pre': scheme(PRE),                                        # ViT: x + f(LN(x)), final LN
    'post': scheme(POST, encoder=set()),                       # Transformer: LN(x + f(x))
    'respost': scheme(({'out'}, {'out'})),                     # Swin V2: x + LN(f(x))
    'addnorm': scheme(({'in'}, {'in', 'out'})),
    'sandwich': scheme(({'in', 'out'}, {'in', 'out'})),        # Peri-LN: x + LN(f(LN(x)))
    'attn_in_mlp_out': scheme(({'in'}, {'out'})),
    'none': scheme((set(), set())),
    'deepnorm': scheme(POST, encoder=set(), alpha=(2 * DEPTH)**0.25,
                       init_gain=(8 * DEPTH)**-0.25),           # LN(a x + f(x)), a = (2N)^(1/4)
    'mixln': scheme([POST] + [PRE] * 3),                       # post in floor(0.25 L) layers
    'ln_scaling': scheme(PRE, ln_scaling=True),                # LN output of layer l / sqrt(l)
    'layerscale': scheme(PRE, layerscale=0.1),                 # CaiT: eps = 0.1 up to depth 18
    'qknorm': scheme(({'in', 'qk'}, {'in'})),
    'normformer': scheme(({'in', 'out'}, {'in', 'mid'}), head_scale=True),
    'subln': scheme(({'in', 'mid'}, {'in', 'mid'})),
    'dual_patchnorm': scheme(PRE, patch={'in', 'out'}),
    'pre_norm': scheme(PRE, encoder={'pre', 'final'}),         # CLIP's ln_pre
    'fc_norm': scheme(PRE, encoder={'pool'}),                  # timm: LN after pooling, none before
    'b2t': scheme(POST, encoder=set(), residual='b2t'),
    'resi_dual': scheme(POST, encoder={'dual'}, residual='dual'),
    'rmsnorm': scheme(PRE, kind='rmsnorm'),
    'dyt': scheme(PRE, kind='dyt'),
}

BLOCK_NORM = {('attn', 'in'): 'LayerNorm_0', ('attn', 'out'): 'LayerNorm_attn_out',
              ('attn', 'res'): 'LayerNorm_attn_res', ('mlp', 'in'): 'LayerNorm_2',
              ('mlp', 'out'): 'LayerNorm_mlp_out', ('mlp', 'res'): 'LayerNorm_mlp_res'}


def ref_norm(kind, x, p, eps=1e-6):
  if kind == 'none':
    return x
  if kind == 'layernorm':
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu)**2).mean(-1, keepdims=True) + eps) * p['scale'] + p['bias']
  if kind == 'rmsnorm':  # no centring, no bias (Zhang & Sennrich)
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * p['scale']
  if kind == 'dyt':  # Zhu et al.: gamma * tanh(alpha x) + beta
    return p['scale'] * np.tanh(p['alpha'] * x) + p['bias']
  raise ValueError(kind)


def ref_attention(x, p, kind, qk=False, mid=False, head_scale=False):
  q, k, v = (np.einsum('btd,dhk->bthk', x, p[n]['kernel']) + p[n]['bias']
             for n in ('query', 'key', 'value'))  # [b, t, heads, head_dim]
  if qk:  # ViT-22B: a norm on q and on k, over head_dim
    q, k = ref_norm(kind, q, p['query_norm']), ref_norm(kind, k, p['key_norm'])
  logits = np.einsum('bqhk,bshk->bhqs', q, k) / np.sqrt(q.shape[-1])
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  o = np.einsum('bhqs,bshk->bqhk', w, v)
  if head_scale:  # NormFormer: one learned scale per head
    o = o * p['head_scale'][:, None]
  if mid:  # Sub-LN: a norm before the output projection, over all heads
    b, t, h, d = o.shape
    o = ref_norm(kind, o.reshape(b, t, h * d), p['mid_norm']).reshape(b, t, h, d)
  return np.einsum('bqhk,hkd->bqd', o, p['out']['kernel']) + p['out']['bias']


def ref_mlp(x, p, kind, mid=False):
  n = len([k for k in p if k.startswith('Dense_')])
  for i in range(n):
    x = x @ p[f'Dense_{i}']['kernel'] + p[f'Dense_{i}']['bias']
    if i < n - 1:
      x = ref_gelu(x)
      if mid and i == n - 2:  # NormFormer / Sub-LN: after the activation, before fc2
        x = ref_norm(kind, x, p['LayerNorm_mid'])
  return x


def ref_block(x, d, p, positions, e, layer):
  """One block of scheme `e` at 1-based `layer`; `d` is ResiDual's second stream (or None)."""
  kind, x0 = e['kind'], x
  f = {'attn': lambda y: ref_attention(y, p['MultiHeadDotProductAttention_1'], kind,
                                       'qk' in positions[0], 'mid' in positions[0],
                                       e['head_scale']),
       'mlp': lambda y: ref_mlp(y, p['MlpBlock_3'], kind, 'mid' in positions[1])}
  for sub, on in zip(('attn', 'mlp'), positions):
    y = x
    if 'in' in on:
      y = ref_norm(kind, y, p[BLOCK_NORM[sub, 'in']])
      if e['ln_scaling']:
        y = y / np.sqrt(layer)
    y = f[sub](y)
    if 'out' in on:
      y = ref_norm(kind, y, p[BLOCK_NORM[sub, 'out']])
    if e['layerscale']:
      y = y * p[f'layerscale_{sub}']
    if d is not None:
      d = d + y
    x = e['alpha'] * x + y
    if sub == 'mlp' and e['residual'] == 'b2t':  # Takase et al.: LN(x_l + h + FFN(h))
      x = x + x0
    if 'res' in on:
      x = ref_norm(kind, x, p[BLOCK_NORM[sub, 'res']])
  return x, d


def ref_model(images, params, e, patch):
  """Token classifier, learned position embedding, scheme `e` (an `EXPECTED` value)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  kind = e['kind']
  b, h, w, c = images.shape
  x = images.astype(np.float64).reshape(b, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, patch * patch * c)  # [b, tokens, p*p*c]
  if 'in' in e['patch']:  # Dual PatchNorm
    x = ref_norm(kind, x, p['patch_norm_in'])
  kernel = p['embedding']['kernel']  # [patch, patch, c, hidden]
  x = x @ kernel.reshape(-1, kernel.shape[-1]) + p['embedding']['bias']
  if 'out' in e['patch']:
    x = ref_norm(kind, x, p['patch_norm_out'])
  x = np.concatenate([np.broadcast_to(p['cls'], (b, 1, x.shape[-1])), x], axis=1)
  tr = p['Transformer']
  x = x + tr['posembed_input']['pos_embedding']
  if 'pre' in e['encoder']:
    x = ref_norm(kind, x, tr['pre_norm'])
  d = x if e['residual'] == 'dual' else None
  for i, positions in enumerate(e['layers']):
    x, d = ref_block(x, d, tr[f'encoderblock_{i}'], positions, e, i + 1)
  if d is not None:  # ResiDual: x_N + LN(d_N)
    x = x + ref_norm(kind, d, tr['encoder_norm_dual'])
  if 'final' in e['encoder']:
    x = ref_norm(kind, x, tr['encoder_norm'])
  x = x[:, 0]
  if 'pool' in e['encoder']:
    x = ref_norm(kind, x, p['fc_norm'])
  return x @ p['head']['kernel'] + p['head']['bias']
