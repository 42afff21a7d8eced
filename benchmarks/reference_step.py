"""The minimal train step of a config's model: the yardstick for what our full step adds.

Same model (`vit_jax.models` built from the resolved config, so the same kernels and attention),
same batch and device; the step is what a new user would write first: fp32,
`optax.adamw(1e-3, weight_decay=0.05)`, `jax.value_and_grad` of the mean softmax cross-entropy
on integer labels, `jax.jit` with the params and optimizer state donated, and no metrics, no
schedule, no weight-decay mask, no RNG stream (a model with dropout draws from one fixed key). benchmarks/train_step.py times it beside ours in the same process
and prints ours/reference.
"""

from __future__ import annotations

import time
from typing import Any


def compile_reference(model: Any, params: Any, batch: dict) -> tuple[Any, Any, float]:
  """(compiled step, its initial (params, opt_state), compile seconds) for `batch`'s shapes.

  `params` is copied, so the caller's (often donated later) buffers stay untouched.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  tx = optax.adamw(1e-3, weight_decay=0.05)

  def loss_fn(p, images, labels):
    logits = model.apply({'params': p}, images, train=True,
                         rngs={'dropout': jax.random.key(0)})  # fixed masks: the same cost
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  def step(p, opt_state, images, labels):
    loss, grads = jax.value_and_grad(loss_fn)(p, images, labels)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  params = jax.tree.map(jnp.copy, params)
  state = (params, tx.init(params))
  jitted = jax.jit(step, donate_argnums=(0, 1))
  t0 = time.perf_counter()
  compiled = jitted.lower(*state, batch['image'], batch['label']).compile()
  return compiled, state, time.perf_counter() - t0


def run_reference(compiled: Any, state: Any, batch: dict, steps: int,
                  warmup: int) -> tuple[list[float], Any]:
  """Wall seconds of each of `steps` steps after `warmup` untimed ones; returns the new state."""
  import jax  # pylint: disable=g-import-not-at-top
  params, opt_state = state
  for _ in range(warmup):
    params, opt_state, loss = compiled(params, opt_state, batch['image'], batch['label'])
  jax.block_until_ready(params)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    params, opt_state, loss = compiled(params, opt_state, batch['image'], batch['label'])
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - t0)
  return times, (params, opt_state)
