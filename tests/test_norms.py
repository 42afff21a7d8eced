"""Tests for vit_jax/norms.py: every preset parses to the scheme of its paper, computes exactly
that scheme's formula (tests/norm_reference.py, float64 numpy) under both kernel settings, scans
and remats like the unrolled model, and bad specs fail with a message that names the fix.
"""

import math

import jax
import numpy as np
import pytest

import norm_reference as ref
from model_fixtures import IMAGES, flat_names, param_shapes, random_params, rng, tiny
from vit_jax import models
from vit_jax import norms

KERNELS = ('reference', 'cpu')
L = ref.DEPTH


def test_every_preset_has_an_independent_reference():
  assert set(ref.EXPECTED) == set(norms.NORM_PRESETS)


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize('name', norms.NORM_PRESETS)
def test_preset_parses_to_its_scheme(name):
  e, spec = ref.EXPECTED[name], norms.parse_spec(name, L)
  assert [(set(b.attn), set(b.mlp)) for b in spec.layers] == e['layers']
  assert set(spec.patch) == e['patch']
  assert set(spec.encoder) == e['encoder']
  assert {t for _, t in spec.types} <= {e['kind']}
  for key in ('alpha', 'init_gain', 'layerscale'):
    assert math.isclose(getattr(spec, key), e[key], rel_tol=1e-12), key
  assert (spec.ln_scaling, spec.head_scale, spec.residual) == (
      e['ln_scaling'], e['head_scale'], e['residual'])


@pytest.mark.parametrize('depth', [1, 4, 12, 30])
@pytest.mark.parametrize('name', norms.NORM_PRESETS)
def test_canonical_spec_round_trips(name, depth):
  spec = norms.parse_spec(name, depth)
  assert norms.parse_spec(spec.spec, depth) == spec
  assert norms.parse_spec(spec, depth) is spec


@pytest.mark.parametrize('text,attn,mlp', [
    ('attn:out+res,mlp:in+res', {'out', 'res'}, {'in', 'res'}),
    (' ATTN: res+in , mlp: ', {'in', 'res'}, set()),
    ('attn:in+qk+mid,mlp:mid', {'in', 'qk', 'mid'}, {'mid'}),
])
def test_explicit_block_specs(text, attn, mlp):
  spec = norms.parse_spec(text, 3)
  assert all((set(b.attn), set(b.mlp)) == (attn, mlp) for b in spec.layers)
  assert spec.final_norm == ('res' not in mlp)


@pytest.mark.parametrize('fraction,num_post', [(0, 0), (0.25, 3), (0.5, 6), (0.34, 4), (1, 12)])
def test_mixln_fraction_is_floor_of_depth(fraction, num_post):
  spec = norms.parse_spec(f'pre,mixln={fraction}', 12)
  kinds = ['post' if 'res' in b.attn else 'pre' for b in spec.layers]
  assert kinds == ['post'] * num_post + ['pre'] * (12 - num_post)
  assert spec.final_norm == (num_post < 12)  # the last block decides the final norm


def test_layer_ranges_and_per_site_types():
  spec = norms.parse_spec('pre,0-1=post,5-=attn:in+qk/mlp:in,attn_in=rmsnorm,type=dyt', 7)
  blocks = [(set(b.attn), set(b.mlp)) for b in spec.layers]
  assert blocks == [ref.POST] * 2 + [ref.PRE] * 3 + [({'in', 'qk'}, {'in'})] * 2
  assert spec.type_of('attn_in') == 'rmsnorm' and spec.type_of('mlp_in') == 'dyt'
  assert spec.type_of('attn_res') == 'dyt' and spec.type_of('encoder_final') == 'dyt'
  assert [(a, b) for a, b, _ in spec.segments()] == [(0, 2), (2, 5), (5, 7)]
  # model.norm_type is the default that type= and <site>= override.
  assert norms.parse_spec('pre', 2, 'rmsnorm').type_of('mlp_in') == 'rmsnorm'
  assert norms.parse_spec('pre,type=dyt', 2, 'rmsnorm').type_of('mlp_in') == 'dyt'


def test_layerscale_cait_epsilon_follows_depth():
  assert [norms.parse_spec('layerscale', d).layerscale for d in (12, 18, 24, 36)] == [
      0.1, 0.1, 1e-5, 1e-6]
  assert norms.parse_spec('pre,layerscale=0.5', 12).layerscale == 0.5


def test_final_norm_override():
  assert not norms.with_final_norm(norms.parse_spec('pre', 2), False).final_norm
  spec = norms.with_final_norm(norms.parse_spec('post,type=rmsnorm', 2), True)
  assert spec.final_norm and spec.type_of('encoder_final') == 'rmsnorm'
  assert norms.with_final_norm(spec, None) is spec


