"""Tests for vit_jax/models.py: shapes, names, and that each norm placement computes its formula.

Parameters come from `jax.eval_shape(init)` filled with numpy noise: no XLA compile for init
(eager init is slow on CPU) and random LN scales/biases, so a misplaced LN cannot hide.
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vit_jax import models

TINY = dict(patch_size=4, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64)
IMAGES = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)  # 16 patches
# Block inputs shaped like the tiny model's tokens (16 + cls), so eager ops compile once.
TOKENS = np.random.default_rng(1).normal(size=(2, 17, 32)).astype(np.float32)
NUM_CLASSES = 5


def tiny(**overrides) -> models.VisionTransformer:
  return models.VisionTransformer(num_classes=NUM_CLASSES, **{**TINY, **overrides})


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


# ----------------------------------------------------------------------------- shapes and names
@pytest.mark.parametrize('classifier', models.CLASSIFIERS)
@pytest.mark.parametrize('posemb', models.POSEMBS)
def test_output_shapes(classifier, posemb):
  model = tiny(classifier=classifier, posemb=posemb)
  params = random_params(model, IMAGES)
  logits = model.apply({'params': params}, IMAGES)
  assert logits.shape == (2, NUM_CLASSES) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()
  names = flat_names(params)
  assert ('cls' in names) == (classifier == 'token')
  pe = 'Transformer/posembed_input/pos_embedding'
  assert (pe in names) == (posemb == 'learn')
  if posemb == 'learn':
    assert names[pe] == (1, 16 + (classifier == 'token'), 32)
  head_in = 16 * 32 if classifier == 'flatten' else 32
  assert names['head/kernel'] == (head_in, NUM_CLASSES)


@pytest.fixture(scope='module')
def vit_b16_shapes():
  model = models.VisionTransformer(num_classes=1000)  # defaults are ViT-B/16
  return param_shapes(model, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))


def test_vit_b16_param_count(vit_b16_shapes):
  assert sum(math.prod(x.shape) for x in jax.tree.leaves(vit_b16_shapes)) == 86_567_656


def test_vit_b16_param_names(vit_b16_shapes):
  names = flat_names(vit_b16_shapes)
  blk = 'Transformer/encoderblock_0/'
  expected = {
      'embedding/kernel': (16, 16, 3, 768), 'cls': (1, 1, 768),
      'Transformer/posembed_input/pos_embedding': (1, 197, 768),
      blk + 'LayerNorm_0/scale': (768,), blk + 'LayerNorm_2/bias': (768,),
      blk + 'MultiHeadDotProductAttention_1/query/kernel': (768, 12, 64),
      blk + 'MultiHeadDotProductAttention_1/key/bias': (12, 64),
      blk + 'MultiHeadDotProductAttention_1/value/kernel': (768, 12, 64),
      blk + 'MultiHeadDotProductAttention_1/out/kernel': (12, 64, 768),
      blk + 'MultiHeadDotProductAttention_1/out/bias': (768,),
      blk + 'MlpBlock_3/Dense_0/kernel': (768, 3072), blk + 'MlpBlock_3/Dense_1/kernel': (3072, 768),
      'Transformer/encoderblock_11/MlpBlock_3/Dense_1/bias': (768,),
      'Transformer/encoder_norm/scale': (768,), 'head/kernel': (768, 1000), 'head/bias': (1000,),
  }
  for name, shape in expected.items():
    assert names.get(name) == shape, name
  assert set(vit_b16_shapes['Transformer']['encoderblock_0']) == {
      'LayerNorm_0', 'MultiHeadDotProductAttention_1', 'LayerNorm_2', 'MlpBlock_3'}
  assert 'Transformer/encoderblock_12/LayerNorm_0/scale' not in names


def test_create_model_variants():
  model = models.create_model({'variant': 'L/32', 'hidden_size': 8, 'norm_placement': 'post'}, 10)
  assert (model.patch_size, model.hidden_size, model.num_layers, model.num_heads,
          model.mlp_dim) == (32, 1024, 24, 16, 4096)  # the variant wins
  assert model.norm_placement == 'post' and model.num_classes == 10
  cfg = ml_collections.ConfigDict({'variant': '', 'hidden_size': 64, 'mlp_dim': [128],
                                   'head_hidden_sizes': [16, 8]})
  model = models.create_model(cfg, 3)
  assert model.hidden_size == 64 and model.mlp_dim == (128,) and model.head_hidden_sizes == (16, 8)
  hash(model)  # lists became tuples: the module stays usable as a static jit argument
  assert models.create_model({'variant': 'Ti'}, 3).patch_size == 16  # no '/N': field kept
  with pytest.raises(ValueError, match=r"'X/16'.*Ti, S, B, L, H"):
    models.create_model({'variant': 'X/16'}, 10)
  with pytest.raises(ValueError, match='hiden_size'):
    models.create_model({'hiden_size': 3}, 10)


def test_seed_keras_config():
  """The seed notebook's model: 72px, patch 6, width 64, 4 heads of 64, MLP 128->64 (GELU on both)."""
  model = models.create_model(dict(
      patch_size=6, hidden_size=64, num_layers=8, num_heads=4, head_dim=64, mlp_dim=128,
      mlp_activate_output=True, classifier='flatten', norm_placement='seed',
      head_hidden_sizes=(2048, 1024), head_dropout_rate=0.5, dropout_rate=0.1), 100)
  names = flat_names(param_shapes(model, jax.ShapeDtypeStruct((1, 72, 72, 3), jnp.float32)))
  assert names['Transformer/encoderblock_7/MultiHeadDotProductAttention_1/query/kernel'] == (64, 4, 64)
  assert names['Transformer/encoderblock_0/LayerNorm_mlp_out/scale'] == (64,)
  assert names['head_mlp_0/kernel'] == (144 * 64, 2048) and names['head/kernel'] == (1024, 100)
  assert 'Transformer/encoder_norm/scale' in names
  assert sum(math.prod(s) for s in names.values()) == 21_759_012


