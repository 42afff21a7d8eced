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


def _body(params):
  """Everything but the classifier head, which starts at zero."""
  return {k: v for k, v in params.items() if k != 'head'}


def test_eight_devices_match_one_device():
  """With dropout on: the masks are drawn for the global batch, whatever the device count."""
  assert jax.device_count() == 8, 'tests/conftest.py forces 8 CPU devices'
  config = _config(**SGD)
  config.model.update(dropout_rate=0.2, attention_dropout_rate=0.2)  # model fields, not top level
  batches = _batches(3, 16)
  _, _, init_state, _ = _setup(config, jax.devices()[:1])
  init_params = jax.device_get(init_state.params)
  params_1, losses_1 = _run(config, jax.devices()[:1], batches)
  params_8, losses_8 = _run(config, jax.devices(), batches)
  np.testing.assert_allclose(losses_1, losses_8, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_1, params_8)
  assert losses_1[-1] != losses_1[0]  # it actually trained
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), _body(params_1),
                       _body(init_params))
  assert min(jax.tree.leaves(moved)) > 0, moved  # every body parameter got a gradient
  # Dropout is on: the same step without it gives other params.
  params_nodrop, _ = _run(_config(**SGD), jax.devices()[:1], batches)
  assert not np.allclose(params_nodrop['Transformer']['encoderblock_0']['MlpBlock_3']['Dense_0']
                         ['kernel'], params_1['Transformer']['encoderblock_0']['MlpBlock_3']
                         ['Dense_0']['kernel'])


def test_gradient_accumulation_equals_big_batch():
  batches = _batches(2, 16)
  params_big, losses_big = _run(_config(**SGD), jax.devices()[:2], batches)
  params_acc, losses_acc = _run(_config(grad_accum_steps=4, **SGD), jax.devices()[:2], batches)
  np.testing.assert_allclose(losses_big, losses_acc, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_big, params_acc)


def test_gradient_accumulation_runs_the_model_on_micro_batches():
  """grad_accum_steps=4 on a 16-image batch: the model sees 4-image micro-batches, never 16."""
  hlo = {}
  for accum in (1, 4):
    _, mesh, state, step = _setup(_config(grad_accum_steps=accum), jax.devices()[:1])
    batch = next(train.device_batches(iter(_batches(1, 16)), mesh))
    hlo[accum] = step.lower(state, batch).as_text()
  # The images cut into 4x4 patches, [batch, grid, patch, grid, patch, 3], before the embedding.
  micro, full = 'tensor<4x2x4x2x4x3xf32>', 'tensor<16x2x4x2x4x3xf32>'
  assert full in hlo[1] and micro not in hlo[1]
  assert micro in hlo[4] and full not in hlo[4]


def test_gradient_accumulation_equals_micro_batch_gradients_by_hand():
  """One SGD step with 2 micro-batches = params - lr * mean of the 2 micro-batch gradients,
  each taken by jax.grad on its own 8 examples (example j * 2 + i goes to micro-batch i)."""
  config = _config(grad_accum_steps=2, weight_decay=0.0, momentum=0.0, **SGD)
  model, mesh, state, step = _setup(config, jax.devices()[:1])
  params = jax.device_get(state.params)
  batch = _batches(1, 16)[0]
  new_state, _ = step(state, next(train.device_batches(iter([batch]), mesh)))

  def loss(p, images, labels):
    return jnp.mean(train.cross_entropy(model.apply({'params': p}, images), labels))

  grads = [jax.grad(loss)(params, batch['image'][i::2], batch['label'][i::2]) for i in range(2)]
  expected = jax.tree.map(lambda p, g0, g1: p - 0.1 * (g0 + g1) / 2, params, *grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               jax.device_get(new_state.params), expected)
  # ... and not the update of the first micro-batch alone.
  first_only = jax.tree.map(lambda p, g0: p - 0.1 * g0, params, grads[0])
  assert not np.allclose(new_state.params['head']['kernel'], first_only['head']['kernel'])


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
  """Two steps with decay 0.9: ema_2 = 0.9 * (0.9 * p0 + 0.1 * p1) + 0.1 * p2 (not symmetric)."""
  config = _config(ema_decay=0.9)
  _, mesh, state, step = _setup(config, jax.devices()[:1])
  history = [jax.device_get(state.params)]
  for batch in train.device_batches(iter(_batches(2, 8)), mesh):
    state, _ = step(state, batch)
    history.append(jax.device_get(state.params))
  p0, p1, p2 = history
  expected = jax.tree.map(lambda a, b, c: 0.9 * (0.9 * a + 0.1 * b) + 0.1 * c, p0, p1, p2)
  jax.tree.map(lambda e, x: np.testing.assert_allclose(e, x, rtol=1e-6, atol=1e-7),
               expected, jax.device_get(state.ema_params))
  swapped = jax.tree.map(lambda a, b, c: 0.1 * (0.1 * a + 0.9 * b) + 0.9 * c, p0, p1, p2)
  assert not np.allclose(swapped['head']['kernel'], state.ema_params['head']['kernel'])


def test_eval_ignores_padding():
  config = _config()
  model, mesh, state, _ = _setup(config, jax.devices())
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32),
                        jax.device_get(state.params))  # random head too: real logits
  eval_fn = train.jit_eval_step(model, mesh)
  batch = _batches(1, 16)[0]
  real = {**batch, 'mask': np.ones(16, np.float32)}
  padded = {'image': np.concatenate([batch['image'][:10], np.zeros((6, *IMAGE_SHAPE), np.float32)]),
            'label': np.concatenate([batch['label'][:10], np.zeros(6, np.int32)]),
            'mask': np.concatenate([np.ones(10), np.zeros(6)]).astype(np.float32)}
  full = train.evaluate(eval_fn, params, train.device_batches(iter([real]), mesh))
  part = train.evaluate(eval_fn, params, train.device_batches(iter([padded]), mesh))
  assert full['num_examples'] == 16 and part['num_examples'] == 10
  logits = np.asarray(model.apply({'params': params}, batch['image'][:10]))
  labels = batch['label'][:10]
  expected_loss = float(jnp.mean(train.cross_entropy(logits, labels)))
  np.testing.assert_allclose(part['loss'], expected_loss, rtol=1e-5)
  ranks = np.argsort(-logits, axis=-1)  # numpy's own top-k, independent of lax.top_k
  expected_top1 = np.mean(ranks[:, 0] == labels)
  expected_top5 = np.mean([label in row[:5] for row, label in zip(ranks, labels)])
  assert part['top1'] == pytest.approx(expected_top1) and part['top5'] == pytest.approx(expected_top5)
  assert 0 < expected_top5 < 1  # the check can tell padding from real examples


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