@pytest.mark.parametrize('text,fragments', [
    ('prenorm', ['unknown preset', "'prenorm'", 'pre, post, respost', 'deepnorm', 'mixln']),
    ('seed', ["preset 'seed' is now called 'attn_in_mlp_out'"]),
    ('attn:in', ["'mlp'", 'not given']),
    ('attn:in,mlp:inn', ["unknown position 'inn'", 'in, mid, out, res']),
    ('attn:in,ffn:in', ["unknown group 'ffn'", 'attn, mlp, patch, encoder']),
    ('attn:in+in,mlp:in', ['repeated position']),
    ('pre,alpha=2', ['alpha=2', 'attn:res and mlp:res', 'post']),       # DeepNorm's alpha on pre-LN
    ('pre,alpha=deepnorm', ['alpha=', 'every layer needs']),
    ('pre,mixln=1.5', ['mixln=1.5', 'fraction in [0, 1]']),
    ('pre,mixln=-0.1', ['mixln=', '>= 0']),
    ('pre,attn_qk=rmsnorm', ["site 'attn_qk'", 'does not have', 'attn_in, mlp_in']),
    ('pre,attn_in=batchnorm', ['batchnorm', 'layernorm, rmsnorm, dyt, none']),
    ('pre,type=groupnorm', ['groupnorm', 'layernorm, rmsnorm, dyt, none']),
    ('pre,residual=b2t', ['residual=b2t', 'attn:res and mlp:res']),
    ('pre,residual=highway', ['highway', 'standard, b2t, dual']),
    ('post,ln_scaling=on', ['ln_scaling', "'in' norms"]),
    ('pre,ln_scaling=maybe', ['ln_scaling=', 'on or off']),
    ('pre,9=post', ['layer range', 'outside layers 0-3']),
    ('pre,0-1=deepnorm', ['block preset', 'sets more']),
    ('pre,layerscale=tiny', ['layerscale=', 'not a number', 'cait']),
    ('pre,warp=on', ["unknown option or site 'warp'"]),
    ('attn:in,mlp:in,pre', ['a preset must come first']),
    ('pre,encoder:post', ["unknown position 'post'", 'pre, final, pool']),
    (None, ['expected a string']),
])
def test_bad_specs_name_the_problem_and_the_choices(text, fragments):
  with pytest.raises(ValueError) as e:
    norms.parse_spec(text, L)
  for fragment in fragments:
    assert fragment in str(e.value)


def test_bad_norm_type_and_preset_in_model():
  with pytest.raises(ValueError, match='layernorm, rmsnorm, dyt, none'):
    param_shapes(tiny(norm_type='batchnorm'), IMAGES)
  with pytest.raises(ValueError, match='unknown preset'):
    param_shapes(tiny(norm_placement='prenorm'), IMAGES)


# ----------------------------------------------------------------------------- the formulas
@pytest.fixture(scope='module')
def preset_params():
  """Noise-filled params per preset (shared by both kernel settings)."""
  return {n: random_params(tiny(num_layers=L, norm_placement=n), IMAGES, seed=3)
          for n in norms.NORM_PRESETS}