# ----------------------------------------------------------------------------- norm placement
PLACEMENTS = {  # spec -> (attn positions, mlp positions), written out independently
    'pre': ({'in'}, {'in'}),
    'post': ({'res'}, {'res'}),
    'addnorm': ({'in'}, {'in', 'out'}),
    'sandwich': ({'in', 'out'}, {'in', 'out'}),
    'seed': ({'in'}, {'out'}),
    'none': (set(), set()),
    'attn:out+res,mlp:in+res': ({'out', 'res'}, {'in', 'res'}),
    ' ATTN: res+in , mlp: ': ({'in', 'res'}, set()),
    'attn:in+out+res,mlp:none': ({'in', 'out', 'res'}, set()),
}


@pytest.mark.parametrize('spec', PLACEMENTS)
def test_parse_norm_placement(spec):
  attn, mlp = PLACEMENTS[spec]
  p = models.parse_norm_placement(spec)
  assert (p.attn, p.mlp) == (attn, mlp)
  assert p.final_norm == ('res' not in mlp)
  assert models.parse_norm_placement(p.spec) == p
  assert models.parse_norm_placement(p) is p


@pytest.mark.parametrize('spec,fragments', [
    ('prenorm', ['unknown preset', "'prenorm'", 'pre', 'post', 'addnorm', 'sandwich',
                 "'attn:in,mlp:in+out'"]),
    ('attn:in', ["'mlp'", 'not given', "'attn:in,mlp:in+out'"]),
    ('attn:in,mlp:inn', ["unknown position 'inn'", 'in, out, res']),
    ('attn:in,ffn:in', ["unknown sublayer 'ffn'", 'attn, mlp']),
    ('attn:in,attn:out,mlp:in', ["'attn' named more than once"]),
    ('attn=in,mlp:in', ['malformed', "'attn=in'"]),
    ('attn:in:out,mlp:in', ['malformed']),
    ('attn:in+in,mlp:in', ['repeated position']),
    ('attn:none+in,mlp:in', ["unknown position 'none'"]),
    ('', ['unknown preset']),
    (None, ['expected a string']),
])
def test_bad_norm_placement(spec, fragments):
  with pytest.raises(ValueError) as e:
    models.parse_norm_placement(spec)
  for fragment in fragments:
    assert fragment in str(e.value)


def test_bad_norm_placement_in_model():
  with pytest.raises(ValueError, match='unknown preset'):
    param_shapes(tiny(norm_placement='prenorm'), IMAGES)


