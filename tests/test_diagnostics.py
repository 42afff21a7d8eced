"""Tests for vit_jax/diagnostics.py: every logged value against a direct computation (jax.grad of
the same loss, norms of the parameter tree by name, the optimizer's own update, and a float64
numpy forward pass), on 1 and 8 devices and under scan; and a run with diagnostics trains the
same parameters as one without."""

import json
import os

import jax
import numpy as np
import pytest

import cifar_fixtures
from configs import common
from model_fixtures import ref_gelu
from norm_reference import ref_norm
from vit_jax import diagnostics
from vit_jax import models
from vit_jax import optim
from vit_jax import study_runs
from vit_jax import train

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 3)
ATTN = ('LayerNorm_0', 'MultiHeadDotProductAttention_1')
MLP = ('LayerNorm_2', 'MlpBlock_3')


def _config(**model):
  config = common.get_config()
  config.model.update({**dict(patch_size=4, hidden_size=16, num_layers=3, num_heads=2, mlp_dim=32,
                             dropout_rate=0.1), **model})
  # SGD: its update is the gradient itself, so the ratio compares gradients, not Adam's
  # sign-like normalization of rounding noise; no warmup: a non-zero update at step 0.
  config.update(optimizer='sgd', learning_rate=1e-2, total_steps=10, warmup_steps=0)
  return config


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(n, *IMAGE_SHAPE)).astype(np.float32),
          'label': rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)}


def _measure(config, devices, batch, params=None):
  model = models.create_model(config.model, NUM_CLASSES)
  mesh = train.create_mesh(devices)
  tx = optim.create_optimizer(config, train.abstract_params(model, IMAGE_SHAPE), config.total_steps)
  state = train.init_train_state(model, tx, config, IMAGE_SHAPE, train.replicated(mesh), seed=0)
  sharding = jax.tree.map(lambda x: x.sharding, state)
  if params is None:  # the head starts at zero (vit_jax), which zeroes every body gradient
    params = jax.device_get(state.params)
    params['head']['kernel'] = np.random.default_rng(1).normal(
        size=params['head']['kernel'].shape).astype(np.float32)
  state = jax.device_put(state.replace(params=params), sharding)
  fn = diagnostics.jit_diagnostics_step(model, tx, train.make_loss_fn(model, 0.0), 1, sharding,
                                        train.batch_sharded(mesh), train.replicated(mesh))
  device_batch = next(train.device_batches(iter([batch]), mesh))
  return model, tx, jax.device_get(state), jax.device_get(fn(state, device_batch))


def _sq(tree):
  return sum(float(np.sum(np.square(np.asarray(x, np.float64)))) for x in jax.tree.leaves(tree))