@pytest.mark.parametrize('kernels', KERNELS)
@pytest.mark.parametrize('name', norms.NORM_PRESETS)
def test_model_computes_the_papers_formula(name, kernels, preset_params):
  model = tiny(num_layers=L, norm_placement=name, kernels=kernels)
  params = preset_params[name]
  got = jax.jit(model.apply)({'params': params}, IMAGES)
  want = ref.ref_model(IMAGES, params, ref.EXPECTED[name], 4)
  np.testing.assert_allclose(got, want, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize('name', norms.NORM_PRESETS)
def test_parameter_names_are_the_sites(name, preset_params):
  """Each norm site holds a parameter under its documented name, and nothing else is added."""
  e, names = ref.EXPECTED[name], flat_names(preset_params[name])
  base = set(flat_names(random_params(tiny(num_layers=L, norm_placement='none',
                                           final_norm=False), IMAGES)))
  extra = set(names) - base
  leaves = {'layernorm': ('scale', 'bias'), 'rmsnorm': ('scale',), 'dyt': ('alpha', 'scale', 'bias'),
            'none': ()}[e['kind']]
  norm_at = set()
  for i, (attn, mlp) in enumerate(e['layers']):
    blk = f'Transformer/encoderblock_{i}/'
    norm_at |= {blk + ref.BLOCK_NORM['attn', p] for p in attn if p in ('in', 'out', 'res')}
    norm_at |= {blk + ref.BLOCK_NORM['mlp', p] for p in mlp if p in ('in', 'out', 'res')}
    mha = blk + 'MultiHeadDotProductAttention_1/'
    norm_at |= {mha + 'query_norm', mha + 'key_norm'} if 'qk' in attn else set()
    norm_at |= {mha + 'mid_norm'} if 'mid' in attn else set()
    norm_at |= {blk + 'MlpBlock_3/LayerNorm_mid'} if 'mid' in mlp else set()
  sites = {'patch': {'in': 'patch_norm_in', 'out': 'patch_norm_out'},
           'encoder': {'pre': 'Transformer/pre_norm', 'final': 'Transformer/encoder_norm',
                       'pool': 'fc_norm', 'dual': 'Transformer/encoder_norm_dual'}}
  for group, where in sites.items():
    norm_at |= {where[p] for p in e[group]}
  want = {f'{n}/{leaf}' for n in norm_at for leaf in leaves}
  for i in range(L):
    blk = f'Transformer/encoderblock_{i}/'
    want |= {blk + 'MultiHeadDotProductAttention_1/head_scale'} if e['head_scale'] else set()
    want |= {blk + 'layerscale_attn', blk + 'layerscale_mlp'} if e['layerscale'] else set()
  assert extra == want


def test_dyt_and_rmsnorm_parameters():
  params = jax.jit(tiny(norm_placement='dyt').init)(jax.random.key(0), IMAGES)['params']
  dyt = params['Transformer']['encoderblock_0']['LayerNorm_0']
  assert set(dyt) == {'alpha', 'scale', 'bias'} and dyt['alpha'].shape == ()
  assert float(dyt['alpha']) == 0.5  # Zhu et al.'s initial alpha
  rms = param_shapes(tiny(norm_placement='rmsnorm'), IMAGES)['Transformer']['encoder_norm']
  assert set(rms) == {'scale'}


@pytest.mark.parametrize('kernels', KERNELS)
def test_deepnorm_scales_value_output_and_mlp_initialisation(kernels):
  """DeepNorm's beta = (8N)^(-1/4) on the value, output, fc1 and fc2 kernels, not on q and k."""
  init = lambda name: jax.jit(tiny(num_layers=L, norm_placement=name, kernels=kernels).init)(
      jax.random.key(7), IMAGES)['params']['Transformer']['encoderblock_2']
  post, deep = init('post'), init('deepnorm')
  beta = (8 * L)**-0.25
  mha, deep_mha = post['MultiHeadDotProductAttention_1'], deep['MultiHeadDotProductAttention_1']
  for proj in ('query', 'key'):
    np.testing.assert_array_equal(deep_mha[proj]['kernel'], mha[proj]['kernel'])
  for proj in ('value', 'out'):
    np.testing.assert_allclose(deep_mha[proj]['kernel'], beta * mha[proj]['kernel'], rtol=1e-6)
  for dense in ('Dense_0', 'Dense_1'):
    np.testing.assert_allclose(deep['MlpBlock_3'][dense]['kernel'],
                               beta * post['MlpBlock_3'][dense]['kernel'], rtol=1e-6)


def test_layerscale_starts_at_epsilon():
  params = jax.jit(tiny(num_layers=L, norm_placement='pre,layerscale=1e-3').init)(
      jax.random.key(0), IMAGES)['params']
  np.testing.assert_array_equal(params['Transformer']['encoderblock_1']['layerscale_mlp'],
                                np.full(32, 1e-3, np.float32))


# ----------------------------------------------------------------------------- scan, remat, training
SCAN_PRESETS = ['mixln', 'resi_dual', 'ln_scaling', 'normformer', 'deepnorm', 'b2t', 'dyt']


@pytest.mark.parametrize('remat', [False, True])
@pytest.mark.parametrize('name', SCAN_PRESETS)
def test_scan_and_remat_match_the_unrolled_model(name, remat):
  model = tiny(num_layers=L, norm_placement=name, dropout_rate=0.1, stochastic_depth_rate=0.3)
  scanned = model.clone(scan=True, remat=remat)
  params = random_params(model, IMAGES, seed=1)
  segments = [(a, b) for a, b, _ in model.norm_spec().segments()]
  stacked = models.stack_block_params(params, segments)
  assert flat_names(param_shapes(scanned, IMAGES)) == flat_names(stacked)
  if name == 'mixln':  # one scanned module per run of identical blocks
    assert {'encoderblock_0-0', 'encoderblock_1-3'} <= set(stacked['Transformer'])
  jax.tree.map(np.testing.assert_array_equal,
               models.unstack_block_params(stacked, segments), params)
  want = jax.jit(model.apply)({'params': params}, IMAGES)
  np.testing.assert_allclose(jax.jit(scanned.apply)({'params': stacked}, IMAGES), want,
                             atol=1e-5, rtol=1e-5)
  train = lambda m, p: jax.jit(lambda p: m.apply({'params': p}, IMAGES, train=True,
                                                 rngs={'dropout': rng(2)}))(p)
  got = train(scanned, stacked)
  assert np.isfinite(got).all() and not np.allclose(got, want)
  if remat:  # remat recomputes the same function with the same random bits
    np.testing.assert_allclose(got, train(model.clone(scan=True), stacked), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('name', ['qknorm', 'resi_dual', 'dual_patchnorm'])
def test_bfloat16_runs_every_scheme(name):
  model = tiny(num_layers=L, norm_placement=name)
  params = random_params(model, IMAGES)
  want = jax.jit(model.apply)({'params': params}, IMAGES)
  got = jax.jit(model.clone(dtype='bfloat16').apply)({'params': params}, IMAGES)
  assert got.dtype == np.float32 and np.isfinite(got).all()
  np.testing.assert_allclose(got, want, atol=0.1 * np.abs(want).max())


def test_every_preset_has_its_formula_and_paper():
  assert list(norms.PRESET_DOCS) == list(norms.NORM_PRESETS)
  assert all(formula and paper for formula, paper in norms.PRESET_DOCS.values())