@pytest.mark.parametrize('spec', PLACEMENTS)
def test_block_computes_its_formula(spec):
  attn, mlp = PLACEMENTS[spec]
  block = models.Encoder1DBlock(num_heads=4, head_dim=8, mlp_dim=64, norm_placement=spec)
  x = TOKENS
  params = random_params(block, x, 0.0, False)
  want = {REF_LN[s, p] for s, on in (('attn', attn), ('mlp', mlp)) for p in on}
  assert {k for k in params if k.startswith('LayerNorm')} == want
  out = block.apply({'params': params}, x)
  np.testing.assert_allclose(out, ref_block(x, params, attn, mlp), atol=1e-5, rtol=1e-5)


def test_block_mlp_widths_and_head_dim():
  """Several MLP widths, GELU on the output, head_dim != width / heads."""
  block = models.Encoder1DBlock(num_heads=2, head_dim=24, mlp_dim=(48, 40),
                                mlp_activate_output=True, norm_placement='sandwich')
  x = TOKENS
  params = random_params(block, x, 0.0, False)
  assert params['MultiHeadDotProductAttention_1']['query']['kernel'].shape == (32, 2, 24)
  assert params['MlpBlock_3']['Dense_2']['kernel'].shape == (40, 32)
  out = jax.jit(block.apply)({'params': params}, x)  # jit: new shapes would compile op by op
  ref = ref_block(x, params, {'in', 'out'}, {'in', 'out'}, activate_output=True)
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('spec', ['pre', 'post', 'attn:out+res,mlp:in+res'])
def test_model_computes_reference(spec):
  attn, mlp = PLACEMENTS[spec]
  model = tiny(norm_placement=spec)
  params = random_params(model, IMAGES)
  final = 'encoder_norm' in params['Transformer']
  assert final == ('res' not in mlp)
  np.testing.assert_allclose(model.apply({'params': params}, IMAGES),
                             ref_model(IMAGES, params, attn, mlp, 4, final), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('spec', PLACEMENTS)
@pytest.mark.parametrize('override', [None, True, False])
def test_final_norm_rule(spec, override):
  params = param_shapes(tiny(norm_placement=spec, final_norm=override), IMAGES)
  default = 'res' not in PLACEMENTS[spec][1]
  assert ('encoder_norm' in params['Transformer']) == (default if override is None else override)


def test_post_block_output_is_normalized():
  block = models.Encoder1DBlock(num_heads=4, head_dim=8, mlp_dim=64, norm_placement='post')
  x = 3.0 + 5.0 * TOKENS
  params = random_params(block, x, 0.0, False)
  params = {k: ({'scale': np.ones(32), 'bias': np.zeros(32)} if k.startswith('LayerNorm') else v)
            for k, v in params.items()}  # the default LN init
  out = np.asarray(block.apply({'params': params}, x))
  np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.var(-1), 1.0, atol=1e-4)


# ----------------------------------------------------------------------------- dropout, drop-path
def test_dropout_eval_is_deterministic_and_train_is_not():
  base = tiny(head_hidden_sizes=(16,))
  noisy = base.clone(dropout_rate=0.3, attention_dropout_rate=0.3, head_dropout_rate=0.3,
                     stochastic_depth_rate=0.3)
  params = random_params(base, IMAGES)
  want = base.apply({'params': params}, IMAGES)
  np.testing.assert_array_equal(noisy.apply({'params': params}, IMAGES), want)
  np.testing.assert_array_equal(noisy.apply({'params': params}, IMAGES, train=False), want)
  a, b = train_apply(noisy, params, 1), train_apply(noisy, params, 2)
  assert not np.allclose(a, b) and not np.allclose(a, want)
  np.testing.assert_array_equal(a, train_apply(noisy, params, 1))  # same key, same result


@pytest.mark.parametrize('field', ['dropout_rate', 'attention_dropout_rate', 'head_dropout_rate'])
def test_each_dropout_acts_in_training(field):
  model = tiny(**{field: 0.5})
  params = random_params(model, IMAGES)
  assert not np.allclose(train_apply(model, params, 1), train_apply(model, params, 2))


def test_drop_path_rates_are_linear():
  np.testing.assert_allclose(models.drop_path_rates(0.3, 4), [0.0, 0.1, 0.2, 0.3], atol=1e-7)


