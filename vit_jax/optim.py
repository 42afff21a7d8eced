"""The optimizer: an optax chain built from the config (AdamW or SGD, warmup + decay, clipping).

Knows nothing of models or data beyond the parameter tree it masks. Gradient accumulation is
done in `train.train_step` (a scan over micro-batches) so that one optimizer step always equals
one update on the full global batch.
"""

import math
import re
from typing import Any

import flax.traverse_util
import jax
import ml_collections
import optax

OPTIMIZERS = ('adamw', 'sgd')
LR_SCHEDULES = ('warmup_cosine', 'warmup_linear', 'constant')


def get_total_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  """`config.total_steps` when set (> 0), else `num_epochs` worth of global batches."""
  if config.total_steps > 0:
    return int(config.total_steps)
  return max(1, math.ceil(config.num_epochs * num_train_examples / config.batch_size))


def get_warmup_steps(config: ml_collections.ConfigDict, total_steps: int) -> int:
  """`config.warmup_steps` when set (> 0), else `warmup_fraction` of the run."""
  if config.warmup_steps > 0:
    return int(config.warmup_steps)
  return int(round(config.warmup_fraction * total_steps))


def create_learning_rate_schedule(config: ml_collections.ConfigDict,
                                  total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then cosine/linear decay to `end_lr_ratio`."""
  peak = config.learning_rate
  end = peak * config.end_lr_ratio
  warmup = get_warmup_steps(config, total_steps)
  if config.lr_schedule == 'constant':
    decay = optax.constant_schedule(peak)
  elif config.lr_schedule == 'warmup_cosine':
    decay = optax.cosine_decay_schedule(peak, max(1, total_steps - warmup), alpha=config.end_lr_ratio)
  elif config.lr_schedule == 'warmup_linear':
    decay = optax.linear_schedule(peak, end, max(1, total_steps - warmup))
  else:
    raise ValueError(f'config.lr_schedule={config.lr_schedule!r}: expected one of {LR_SCHEDULES}.')
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _path_names(params: Any) -> dict:
  """{path tuple: 'a/b/c'} for every leaf, for name-based masks."""
  flat = flax.traverse_util.flatten_dict(params)
  return {k: '/'.join(str(p) for p in k) for k in flat}


def weight_decay_mask(params: Any) -> Any:
  """True for kernels only: biases, LayerNorm scales, position embeddings and cls are not decayed."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({k: k[-1] == 'kernel' for k in flat})


def trainable_mask(params: Any, pattern: str) -> Any:
  """True for parameters whose path ('Transformer/encoderblock_0/...') matches `pattern`."""
  regex = re.compile(pattern)
  names = _path_names(params)
  return flax.traverse_util.unflatten_dict({k: bool(regex.search(n)) for k, n in names.items()})


def create_optimizer(config: ml_collections.ConfigDict, params: Any,
                     total_steps: int) -> optax.GradientTransformation:
  """The full optax chain for `config`, with masks derived from `params` (shapes only)."""
  schedule = create_learning_rate_schedule(config, total_steps)
  if config.optimizer == 'adamw':
    base = optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                       weight_decay=config.weight_decay, mask=weight_decay_mask(params))
  elif config.optimizer == 'sgd':
    base = optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=weight_decay_mask(params)),
        optax.sgd(schedule, momentum=config.momentum))
  else:
    raise ValueError(f'config.optimizer={config.optimizer!r}: expected one of {OPTIMIZERS}.')
  parts = []
  if config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  parts.append(base)
  tx = optax.chain(*parts)
  if config.trainable:
    labels = jax.tree.map(lambda t: 'train' if t else 'freeze',
                          trainable_mask(params, config.trainable))
    tx = optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()}, labels)
  return tx
