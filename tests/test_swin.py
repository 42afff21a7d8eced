"""Tests for vit_jax/swin.py: shapes and sizes of every variant, the relative-position index, the
shifted-window seam, each norm placement's formula, bf16, the 8-device step, the config checks
and run.py end to end."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cifar_fixtures
from configs import common
from vit_jax import diagnostics
from vit_jax import models
from vit_jax import norms
from vit_jax import optim
from vit_jax import swin
from vit_jax import train
from vit_jax import validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# timm's swin_{tiny,small,base}_patch4_window7_224 with 1000 classes (their model cards: 28.3 M,
# 49.6 M, 87.8 M parameters).
TIMM_PARAMETERS = {'swin_t': 28_288_354, 'swin_s': 49_606_258, 'swin_b': 87_768_224}
SMALL = dict(name='swin', patch_size=2, hidden_size=16, stage_depths=(2, 2), stage_heads=(2, 4),
             window_size=4)


def _model(**overrides):
  config = common.get_config().model
  config.update({**SMALL, **overrides})
  return models.create_model(config, 10)


@pytest.mark.parametrize('variant', sorted(TIMM_PARAMETERS))
def test_variants_have_the_reference_parameter_counts_and_shapes(variant):
  config = common.get_config().model
  config.variant = variant
  model = models.create_model(config, 1000)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables)) == TIMM_PARAMETERS[variant]
  logits = jax.eval_shape(model.apply, variables, jnp.zeros((2, 224, 224, 3)))
  assert logits.shape == (2, 1000)
  depths = sum(model.depths)
  assert len([k for k in variables['params'] if '_blocks_' in k]) == depths == model.num_layers


def test_cifar_native_swin_forward():
  model = _model()
  x = jax.random.normal(jax.random.key(1), (3, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  # 16x16 tokens, windows of 4, shifted by 2 in the second block of each stage; stage 2 is 8x8.
  assert variables['params']['layers_1_blocks_0']['attn']['relative_position_bias_table'].shape == (
      49, 4)
  logits = model.apply(variables, x)
  assert logits.shape == (3, 10) and bool(jnp.all(jnp.isfinite(logits)))


def test_relative_position_index_by_hand():
  # Window 2: tokens (0,0), (0,1), (1,0), (1,1); row of (dy, dx) = (dy + 1) * 3 + (dx + 1).
  expected = [[4, 3, 1, 0],
              [5, 4, 2, 1],
              [7, 6, 4, 3],
              [8, 7, 5, 4]]
  np.testing.assert_array_equal(swin.relative_position_index(2), expected)
  index = swin.relative_position_index(7)
  assert index.shape == (49, 49) and index.min() == 0 and index.max() == 13 * 13 - 1
  assert np.all(np.diag(index) == 6 * 13 + 6)  # zero offset: the table's middle row


def _allowed(h, w, window, shift, query):
  """Tokens a query may attend to in a shifted block: the same window of the rolled map, and
  on the same side of the seam (wrapped around by the roll, or not) in rows and in columns."""
  out = set()
  qr, qc = query
  rolled = lambda r, c: ((r - shift) % h, (c - shift) % w)
  same_window = lambda a, b: (a[0] // window, a[1] // window) == (b[0] // window, b[1] // window)
  wrapped = lambda r, c: (r < shift, c < shift)
  for r in range(h):
    for c in range(w):
      if same_window(rolled(r, c), rolled(qr, qc)) and wrapped(r, c) == wrapped(qr, qc):
        out.add((r, c))
  return out


@pytest.mark.parametrize('query', [(0, 0), (1, 6), (7, 7), (5, 1), (3, 3)])
def test_no_attention_across_the_cyclic_seam(query):
  """The output of a shifted block at one token depends on exactly the tokens of its window and
  its side of the seam (every other path in the block is per token)."""
  h = w = 8
  block = swin.SwinBlock(num_heads=2, window=4, shift=2, mlp_ratio=2.0,
                         norm_spec=norms.parse_spec('pre', 1, 'layernorm'),
                         block=norms.parse_spec('pre', 1, 'layernorm').layers[0])
  x = jax.random.normal(jax.random.key(0), (1, h, w, 8))
  variables = block.init(jax.random.key(1), x, 0.0)
  grad = jax.grad(lambda x: block.apply(variables, x, 0.0)[0, query[0], query[1]].sum())(x)
  depends = {(r, c) for r in range(h) for c in range(w)
             if float(jnp.max(jnp.abs(grad[0, r, c]))) > 0}
  assert depends == _allowed(h, w, 4, 2, query)
  assert len(depends) < 16 or query == (3, 3)  # a seam window is cut into pieces


def test_mask_is_zero_without_a_seam():
  mask = swin.shifted_window_mask(8, 8, 4, 2)
  assert mask.shape == (4, 16, 16)
  assert np.all(mask[0] == 0)          # the first window holds no wrapped token
  assert np.any(mask[3] == swin.MASKED)  # the last holds all four pieces


def _ln(x, eps=1e-5):
  x = np.asarray(x, np.float64)
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)


def _branches(x, params):
  """(A, M): the block's attention and MLP functions, measured through a norm-free block whose
  other branch is switched off (its output projection zeroed)."""
  spec = norms.parse_spec('none', 1, 'layernorm')
  bare = swin.SwinBlock(2, 4, 2, 2.0, spec, spec.layers[0])
  off = lambda tree, name: {**tree, name: jax.tree.map(jnp.zeros_like, tree[name])}
  only_attn = {**params, 'mlp': off(params['mlp'], 'fc2')}
  only_mlp = {**params, 'attn': off(params['attn'], 'proj')}
  attn = lambda y: np.asarray(bare.apply({'params': only_attn}, jnp.asarray(y, jnp.float32), 0.0),
                              np.float64) - y
  mlp = lambda y: np.asarray(bare.apply({'params': only_mlp}, jnp.asarray(y, jnp.float32), 0.0),
                             np.float64) - y
  return attn, mlp


# Each placement's block, written from its paper with A (attention) and M (MLP).
FORMULAS = {
    'pre': lambda x, A, M: (lambda y: y + M(_ln(y)))(x + A(_ln(x))),             # Swin V1
    'respost': lambda x, A, M: (lambda y: y + _ln(M(y)))(x + _ln(A(x))),         # Swin V2
    'post': lambda x, A, M: (lambda y: _ln(y + M(y)))(_ln(x + A(x))),
    'sandwich': lambda x, A, M: (lambda y: y + _ln(M(_ln(y))))(x + _ln(A(_ln(x)))),
}


@pytest.mark.parametrize('placement', sorted(FORMULAS))
def test_each_placement_computes_its_formula(placement):
  spec = norms.parse_spec(placement, 1, 'layernorm')
  block = swin.SwinBlock(2, 4, 2, 2.0, spec, spec.layers[0])
  x = np.asarray(jax.random.normal(jax.random.key(0), (1, 8, 8, 8)), np.float64)
  params = block.init(jax.random.key(1), jnp.asarray(x, jnp.float32), 0.0)['params']
  got = np.asarray(block.apply({'params': params}, jnp.asarray(x, jnp.float32), 0.0))
  attn, mlp = _branches(x, params)
  np.testing.assert_allclose(got, FORMULAS[placement](x, attn, mlp), rtol=2e-4, atol=2e-4)


def test_norm_type_and_layerscale_reach_the_blocks():
  params = _model(norm_placement='pre,layerscale=0.1', norm_type='rmsnorm').init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  block = params['layers_0_blocks_1']
  assert set(block[norms.NORM_NAMES['attn_in']]) == {'scale'}  # RMSNorm: no bias
  np.testing.assert_allclose(block['layerscale_mlp'], 0.1)


def test_bfloat16_close_to_float32():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  f32 = _model()
  variables = f32.init(jax.random.key(0), x)
  variables = jax.tree.map(lambda v: v + 0.02, variables)  # a non-zero head
  bf16 = _model(dtype='bfloat16')
  a, b = f32.apply(variables, x), bf16.apply(variables, x)
  assert b.dtype == jnp.float32
  np.testing.assert_allclose(a, b, rtol=0.05, atol=0.05)


def test_remat_gives_the_same_gradients():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  labels = jnp.array([1, 7])
  plain, remat = _model(stochastic_depth_rate=0.2), _model(stochastic_depth_rate=0.2, remat=True)
  params = plain.init(jax.random.key(0), x)['params']
  params = jax.tree.map(lambda p: p + 0.01, params)  # a non-zero head

  def grads(model):
    loss = lambda p: jnp.mean(train.cross_entropy(
        model.apply({'params': p}, x, train=True, rngs={'dropout': jax.random.key(2)}), labels))
    return jax.jit(jax.grad(loss))(params)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads(plain), grads(remat))
  # ... and it does rematerialise: one checkpoint (remat2) per block in the traced forward pass.
  traced = lambda model: str(jax.make_jaxpr(lambda p: model.apply({'params': p}, x))(params))
  assert traced(remat).count('remat2[') == 4 and 'remat2[' not in traced(plain)


def test_scan_computes_what_the_unscanned_model_computes():
  """Scanned stages ((plain, shifted) pairs) give the same logits, gradients and diagnostics as
  the block-by-block model with the same (restacked) parameters."""
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  labels = jnp.array([3, 4])
  plain, scanned = _model(stage_depths=(2, 4)), _model(stage_depths=(2, 4), scan=True)
  stacked = scanned.init(jax.random.key(0), x)['params']
  assert set(stacked['layers_1_blocks']) == {'blocks_0', 'blocks_1'}
  assert stacked['layers_1_blocks']['blocks_1']['attn']['qkv']['kernel'].shape[0] == 2  # 2 pairs
  stacked = jax.tree.map(lambda p: p + 0.01, stacked)
  unstacked = swin.unstack_params(stacked)
  assert 'layers_1_blocks_3' in unstacked
  jax.tree.map(np.testing.assert_array_equal, swin.stack_params(unstacked, stacked), stacked)

  def loss(model, params):
    return jnp.mean(train.cross_entropy(model.apply({'params': params}, x), labels))
  np.testing.assert_allclose(loss(plain, unstacked), loss(scanned, stacked), rtol=1e-6)
  g_plain = jax.grad(lambda p: loss(plain, p))(unstacked)
  g_scan = swin.unstack_params(jax.grad(lambda p: loss(scanned, p))(stacked))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_plain, g_scan)
  for name, params in (('plain', unstacked), ('scan', stacked)):
    model = plain if name == 'plain' else scanned
    _, sown = model.apply({'params': params}, x, mutable=[diagnostics.attention.DIAGNOSTICS])
    per_layer = diagnostics.sown_per_layer(sown[diagnostics.attention.DIAGNOSTICS], 6)
    if name == 'plain':
      want = per_layer
    else:
      for key, value in want.items():
        np.testing.assert_allclose(per_layer[key], value, rtol=1e-4, err_msg=key)
  sq_plain, sq_scan = diagnostics.squared_norms(unstacked, 6), diagnostics.squared_norms(stacked, 6)
  np.testing.assert_allclose(sq_plain['attn'], sq_scan['attn'], rtol=1e-6)


def test_eight_devices_match_one_device():
  assert jax.device_count() == 8, 'tests/conftest.py forces 8 CPU devices'
  config = common.get_config()
  config.model.update(SMALL, stochastic_depth_rate=0.1)
  config.update(optimizer='sgd', learning_rate=0.1, lr_schedule='constant', total_steps=3)
  model = models.create_model(config.model, 10)
  rng = np.random.default_rng(0)
  batches = [{'image': rng.normal(size=(16, 32, 32, 3)).astype(np.float32),
              'label': rng.integers(0, 10, size=16).astype(np.int32)} for _ in range(2)]

  def run(devices):
    mesh = train.create_mesh(devices)
    tx = optim.create_optimizer(config, train.abstract_params(model, (32, 32, 3)), 3)
    state = train.init_train_state(model, tx, config, (32, 32, 3), train.replicated(mesh), seed=0)
    step = train.jit_train_step(model, tx, config, mesh, jax.tree.map(lambda x: x.sharding, state))
    losses = []
    for batch in train.device_batches(iter(batches), mesh):
      state, metrics = step(state, batch)
      losses.append(float(metrics['loss']))
    return jax.device_get(state.params), losses

  params_1, losses_1 = run(jax.devices()[:1])
  params_8, losses_8 = run(jax.devices())
  np.testing.assert_allclose(losses_1, losses_8, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_1, params_8)


@pytest.mark.parametrize('overrides,message', [
    (dict(window_size=5), 'Sizes that work'),
    (dict(patch_size=3), 'not divisible by patch_size=3'),
    (dict(stage_heads=(2, 3)), 'not divisible by its 3 heads'),
    (dict(stage_heads=(2,)), 'a positive head count per stage'),
    (dict(norm_placement='qknorm'), 'norms inside the attention'),
    (dict(norm_placement='deepnorm'), 'init_gain'),
    (dict(scan=True, stage_depths=(3, 2)), 'odd depth 3'),
    (dict(scan=True, norm_placement='pre,mixln=0.5', stage_depths=(2, 4)), 'mixes norm placements'),
])
def test_bad_swin_configs_stop_before_compile(overrides, message):
  config = common.get_config()
  config.data.archive = ''
  config.model.update({**SMALL, **overrides})
  with pytest.raises(validation.ConfigError, match=message):
    validation.validate_config(config)


@pytest.mark.parametrize('layout', [[], ['--config.model.scan=True', '--config.model.remat=True']])
def test_run_py_trains_and_evaluates_a_swin(tmp_path, layout):
  archive = cifar_fixtures.write_cifar100_binary(
      str(tmp_path), {'train': cifar_fixtures.make_examples(64, 100)})
  workdir = str(tmp_path / 'run')
  flags = ['--config=configs/cpu_quick.py', f'--workdir={workdir}',
           f'--config.data.archive={archive}', '--config.data.strict_counts=False',
           '--config.model.name=swin', '--config.model.patch_size=2',
           '--config.model.hidden_size=8', '--config.model.stage_depths=2,2',
           '--config.model.stage_heads=1,2', '--config.model.window_size=4',
           '--config.total_steps=2', '--config.batch_size=8', '--config.eval_batch_size=8',
           '--config.log_every=1', '--config.eval_every=2', '--config.checkpoint_every=2',
           '--config.diagnostics_every=1', *layout]
  proc = subprocess.run([sys.executable, 'run.py', *flags], cwd=ROOT, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, 'diagnostics.jsonl')) as f:
    records = [json.loads(l) for l in f]
  assert sorted({r['layer'] for r in records}) == [0, 1, 2, 3]  # every block of both stages
  assert all(np.isfinite(r['attn_entropy_mean']) for r in records)
  evaluated = subprocess.run([sys.executable, 'run.py', *flags, '--mode=eval',
                              '--config.data.eval_split=val'], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    val = [json.loads(l) for l in f if '"val"' in l]
  assert val[-1]['top1'] == val[-2]['top1']  # eval of the checkpoint = the run's last eval