def test_drop_path_drops_whole_examples():
  y = np.ones((512, 3, 4), np.float32)
  out = np.asarray(models.DropPath().apply({}, y, 0.25, deterministic=False,
                                           rngs={'dropout': rng(0)}))
  per_example = out.reshape(512, -1)
  assert (per_example.min(1) == per_example.max(1)).all()  # all or nothing per example
  kept = per_example[:, 0] != 0
  np.testing.assert_allclose(per_example[kept], 1 / 0.75, rtol=1e-6)
  assert 0.15 < (per_example[:, 0] == 0).mean() < 0.35
  traced = jax.jit(lambda r: models.DropPath().apply(
      {}, y, r, deterministic=False, rngs={'dropout': rng(0)}))
  np.testing.assert_array_equal(traced(0.25), out)  # traced rate (as under scan) agrees
  np.testing.assert_array_equal(traced(1.0), 0.0)
  assert np.isfinite(jax.grad(lambda r: traced(r).sum())(1.0))


def test_stochastic_depth():
  base = tiny(num_layers=3)
  deep = base.clone(stochastic_depth_rate=0.9)
  params = random_params(base, IMAGES)
  want = base.apply({'params': params}, IMAGES)
  np.testing.assert_array_equal(deep.apply({'params': params}, IMAGES), want)  # eval: identity
  np.testing.assert_allclose(train_apply(base, params, 0), want, atol=1e-6)  # rate 0: no-op
  assert not np.allclose(train_apply(deep, params, 0), want)
  # A block whose branches are always dropped is the identity for pre-norm.
  block = models.Encoder1DBlock(num_heads=4, head_dim=8, mlp_dim=64)
  x = TOKENS
  bp = random_params(block, x, 0.0, False)
  out = block.apply({'params': bp}, x, 1.0, True, rngs={'dropout': rng(0)})
  np.testing.assert_array_equal(out, x)


# ----------------------------------------------------------------------------- attention, dtype, remat, scan
def test_attention_weights_are_sown():
  model = tiny(classifier='gap', head_hidden_sizes=(8,), representation_size=12)
  params = random_params(model, IMAGES)
  logits, state = model.apply({'params': params}, IMAGES, mutable=['intermediates'])
  inter = state['intermediates']
  for i in range(2):
    (w,) = inter['Transformer'][f'encoderblock_{i}']['MultiHeadDotProductAttention_1'][
        'attention_weights']
    assert w.shape == (2, 4, 16, 16)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  assert inter['pooled'][0].shape == (2, 32) and inter['head_input'][0].shape == (2, 8)
  # The explicit path (taken to sow) and the fused one agree.
  np.testing.assert_allclose(logits, model.apply({'params': params}, IMAGES), atol=1e-5, rtol=1e-5)


class _DenseGeneralAttentionParams(models.nn.Module):
  """The q/k/v/out parameters as nn.DenseGeneral creates them (the vit_jax module's layout)."""

  @models.nn.compact
  def __call__(self, x):
    for name in ('query', 'key', 'value'):
      y = models.nn.DenseGeneral((4, 8), kernel_init=models.nn.initializers.xavier_uniform(),
                                 name=name)(x)
    return models.nn.DenseGeneral(x.shape[-1], axis=(-2, -1), name='out',
                                  kernel_init=models.nn.initializers.xavier_uniform())(y)


def test_attention_initialises_like_dense_general():
  """The attention computes its projections as plain matmuls, but its parameters are
  nn.DenseGeneral's: same names, shapes and initial values for the same key."""
  rng_init = jax.random.key(3)
  ours = models.MultiHeadDotProductAttention(num_heads=4, head_dim=8).init(
      rng_init, TOKENS, train=False)['params']
  want = _DenseGeneralAttentionParams().init(rng_init, TOKENS)['params']
  assert flat_names(ours) == flat_names(want)
  jax.tree.map(np.testing.assert_array_equal, ours, want)
  folded = models.MultiHeadDotProductAttention(num_heads=4, head_dim=8, implementation='folded')
  jax.tree.map(np.testing.assert_array_equal, folded.init(rng_init, TOKENS, train=False)['params'],
               want)


def attention_pair(num_heads, head_dim, rate=0.0):
  make = functools.partial(models.MultiHeadDotProductAttention, num_heads=num_heads,
                           head_dim=head_dim, dropout_rate=rate)
  return make(), make(implementation='folded')


def attention_params(module, scale=0.5):
  """Noise for every attention parameter, biases included."""
  init = lambda key: module.init(key, TOKENS, train=False)
  shapes = jax.eval_shape(init, jax.random.key(0))['params']
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(np.float32), shapes)


