"""The optax chain: schedule shape, weight-decay mask, frozen parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from vit_jax import optim


def _config(**overrides):
  config = common.get_config()
  config.update(overrides)
  return config


def test_warmup_cosine_schedule():
  config = _config(learning_rate=0.1, warmup_steps=10, total_steps=110)
  schedule = optim.create_learning_rate_schedule(config, 110)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5)), 0.05, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), 0.1, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(60)), 0.05, rtol=1e-5)  # half-way down the cosine
  np.testing.assert_allclose(float(schedule(110)), 0.0, atol=1e-9)


def test_warmup_fraction_and_total_steps():
  config = _config(warmup_fraction=0.1, num_epochs=2.0, batch_size=100)
  total = optim.get_total_steps(config, 1000)
  assert total == 20
  assert optim.get_warmup_steps(config, total) == 2
  config.total_steps = 7
  assert optim.get_total_steps(config, 1000) == 7


def _params():
  return {'embedding': {'kernel': jnp.ones((4, 4, 3, 8)), 'bias': jnp.ones(8)},
          'cls': jnp.ones((1, 1, 8)),
          'Transformer': {'posembed_input': {'pos_embedding': jnp.ones((1, 5, 8))},
                          'encoder_norm': {'scale': jnp.ones(8), 'bias': jnp.ones(8)}},
          'head': {'kernel': jnp.ones((8, 10)), 'bias': jnp.ones(10)}}


def test_weight_decay_only_on_kernels():
  mask = optim.weight_decay_mask(_params())
  assert mask['embedding']['kernel'] and mask['head']['kernel']
  assert not mask['embedding']['bias'] and not mask['cls']
  assert not mask['Transformer']['posembed_input']['pos_embedding']
  assert not mask['Transformer']['encoder_norm']['scale']


@pytest.mark.parametrize('optimizer', ['adamw', 'sgd'])
def test_decoupled_decay_is_minus_lr_wd_p_on_kernels_only(optimizer):
  """With zero gradients the whole update is the weight decay: -lr * wd * p on kernels, 0 elsewhere."""
  config = _config(optimizer=optimizer, learning_rate=0.1, weight_decay=0.5, momentum=0.0,
                   lr_schedule='constant', warmup_steps=0, warmup_fraction=0.0)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), _params())
  tx = optim.create_optimizer(config, params, total_steps=10)
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  for path in (('head', 'kernel'), ('embedding', 'kernel')):
    p, u = params[path[0]][path[1]], updates[path[0]][path[1]]
    np.testing.assert_allclose(u, -0.1 * 0.5 * np.asarray(p), rtol=1e-6, atol=0)
  assert float(jnp.abs(updates['head']['bias']).max()) == 0       # not decayed
  assert float(jnp.abs(updates['cls']).max()) == 0
  assert float(jnp.abs(updates['Transformer']['encoder_norm']['scale']).max()) == 0


def test_trainable_regex_freezes_the_rest():
  config = _config(trainable='^head/', lr_schedule='constant')
  params = _params()
  tx = optim.create_optimizer(config, params, total_steps=10)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(jnp.abs(updates['head']['kernel']).max()) > 0
  assert float(jnp.abs(updates['embedding']['kernel']).max()) == 0


def test_clipping():
  config = _config(grad_clip_norm=1.0, optimizer='sgd', momentum=0.0, weight_decay=0.0,
                   learning_rate=1.0, lr_schedule='constant')
  params = {'w': {'kernel': jnp.zeros(4)}}
  tx = optim.create_optimizer(config, params, total_steps=10)
  updates, _ = tx.update({'w': {'kernel': jnp.full(4, 10.0)}}, tx.init(params), params)
  np.testing.assert_allclose(float(optax.tree.norm(updates)), 1.0, rtol=1e-5)


def test_unknown_optimizer():
  with pytest.raises(ValueError, match='expected one of'):
    optim.create_optimizer(_config(optimizer='lamb'), _params(), 10)
