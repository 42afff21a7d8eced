"""Tests for vit_jax/models.py: shapes, names, the block positions compute their formula under
both kernel settings, and the kernels do not change the parameters (every norm scheme of
norms.py against its paper: tests/test_norms.py).

Parameters come from `jax.eval_shape(init)` filled with numpy noise (see model_fixtures.py).
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from model_fixtures import (IMAGES, NUM_CLASSES, REF_LN, TOKENS, flat_names, make_block,
                            param_shapes, random_params, ref_block, ref_model, rng, tiny, train_apply)
from vit_jax import layers
from vit_jax import models


KERNELS = ('reference', 'cpu')  # the two settings 'auto' resolves to

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
      mlp_activate_output=True, classifier='flatten', norm_placement='attn_in_mlp_out',
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
    'attn_in_mlp_out': ({'in'}, {'out'}),
    'none': (set(), set()),
    'attn:out+res,mlp:in+res': ({'out', 'res'}, {'in', 'res'}),
    ' ATTN: res+in , mlp: ': ({'in', 'res'}, set()),
    'attn:in+out+res,mlp:none': ({'in', 'out', 'res'}, set()),
}


@pytest.mark.parametrize('kernels', KERNELS)
@pytest.mark.parametrize('spec', PLACEMENTS)
def test_block_computes_its_formula(spec, kernels):
  attn, mlp = PLACEMENTS[spec]
  block = make_block(spec, num_heads=4, head_dim=8, mlp_dim=64, kernels=kernels)
  x = TOKENS
  params = random_params(block, x, 0.0)
  want = {REF_LN[s, p] for s, on in (('attn', attn), ('mlp', mlp)) for p in on}
  assert {k for k in params if k.startswith('LayerNorm')} == want
  out = block.apply({'params': params}, x)
  np.testing.assert_allclose(out, ref_block(x, params, attn, mlp), atol=1e-5, rtol=1e-5)


def test_block_mlp_widths_and_head_dim():
  """Several MLP widths, GELU on the output, head_dim != width / heads."""
  block = make_block('sandwich', num_heads=2, head_dim=24, mlp_dim=(48, 40),
                     mlp_activate_output=True)
  x = TOKENS
  params = random_params(block, x, 0.0)
  assert params['MultiHeadDotProductAttention_1']['query']['kernel'].shape == (32, 2, 24)
  assert params['MlpBlock_3']['Dense_2']['kernel'].shape == (40, 32)
  out = jax.jit(block.apply)({'params': params}, x)  # jit: new shapes would compile op by op
  ref = ref_block(x, params, {'in', 'out'}, {'in', 'out'}, activate_output=True)
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('kernels', KERNELS)
@pytest.mark.parametrize('spec', ['pre', 'post', 'attn:out+res,mlp:in+res'])
def test_model_computes_reference(spec, kernels):
  attn, mlp = PLACEMENTS[spec]
  model = tiny(norm_placement=spec, kernels=kernels)
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
  block = make_block('post', num_heads=4, head_dim=8, mlp_dim=64)
  x = 3.0 + 5.0 * TOKENS
  params = random_params(block, x, 0.0)
  params = {k: ({'scale': np.ones(32), 'bias': np.zeros(32)} if k.startswith('LayerNorm') else v)
            for k, v in params.items()}  # the default LN init
  out = np.asarray(block.apply({'params': params}, x))
  np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.var(-1), 1.0, atol=1e-4)


# ----------------------------------------------------------------------------- dropout, drop-path
@pytest.mark.parametrize('kernels', KERNELS)
def test_dropout_eval_is_deterministic_and_train_is_not(kernels):
  base = tiny(head_hidden_sizes=(16,), kernels=kernels)
  noisy = base.clone(dropout_rate=0.3, attention_dropout_rate=0.3, head_dropout_rate=0.3,
                     stochastic_depth_rate=0.3)
  params = random_params(base, IMAGES)
  want = base.apply({'params': params}, IMAGES)
  np.testing.assert_array_equal(noisy.apply({'params': params}, IMAGES), want)
  np.testing.assert_array_equal(noisy.apply({'params': params}, IMAGES, train=False), want)
  a, b = train_apply(noisy, params, 1), train_apply(noisy, params, 2)
  assert not np.allclose(a, b) and not np.allclose(a, want)
  np.testing.assert_array_equal(a, train_apply(noisy, params, 1))  # same key, same result


@pytest.mark.parametrize('kernels', KERNELS)
@pytest.mark.parametrize('field', ['dropout_rate', 'attention_dropout_rate', 'head_dropout_rate'])
def test_each_dropout_acts_in_training(field, kernels):
  model = tiny(**{field: 0.5}, kernels=kernels)
  params = random_params(model, IMAGES)
  assert not np.allclose(train_apply(model, params, 1), train_apply(model, params, 2))


def test_drop_path_rates_are_linear():
  np.testing.assert_allclose(layers.drop_path_rates(0.3, 4), [0.0, 0.1, 0.2, 0.3], atol=1e-7)


def test_drop_path_drops_whole_examples():
  y = np.ones((512, 3, 4), np.float32)
  out = np.asarray(layers.DropPath().apply({}, y, 0.25, deterministic=False,
                                           rngs={'dropout': rng(0)}))
  per_example = out.reshape(512, -1)
  assert (per_example.min(1) == per_example.max(1)).all()  # all or nothing per example
  kept = per_example[:, 0] != 0
  np.testing.assert_allclose(per_example[kept], 1 / 0.75, rtol=1e-6)
  assert 0.15 < (per_example[:, 0] == 0).mean() < 0.35
  traced = jax.jit(lambda r: layers.DropPath().apply(
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
  block = make_block('pre', num_heads=4, head_dim=8, mlp_dim=64)
  x = TOKENS
  bp = random_params(block, x, 0.0)
  out = block.apply({'params': bp}, x, 1.0, train=True, rngs={'dropout': rng(0)})
  np.testing.assert_array_equal(out, x)


# ----------------------------------------------------------------------------- attention, dtype, remat, scan
@pytest.mark.parametrize('kernels', KERNELS)
def test_attention_weights_are_sown(kernels):
  model = tiny(classifier='gap', head_hidden_sizes=(8,), representation_size=12, kernels=kernels)
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
  for field, value in [('classifier', 'cls'), ('posemb', 'sincos'), ('attention_impl', 'flash'),
                       ('kernels', 'gpu')]:
    with pytest.raises(ValueError, match=field):
      param_shapes(tiny(**{field: value}), IMAGES)
  with pytest.raises(ValueError, match='divisible by patch_size'):
    param_shapes(tiny(patch_size=5), IMAGES)
  with pytest.raises(ValueError, match='head_dim'):
    param_shapes(tiny(num_heads=5), IMAGES)


def test_sincos_posemb_table():
  pe = layers.posemb_sincos_2d(3, 4, 16)  # [1, 12, 16]
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


@pytest.mark.parametrize('kernels,attention_impl',
                         [('cpu', 'xla'), ('cpu', 'folded'), ('reference', 'xla')])
def test_remat_matches(kernels, attention_impl):
  """Training mode, so dropout and drop-path rngs must line up too."""
  model = tiny(dropout_rate=0.2, attention_dropout_rate=0.2, stochastic_depth_rate=0.5,
               attention_impl=attention_impl, kernels=kernels)
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


# ----------------------------------------------------------------------------- kernels
def test_auto_kernels_are_cpu_only_on_cpu(monkeypatch):
  assert models.resolve_kernels('auto') == 'cpu'  # the suite runs on the CPU backend
  assert models.resolve_kernels('reference') == 'reference'
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert models.resolve_kernels('auto') == 'reference'
  assert models.resolve_kernels('cpu') == 'cpu'
  with pytest.raises(ValueError, match="'auto', 'reference', 'cpu'"):
    models.resolve_kernels('fast')


@pytest.mark.parametrize('overrides', [
    dict(dropout_rate=0.1, attention_dropout_rate=0.1, head_hidden_sizes=(8,)),
    dict(attention_impl='folded', head_dim=32, classifier='flatten'),
    dict(scan=True, norm_placement='sandwich'),
    dict(resnet_layers=(1,), patch_size=1, posemb='sincos2d'),
])
def test_kernels_do_not_change_the_parameters(overrides):
  """Same tree, shapes, dtypes and initial values from the same key: a checkpoint written with
  either kernel setting restores into the other."""
  init = lambda kernels: jax.jit(tiny(kernels=kernels, **overrides).init)(jax.random.key(4), IMAGES)
  reference, cpu = init('reference'), init('cpu')
  assert flat_names(reference) == flat_names(cpu)
  assert jax.tree.map(lambda a: a.dtype, reference) == jax.tree.map(lambda a: a.dtype, cpu)
  jax.tree.map(np.testing.assert_array_equal, reference, cpu)


def test_kernels_compute_the_same_model():
  """Evaluation (no random bits) agrees between the two settings to float tolerance."""
  model = tiny(norm_placement='addnorm', head_hidden_sizes=(8,))
  params = random_params(model, IMAGES)
  got = {k: model.clone(kernels=k).apply({'params': params}, IMAGES) for k in KERNELS}
  np.testing.assert_allclose(got['cpu'], got['reference'], atol=1e-5, rtol=1e-5)