@pytest.mark.parametrize('num_heads,head_dim', [(4, 8), (2, 32), (4, 48)])  # d <, =, > width 32
def test_folded_attention_is_the_reference(num_heads, head_dim):
  """Same parameters, same function (biases included), same sown weights as the standard path."""
  standard, folded = attention_pair(num_heads, head_dim)
  params = attention_params(standard)
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, attention_params(folded))
  want = ref_attention(np.float64(TOKENS), jax.tree.map(np.float64, params))
  apply = lambda m: jax.jit(functools.partial(m.apply, train=False, mutable='intermediates'))
  got, sown = apply(folded)({'params': params}, TOKENS)
  np.testing.assert_allclose(got, want, atol=2e-6 * np.abs(want).max())  # f32 vs f64 rounding
  _, sown_standard = apply(standard)({'params': params}, TOKENS)
  np.testing.assert_allclose(sown['intermediates']['attention_weights'][0],
                             sown_standard['intermediates']['attention_weights'][0], atol=1e-5, rtol=1e-4)


def test_folded_attention_gradients():
  """Every gradient matches the standard path's; the key bias, which softmax cancels, gets 0."""
  standard, folded = attention_pair(4, 48)
  params = attention_params(standard)
  probe = np.random.default_rng(2).normal(size=TOKENS.shape).astype(np.float32)
  grad = lambda m: jax.jit(jax.grad(
      lambda p, x: jnp.sum(probe * m.apply({'params': p}, x, train=False)), argnums=(0, 1)))
  (gp_std, gx_std), (gp_fold, gx_fold) = grad(standard)(params, TOKENS), grad(folded)(params, TOKENS)
  np.testing.assert_allclose(gx_fold, gx_std, atol=1e-4, rtol=1e-4)
  np.testing.assert_array_equal(gp_fold['key']['bias'], 0.0)
  scale = max(np.abs(g).max() for g in jax.tree.leaves(gp_std))
  assert np.abs(gp_std['key']['bias']).max() < 1e-5 * scale  # float noise around the true 0
  for name in ('query', 'key', 'value', 'out'):
    for leaf in ('kernel', 'bias'):
      np.testing.assert_allclose(gp_fold[name][leaf], gp_std[name][leaf], atol=1e-5 * scale,
                                 err_msg=f'{name}/{leaf}')


class _FixedAttentionDropout(models.nn.Module):
  """A stand-in for attention dropout with the same mask in either layout.

  Drops weight (head, query, key) where (head + 2 query + 3 key) % 3 == 0; the heads axis is the
  one of size 4 (the tokens axes are 17), so the mask follows the weights into either layout.
  """
  rate: float

  def keep_scale(self, shape, dtype):
    heads_axis = shape.index(4)
    idx = np.indices(shape)
    q, k = (idx[a] for a in range(1, 4) if a != heads_axis)
    keep = (idx[heads_axis] + 2 * q + 3 * k) % 3 != 0
    return jnp.asarray(np.where(keep, 1.0 / (1 - self.rate), 0.0), dtype)


def test_folded_attention_drops_the_same_weights(monkeypatch):
  """With weights dropped (rows no longer sum to 1), the value bias still enters through them."""
  monkeypatch.setattr(models, 'Dropout', _FixedAttentionDropout)
  standard, folded = attention_pair(4, 48, rate=0.5)
  params = attention_params(standard)
  run = lambda m: m.apply({'params': params}, TOKENS, train=True)
  want = run(standard)
  assert not np.allclose(want, standard.apply({'params': params}, TOKENS, train=False))
  np.testing.assert_allclose(run(folded), want, atol=2e-6 * np.abs(want).max())


def test_softmax_dropout_gradient():
  """The hand-written backward pass (no mask) is autodiff's through softmax(l) * m."""
  rng_np = np.random.default_rng(4)
  logits = rng_np.normal(size=(3, 5, 7)).astype(np.float32) * 3
  keep_scale = np.where(rng_np.random((3, 5, 7)) < 0.3, 0.0, 1 / 0.7).astype(np.float32)
  probe = rng_np.normal(size=logits.shape).astype(np.float32)
  plain = lambda l: jax.nn.softmax(l, axis=-1) * keep_scale
  ours = lambda l: models.softmax_dropout(l, keep_scale)
  np.testing.assert_allclose(ours(logits), plain(logits), rtol=1e-6)
  grad = lambda f: jax.grad(lambda l: jnp.sum(probe * f(l)))(logits)
  np.testing.assert_allclose(grad(ours), grad(plain), atol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.grad(lambda l: jnp.sum(probe * ours(l))))(logits),
                             grad(plain), atol=1e-6)


