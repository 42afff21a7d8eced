"""The jitted data-parallel steps: device-count invariance, accumulation, donation, masking."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from vit_jax import models
from vit_jax import optim
from vit_jax import train

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 3)


def _config(**overrides):
  config = common.get_config()
  config.model.update(patch_size=4, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32)
  config.update(learning_rate=1e-2, lr_schedule='constant', total_steps=10)
  config.update(overrides)
  return config


def _setup(config, devices):
  model = models.create_model(config.model, NUM_CLASSES)
  mesh = train.create_mesh(devices)
  tx = optim.create_optimizer(config, train.abstract_params(model, IMAGE_SHAPE),
                              config.total_steps)
  state = train.init_train_state(model, tx, config, IMAGE_SHAPE, train.replicated(mesh), seed=0)
  state_sharding = jax.tree.map(lambda x: x.sharding, state)
  step = train.jit_train_step(model, tx, config, mesh, state_sharding)
  return model, mesh, state, step


def _batches(n, batch_size, seed=0):
  rng = np.random.default_rng(seed)
  return [{'image': rng.normal(size=(batch_size, *IMAGE_SHAPE)).astype(np.float32),
           'label': rng.integers(0, NUM_CLASSES, size=batch_size).astype(np.int32)}
          for _ in range(n)]


def _run(config, devices, batches):
  _, mesh, state, step = _setup(config, devices)
  losses = []
  for batch in train.device_batches(iter(batches), mesh):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  return jax.device_get(state.params), losses


# SGD, not Adam, for the equivalence tests: some gradients are exactly zero in exact arithmetic
# (e.g. the attention key bias), and Adam's g / sqrt(v) turns their rounding noise into full-size
# steps, so Adam would compare noise. SGD compares the gradients themselves.
SGD = dict(optimizer='sgd', learning_rate=0.1)


def test_eight_devices_match_one_device():
  assert jax.device_count() == 8, 'tests/conftest.py forces 8 CPU devices'
  batches = _batches(3, 16)
  params_1, losses_1 = _run(_config(**SGD), jax.devices()[:1], batches)
  params_8, losses_8 = _run(_config(**SGD), jax.devices(), batches)
  np.testing.assert_allclose(losses_1, losses_8, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_1, params_8)
  assert losses_1[-1] != losses_1[0]  # it actually trained


def test_gradient_accumulation_equals_big_batch():
  batches = _batches(2, 16)
  params_big, losses_big = _run(_config(**SGD), jax.devices()[:2], batches)
  params_acc, losses_acc = _run(_config(grad_accum_steps=4, **SGD), jax.devices()[:2], batches)
  np.testing.assert_allclose(losses_big, losses_acc, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_big, params_acc)


@pytest.mark.parametrize('grad_accum_steps', [1, 2])
def test_concurrent_microbatches_equal_big_batch(grad_accum_steps):
  """Parts computed side by side give the full batch's update and metrics (no dropout here)."""
  batches = _batches(2, 16)
  params_big, losses_big = _run(_config(**SGD), jax.devices()[:2], batches)
  params_par, losses_par = _run(
      _config(concurrent_microbatches=2, grad_accum_steps=grad_accum_steps, **SGD),
      jax.devices()[:2], batches)
  np.testing.assert_allclose(losses_big, losses_par, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_big, params_par)


def test_concurrent_microbatches_split_the_model_input():
  """With 2 parts the model runs on two 8-image halves of the 16-image batch, never on all 16."""
  batch_shapes = {}
  for parts in (1, 2):
    _, mesh, state, step = _setup(_config(concurrent_microbatches=parts), jax.devices()[:1])
    batch = next(train.device_batches(iter(_batches(1, 16)), mesh))
    batch_shapes[parts] = step.lower(state, batch).as_text()
  # The images cut into 4x4 patches, [batch, grid, patch, grid, patch, 3], before the embedding.
  half, full = 'tensor<8x2x4x2x4x3xf32>', 'tensor<16x2x4x2x4x3xf32>'
  assert full in batch_shapes[1] and half not in batch_shapes[1]
  assert half in batch_shapes[2] and full not in batch_shapes[2]


def test_step_needs_no_host_transfer_and_donates_state():
  _, mesh, state, step = _setup(_config(), jax.devices())
  batch = next(train.device_batches(iter(_batches(1, 16)), mesh))
  state, _ = step(state, batch)  # compile outside the guard
  old_leaf = jax.tree.leaves(state.params)[0]
  with jax.transfer_guard('disallow'):
    state, metrics = step(state, batch)
  assert old_leaf.is_deleted(), 'the incoming state must be donated'
  assert int(state.step) == 2 and np.isfinite(float(metrics['loss']))


def test_ema_follows_params():
  config = _config(ema_decay=0.5)
  _, mesh, state, step = _setup(config, jax.devices()[:1])
  before = jax.device_get(state.params)
  batch = next(train.device_batches(iter(_batches(1, 8)), mesh))
  state, _ = step(state, batch)
  after = jax.device_get(state.params)
  expected = jax.tree.map(lambda b, a: 0.5 * b + 0.5 * a, before, after)
  jax.tree.map(lambda e, x: np.testing.assert_allclose(e, x, rtol=1e-6, atol=1e-7),
               expected, jax.device_get(state.ema_params))


def test_eval_ignores_padding():
  config = _config()
  model, mesh, state, _ = _setup(config, jax.devices())
  eval_fn = train.jit_eval_step(model, mesh)
  batch = _batches(1, 16)[0]
  real = {**batch, 'mask': np.ones(16, np.float32)}
  padded = {'image': np.concatenate([batch['image'][:10], np.zeros((6, *IMAGE_SHAPE), np.float32)]),
            'label': np.concatenate([batch['label'][:10], np.zeros(6, np.int32)]),
            'mask': np.concatenate([np.ones(10), np.zeros(6)]).astype(np.float32)}
  full = train.evaluate(eval_fn, state.params, train.device_batches(iter([real]), mesh))
  part = train.evaluate(eval_fn, state.params, train.device_batches(iter([padded]), mesh))
  assert full['num_examples'] == 16 and part['num_examples'] == 10
  logits = model.apply({'params': state.params}, batch['image'][:10])
  expected_loss = float(jnp.mean(train.cross_entropy(logits, batch['label'][:10])))
  np.testing.assert_allclose(part['loss'], expected_loss, rtol=1e-5)


def test_topk_and_soft_labels():
  logits = jnp.array([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
  top1, top5 = train.topk_correct(logits, jnp.array([5, 5]))
  np.testing.assert_array_equal(top1, [1.0, 0.0])
  np.testing.assert_array_equal(top5, [1.0, 0.0])
  soft = jax.nn.one_hot(jnp.array([5, 0]), 6)
  np.testing.assert_allclose(train.cross_entropy(logits, soft),
                             train.cross_entropy(logits, jnp.array([5, 0])), rtol=1e-6)
  smoothed = train.cross_entropy(logits, jnp.array([5, 0]), label_smoothing=0.1)
  assert np.all(np.asarray(smoothed) > np.asarray(train.cross_entropy(logits, jnp.array([5, 0]))))