def _numpy_forward(params, images, patch=4):
  """Pre-LN, token classifier: per block the branch and stream RMS, per head entropy and max logit."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  b, h, w, c = images.shape
  x = images.astype(np.float64).reshape(b, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, patch * patch * c)
  kernel = p['embedding']['kernel']  # [patch, patch, c, hidden]
  x = x @ kernel.reshape(-1, kernel.shape[-1])
  x = x + p['embedding']['bias']
  x = np.concatenate([np.broadcast_to(p['cls'], (b, 1, x.shape[-1])), x], axis=1)
  x = x + p['Transformer']['posembed_input']['pos_embedding']
  rms = lambda a: float(np.sqrt(np.mean(a**2)))
  out = {k: [] for k in ('attn_branch_rms', 'mlp_branch_rms', 'stream_rms', 'entropy', 'logit')}
  i = 0
  while f'encoderblock_{i}' in p['Transformer']:
    blk = p['Transformer'][f'encoderblock_{i}']
    a = blk['MultiHeadDotProductAttention_1']
    y = ref_norm('layernorm', x, blk['LayerNorm_0'])
    q, k, v = (np.einsum('btd,dhk->bthk', y, a[n]['kernel']) + a[n]['bias']
               for n in ('query', 'key', 'value'))
    logits = np.einsum('bqhk,bshk->bhqs', q, k) / np.sqrt(q.shape[-1])
    wts = np.exp(logits - logits.max(-1, keepdims=True))
    wts /= wts.sum(-1, keepdims=True)
    out['entropy'].append((-(wts * np.log(wts)).sum(-1)).mean(axis=(0, 2)))
    out['logit'].append(logits.max(axis=(0, 2, 3)))
    y = np.einsum('bhqs,bshk->bqhk', wts, v)
    y = np.einsum('bqhk,hkd->bqd', y, a['out']['kernel']) + a['out']['bias']
    out['attn_branch_rms'].append(rms(y))
    x = x + y
    m = blk['MlpBlock_3']
    y = ref_gelu(ref_norm('layernorm', x, blk['LayerNorm_2']) @ m['Dense_0']['kernel'] +
                 m['Dense_0']['bias']) @ m['Dense_1']['kernel'] + m['Dense_1']['bias']
    out['mlp_branch_rms'].append(rms(y))
    x = x + y
    out['stream_rms'].append(rms(x))
    i += 1
  return out


@pytest.mark.parametrize('num_devices', [1, 8])
def test_every_value_is_the_direct_computation(num_devices):
  config, batch = _config(), _batch()
  model, tx, state, got = _measure(config, jax.devices()[:num_devices], batch)
  assert set(got) == set(diagnostics.QUANTITIES)
  assert all(v.shape == (3,) for v in got.values())

  # The gradient of the train step's own loss, dropout key included.
  loss_fn = train.make_loss_fn(model, 0.0)
  rng = jax.random.fold_in(state.rng, state.step)
  grads = jax.grad(lambda p: loss_fn(p, batch['image'], batch['label'], rng)[0])(state.params)
  updates, _ = tx.update(grads, state.opt_state, state.params)
  for i in range(3):
    block = lambda tree, names: [tree['Transformer'][f'encoderblock_{i}'][n] for n in names]
    for sub, names in (('attn', ATTN), ('mlp', MLP)):
      g, p, u = (_sq(block(t, names)) for t in (grads, state.params, updates))
      np.testing.assert_allclose(got[f'{sub}_grad_norm'][i], np.sqrt(g), rtol=2e-4)
      np.testing.assert_allclose(got[f'{sub}_param_norm'][i], np.sqrt(p), rtol=1e-5)
      np.testing.assert_allclose(got[f'{sub}_update_ratio'][i], np.sqrt(u / p), rtol=2e-4)
  assert (got['attn_grad_norm'] > 0).all() and (got['mlp_update_ratio'] > 0).all()

  want = _numpy_forward(state.params, batch['image'])
  for key in ('attn_branch_rms', 'mlp_branch_rms', 'stream_rms'):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-4)
  entropy, logit = np.array(want['entropy']), np.array(want['logit'])  # [layers, heads]
  np.testing.assert_allclose(got['attn_entropy_mean'], entropy.mean(1), rtol=1e-4)
  np.testing.assert_allclose(got['attn_entropy_min'], entropy.min(1), rtol=1e-4)
  np.testing.assert_allclose(got['attn_entropy_max'], entropy.max(1), rtol=1e-4)
  np.testing.assert_allclose(got['attn_logit_max_mean'], logit.mean(1), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got['attn_logit_max'], logit.max(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('placement', ['pre,mixln=0.4', 'normformer', 'resi_dual'])
def test_scan_gives_the_unscanned_values(placement):
  """One scanned module per run of identical blocks (Mix-LN), a second stream (ResiDual), norms
  inside the sublayers (NormFormer): layer l's values land at index l either way."""
  batch = _batch(8)
  plain = _measure(_config(norm_placement=placement, dropout_rate=0.0), jax.devices()[:1], batch)
  segments = [(a, b) for a, b, _ in plain[0].norm_spec().segments()]
  scanned = _measure(_config(norm_placement=placement, dropout_rate=0.0, scan=True),
                     jax.devices()[:1], batch, models.stack_block_params(plain[2].params, segments))
  for key in diagnostics.QUANTITIES:
    np.testing.assert_allclose(scanned[3][key], plain[3][key], rtol=2e-4, err_msg=key)


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
  root = tmp_path_factory.mktemp('data')
  return cifar_fixtures.write_cifar100_binary(
      str(root), {'train': cifar_fixtures.make_examples(120, 100)})


def _train(archive, workdir, every):
  config = _config()
  config.data = cifar_fixtures.data_config(archive=archive, image_size=8, val_fraction=0.2)
  config.update(batch_size=16, eval_batch_size=16, total_steps=7, log_every=2, eval_every=4,
                checkpoint_every=7, async_checkpoints=False, diagnostics_every=every)
  train.train_and_evaluate(config, workdir)
  manager = train.checkpoint.create_manager(workdir, read_only=True, async_save=False)
  params = manager.restore(manager.latest_step())['params']
  manager.close()
  return params


def test_diagnostics_never_change_training(archive, tmp_path):
  off = _train(archive, str(tmp_path / 'off'), 0)
  on = _train(archive, str(tmp_path / 'on'), 3)
  jax.tree.map(np.testing.assert_array_equal, on, off)  # bit for bit
  assert not os.path.exists(tmp_path / 'off' / diagnostics.FILE)
  rows = study_runs.read_diagnostics(str(tmp_path / 'on' / diagnostics.FILE))
  # step 0 before any update, every 3 steps, and the final state after step 7
  assert sorted({r['step'] for r in rows}) == [0, 3, 6, 7]
  assert [r['layer'] for r in rows if r['step'] == 0] == [0, 1, 2]
  assert set(rows[0]) == {'step', 'layer', *diagnostics.QUANTITIES}
  with open(tmp_path / 'on' / diagnostics.FILE) as f:
    assert all(isinstance(json.loads(line)['attn_grad_norm'], float) for line in f)