def test_folded_model_computes_reference():
  model = tiny(attention_impl='folded', num_heads=2, head_dim=32)
  params = random_params(model, IMAGES)
  np.testing.assert_allclose(model.apply({'params': params}, IMAGES),
                             ref_model(IMAGES, params, {'in'}, {'in'}, 4, True), atol=1e-4, rtol=1e-4)


def test_bfloat16_returns_float32_logits():
  model = tiny()
  params = random_params(model, IMAGES)
  want = model.apply({'params': params}, IMAGES)
  got = jax.jit(model.clone(dtype='bfloat16').apply)({'params': params}, IMAGES)  # jit: new dtype
  assert got.dtype == jnp.float32 and np.isfinite(got).all()
  np.testing.assert_allclose(got, want, atol=0.1 * np.abs(want).max())
  shapes = param_shapes(model.clone(param_dtype='bfloat16'), IMAGES)
  assert {x.dtype for x in jax.tree.leaves(shapes)} == {jnp.dtype('bfloat16')}


def test_invalid_fields():
  for field, value in [('classifier', 'cls'), ('posemb', 'sincos'), ('attention_impl', 'flash')]:
    with pytest.raises(ValueError, match=field):
      param_shapes(tiny(**{field: value}), IMAGES)
  with pytest.raises(ValueError, match='divisible by patch_size'):
    param_shapes(tiny(patch_size=5), IMAGES)
  with pytest.raises(ValueError, match='head_dim'):
    param_shapes(tiny(num_heads=5), IMAGES)


def test_sincos_posemb_table():
  pe = models.posemb_sincos_2d(3, 4, 16)  # [1, 12, 16]
  assert pe.shape == (1, 12, 16)
  omega = 1.0 / 10_000**(np.arange(4) / 3)
  row, col = 2, 3  # token 11
  np.testing.assert_allclose(pe[0, 11], np.concatenate(
      [np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)]),
      atol=1e-6)
  # In the model the table is fixed (no param) and the cls position gets zeros.
  model = tiny(posemb='sincos2d', num_layers=0, final_norm=False)
  params = random_params(model, IMAGES)
  _, state = model.apply({'params': params}, IMAGES, mutable=['intermediates'])
  nopos = model.clone(posemb='learn').apply(
      {'params': {**params, 'Transformer': {'posembed_input': {
          'pos_embedding': np.zeros((1, 17, 32), np.float32)}}}}, IMAGES, mutable=['intermediates'])
  diff = state['intermediates']['pooled'][0] - nopos[1]['intermediates']['pooled'][0]
  np.testing.assert_allclose(diff, 0.0, atol=1e-6)  # token 0 (cls) unchanged


