"""Shared by the model tests: a tiny ViT, noise-filled params, and an independent numpy ViT.

Parameters come from `jax.eval_shape(init)` filled with numpy noise: no XLA compile for init
(eager init is slow on CPU) and random LN scales/biases, so a misplaced LN cannot hide. The
`ref_*` functions are the formulas written out in float64 numpy, with no code from vit_jax.
"""

import jax
import numpy as np

from vit_jax import models
from vit_jax import norms

TINY = dict(patch_size=4, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64)
IMAGES = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)  # 16 patches
# Block inputs shaped like the tiny model's tokens (16 + cls), so eager ops compile once.
TOKENS = np.random.default_rng(1).normal(size=(2, 17, 32)).astype(np.float32)
NUM_CLASSES = 5


def tiny(**overrides) -> models.VisionTransformer:
  return models.VisionTransformer(num_classes=NUM_CLASSES, **{**TINY, **overrides})


def make_block(placement='pre', **fields) -> models.Encoder1DBlock:
  """One encoder block with the norms of a one-layer `placement` (preset or spec)."""
  spec = norms.parse_spec(placement, 1)
  return models.Encoder1DBlock(norm_spec=spec, block=spec.layers[0], **fields)


def param_shapes(module, x, *static_args):
  init = lambda key, x: module.init(key, x, *static_args)
  return jax.eval_shape(init, jax.random.key(0), x)['params']


def random_params(module, *args, seed=0, scale=0.2):
  """Noise-filled params; LN scales around 1 so normalization stays visible."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    offset = 1.0 if path[-1].key == 'scale' else 0.0
    return (offset + scale * rng.normal(size=s.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, param_shapes(module, *args))


def flat_names(tree) -> dict[str, tuple]:
  return {'/'.join(k.key for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def rng(seed: int) -> jax.Array:
  """A dropout key. 'rbg' because threefry's bit generator is slow to compile on CPU."""
  return jax.random.key(seed, impl='rbg')


def train_apply(model, params, seed, x=IMAGES):
  return model.apply({'params': params}, x, train=True, rngs={'dropout': rng(seed)})


# ----------------------------------------------------------------------------- independent reference
def ref_layernorm(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu)**2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def ref_gelu(x):  # tanh approximation, as flax nn.gelu / vit_jax
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def ref_attention(x, p):
  q, k, v = (np.einsum('btd,dhk->bthk', x, p[n]['kernel']) + p[n]['bias']
             for n in ('query', 'key', 'value'))
  logits = np.einsum('bqhk,bshk->bhqs', q, k) / np.sqrt(q.shape[-1])
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  y = np.einsum('bhqs,bshk->bqhk', w, v)
  return np.einsum('bqhk,hkd->bqd', y, p['out']['kernel']) + p['out']['bias']


def ref_mlp(x, p, activate_output=False):
  n = len(p)
  for i in range(n):
    x = x @ p[f'Dense_{i}']['kernel'] + p[f'Dense_{i}']['bias']
    if i < n - 1 or activate_output:
      x = ref_gelu(x)
  return x


REF_LN = {('attn', 'in'): 'LayerNorm_0', ('attn', 'out'): 'LayerNorm_attn_out',
          ('attn', 'res'): 'LayerNorm_attn_res', ('mlp', 'in'): 'LayerNorm_2',
          ('mlp', 'out'): 'LayerNorm_mlp_out', ('mlp', 'res'): 'LayerNorm_mlp_res'}


def ref_block(x, p, attn, mlp, activate_output=False):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  x = np.asarray(x, np.float64)
  fns = {'attn': lambda y: ref_attention(y, p['MultiHeadDotProductAttention_1']),
         'mlp': lambda y: ref_mlp(y, p['MlpBlock_3'], activate_output)}
  for sub, on in (('attn', attn), ('mlp', mlp)):
    y = ref_layernorm(x, p[REF_LN[sub, 'in']]) if 'in' in on else x
    y = fns[sub](y)
    y = ref_layernorm(y, p[REF_LN[sub, 'out']]) if 'out' in on else y
    x = x + y
    x = ref_layernorm(x, p[REF_LN[sub, 'res']]) if 'res' in on else x
  return x


def ref_model(images, params, attn, mlp, patch, final_norm):
  """Token classifier, learned posemb."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  b, h, w, c = images.shape
  x = images.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
  kernel = p['embedding']['kernel']  # [patch, patch, c, hidden]
  x = x.reshape(b, -1, patch * patch * c) @ kernel.reshape(-1, kernel.shape[-1])
  x = x + p['embedding']['bias']  # [b, tokens, hidden]
  x = np.concatenate([np.broadcast_to(p['cls'], (b, 1, x.shape[-1])), x], axis=1)
  x = x + p['Transformer']['posembed_input']['pos_embedding']
  i = 0
  while f'encoderblock_{i}' in p['Transformer']:
    x = ref_block(x, p['Transformer'][f'encoderblock_{i}'], attn, mlp)
    i += 1
  if final_norm:
    x = ref_layernorm(x, p['Transformer']['encoder_norm'])
  return x[:, 0] @ p['head']['kernel'] + p['head']['bias']