@pytest.mark.parametrize('attention_impl', ['xla', 'folded'])
def test_remat_matches(attention_impl):
  """Training mode, so dropout and drop-path rngs must line up too."""
  model = tiny(dropout_rate=0.2, attention_dropout_rate=0.2, stochastic_depth_rate=0.5,
               attention_impl=attention_impl)
  params = random_params(model, IMAGES)
  remat = model.clone(remat=True)
  # jit: eagerly, each remat'd block is compiled anew on every call.
  got = jax.jit(lambda p, k: remat.apply({'params': p}, IMAGES, train=True, rngs={'dropout': k}))
  np.testing.assert_allclose(got(params, rng(3)), train_apply(model, params, 3),
                             atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('remat', [False, True])
def test_scan_matches_unrolled(remat):
  model = tiny(norm_placement='sandwich', stochastic_depth_rate=0.5, dropout_rate=0.1)
  scanned = model.clone(scan=True, remat=remat)
  params = random_params(model, IMAGES)
  stacked = models.stack_block_params(params, 2)
  assert flat_names(param_shapes(scanned, IMAGES)) == flat_names(stacked)
  assert stacked['Transformer']['encoderblock']['LayerNorm_attn_out']['scale'].shape == (2, 32)
  jax.tree.map(np.testing.assert_array_equal, models.unstack_block_params(stacked, 2), params)

  # jit: eagerly, every scan call would compile its body anew.
  evaluate = jax.jit(lambda p: scanned.apply({'params': p}, IMAGES, mutable=['intermediates']))
  logits, state = evaluate(stacked)
  np.testing.assert_allclose(logits, model.apply({'params': params}, IMAGES), atol=1e-5, rtol=1e-5)
  (w,) = state['intermediates']['Transformer']['encoderblock']['MultiHeadDotProductAttention_1'][
      'attention_weights']
  assert w.shape == (2, 2, 4, 17, 17)  # [layers, batch, heads, tokens, tokens]
  if not remat:  # training under scan: per-layer rngs and traced drop-path rates
    train = jax.jit(lambda p, k: scanned.apply(
        {'params': p}, IMAGES, train=True, rngs={'dropout': k}))
    a, b = train(stacked, rng(1)), train(stacked, rng(2))
    assert np.isfinite(a).all() and not np.allclose(a, b) and not np.allclose(a, logits)


@pytest.mark.parametrize('patch', [1, 4, 8])
def test_patch_embedding_is_the_strided_conv(patch):
  """PatchEmbedding (reshape + matmul) computes nn.Conv(kernel=stride=patch, VALID) exactly,
  and initialises the same parameters to the same values (so seeds and checkpoints carry over)."""
  x = jax.random.normal(jax.random.key(0), (2, 16, 24, 3))
  conv = models.nn.Conv(5, (patch, patch), strides=(patch, patch), padding='VALID')
  ours = models.PatchEmbedding(5, patch)
  rng = jax.random.key(1)
  conv_params, our_params = conv.init(rng, x), ours.init(rng, x)
  assert jax.tree.map(jnp.shape, conv_params) == jax.tree.map(jnp.shape, our_params)
  np.testing.assert_array_equal(conv_params['params']['kernel'], our_params['params']['kernel'])
  params = jax.tree.map(lambda a: a + jax.random.normal(jax.random.key(2), a.shape), conv_params)
  expected = conv.apply(params, x)
  assert expected.shape == (2, 16 // patch, 24 // patch, 5)
  np.testing.assert_allclose(ours.apply(params, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('rate', [0.1, 0.5])
def test_dropout_rate_and_scale(rate):
  """16-bit Dropout: drops `rate` of the elements, scales the rest by 1/keep, so the mean is
  kept; identity when deterministic; works for odd sizes; all zeros at rate 1."""
  x = np.ones((3, 101, 67), np.float32)  # odd number of elements
  drop = models.Dropout(rate)
  out = np.asarray(drop.apply({}, x, deterministic=False, rngs={'dropout': rng(0)}))
  dropped = out == 0
  assert abs(dropped.mean() - rate) < 0.01
  keep = 1 - round(rate * 2**16) / 2**16
  np.testing.assert_allclose(out[~dropped], 1 / keep, rtol=1e-6)
  assert abs(out.mean() - 1.0) < 0.02
  other = np.asarray(drop.apply({}, x, deterministic=False, rngs={'dropout': rng(1)}))
  assert (dropped != (other == 0)).any()  # another key, another mask
  np.testing.assert_array_equal(drop.apply({}, x, deterministic=True), x)
  np.testing.assert_array_equal(
      models.Dropout(1.0).apply({}, x, deterministic=False, rngs={'dropout': rng(0)}), 0.0)


@pytest.mark.parametrize('impl', ['threefry2x32', 'raw', 'rbg'])
def test_random_bits_are_jax_random_bits(impl):
  """The unrolled threefry behind Dropout returns exactly jax.random.bits' words (so masks do not
  depend on which generator code ran), under jit, for odd sizes, and for raw uint32 keys; other
  key types are passed to JAX."""
  key = jax.random.fold_in(jax.random.key(7, impl='rbg' if impl == 'rbg' else None), 11)
  if impl == 'raw':
    key = jax.random.key_data(key)
  bits = jax.jit(models.random_bits, static_argnums=1)
  for size in (1, 2, 999, 65_537):
    want = jax.random.bits(key, (size,), jnp.uint32)
    got = bits(key, size)
    assert got.dtype == jnp.uint32 and got.shape == (size,)
    np.testing.assert_array_equal(got, want)
  other = bits(jax.random.fold_in(key if impl != 'raw' else jax.random.wrap_key_data(key), 1), 999)
  assert (other != bits(key, 999)).mean() > 0.99  # another key, other words
