"""Training dynamics per layer: the quantities the normalization literature uses to explain why a
scheme trains better (Xiong et al., 2020: gradients by depth; Peri-LN and "The Curse of Depth",
2025: hidden-state growth; Dehghani et al. and Zhai et al., 2023: attention-logit growth and
entropy collapse).

Every `config.diagnostics_every` steps (0 = never), at step 0 before any update, and once more
after the last update, `diagnostics_step` measures the state and the batch of that step, per
block l and sublayer (attention, MLP; a sublayer's parameters include its own norms):

    {attn,mlp}_grad_norm       ||g||: the gradient of the train step's loss (same model and
                               dropout key; the first micro-batch when grad_accum_steps > 1)
    {attn,mlp}_param_norm      ||theta||
    {attn,mlp}_update_ratio    ||u|| / ||theta||, u the optimizer's update for that gradient
    {attn,mlp}_branch_rms      RMS of what the sublayer adds to the residual stream
    stream_rms                 RMS of the residual stream the block outputs
    attn_entropy_{mean,min,max}    attention entropy in nats (per head: mean over the batch and
                               the queries), then mean / min / max over heads
    attn_logit_{max_mean,max}  the largest attention logit of each head (q.k / sqrt(d), after
                               any QK-norm), mean and max over heads

The activations come from a deterministic forward pass (`train=False`) on the same images through
vit_jax/attention.py's SelfAttention (the one module that sees the logits; same parameters).
`records` turns them into one JSON object per step and layer, which vit_jax/logs.py appends to
WORKDIR/diagnostics.jsonl (schema in docs/training.md) and TensorBoard
(`diagnostics/<quantity>/layer_<l>`). Nothing here changes
the train step: a run with diagnostics computes the same parameters as one without.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax import attention
from vit_jax import norms

FILE = 'diagnostics.jsonl'  # read back by study_runs.read_diagnostics
SUBLAYERS = ('attn', 'mlp')
# Each block's direct children, by sublayer (norm sites keep their names whatever their type).
_MODULES = {
    sub: frozenset([norms.NORM_NAMES[f'{sub}_{p}'] for p in ('in', 'out', 'res')] +
                   [attention.NAME if sub == 'attn' else 'MlpBlock_3', sub, f'layerscale_{sub}'])
    for sub in SUBLAYERS}  # `attn` / `mlp`: the Swin block's sublayers (vit_jax/swin.py)
_BLOCK = re.compile(r'^encoderblock(?:_(\d+))?(?:-(\d+))?$')
_SWIN_BLOCK = re.compile(r'^layers_(\d+)_blocks_(\d+)$')
_SWIN_SCANNED = re.compile(r'^layers_(\d+)_blocks$')
QUANTITIES = tuple(f'{sub}_{q}' for q in ('grad_norm', 'param_norm', 'update_ratio', 'branch_rms')
                   for sub in SUBLAYERS) + (
    'stream_rms', 'attn_entropy_mean', 'attn_entropy_min', 'attn_entropy_max',
    'attn_logit_max_mean', 'attn_logit_max')


# ----------------------------------------------------------------------------- per-layer reductions
def _blocks(tree: Mapping) -> list[tuple[np.ndarray, bool, Any]]:
  """(layer indices, scanned?, subtree) of each block module: a ViT's under `Transformer`, a
  Swin's `layers_{stage}_blocks_{j}`, or scanned `layers_{stage}_blocks/blocks_{k}` (the k-th
  block of each (plain, shifted) step), numbered through the stages."""
  if 'Transformer' in tree:
    out = []
    for name, subtree in tree['Transformer'].items():
      m = _BLOCK.match(name)
      if m:
        scanned = m.group(1) is None or m.group(2) is not None
        first = int(m.group(1) or 0)
        count = len(jax.tree.leaves(subtree)[0]) if scanned else 1
        out.append((np.arange(first, first + count), scanned, subtree))
    return out
  stages: dict[int, list] = {}  # stage -> (k, period, count, scanned, subtree) of its blocks
  for name, subtree in tree.items():
    if m := _SWIN_BLOCK.match(name):
      stages.setdefault(int(m.group(1)), []).append((int(m.group(2)), 1, 1, False, subtree))
    elif m := _SWIN_SCANNED.match(name):
      period = len(subtree)
      for k in range(period):
        block = subtree[f'blocks_{k}']
        stages.setdefault(int(m.group(1)), []).append(
            (k, period, len(jax.tree.leaves(block)[0]), True, block))
  out, first = [], 0
  for stage in sorted(stages):
    for k, period, count, scanned, subtree in stages[stage]:
      out.append((first + k + period * np.arange(count), scanned, subtree))
    first += sum(count for _, _, count, _, _ in stages[stage])
  return out


def squared_norms(params: Mapping, num_layers: int) -> dict[str, jax.Array]:
  """{'attn': [L], 'mlp': [L]}: the sum of squares of each block's sublayer parameters."""
  out = {sub: jnp.zeros(num_layers, jnp.float32) for sub in SUBLAYERS}
  for index, scanned, block in _blocks(params):
    for child, subtree in block.items():
      sub = next(s for s in SUBLAYERS if child in _MODULES[s])
      for leaf in jax.tree.leaves(subtree):
        sq = jnp.square(leaf.astype(jnp.float32))
        sq = sq.reshape(sq.shape[0], -1).sum(1) if scanned else sq.sum()[None]  # [layers]
        out[sub] = out[sub].at[index].add(sq)
  return out


def sown_per_layer(sown: Mapping, num_layers: int) -> dict[str, jax.Array]:
  """The 'diagnostics' collection -> {name: [L]} in layer order; a per-head value ([heads] per
  layer; a Swin's head count changes by stage) becomes `{name}_mean`, `_min` and `_max` over heads."""
  parts: dict[str, list[tuple[np.ndarray, jax.Array]]] = {}

  def visit(tree, index, scanned):
    for name, value in tree.items():
      if isinstance(value, Mapping):
        visit(value, index, scanned)
      else:
        array = value[0]  # sow keeps a tuple of calls
        array = array if scanned else array[None]  # [layers] or [layers, heads]
        if array.ndim == 2:
          for how, reduce in (('mean', jnp.mean), ('min', jnp.min), ('max', jnp.max)):
            parts.setdefault(f'{name}_{how}', []).append((index, reduce(array, axis=1)))
        else:
          parts.setdefault(name, []).append((index, array))

  for index, scanned, block in _blocks(sown):
    visit(block, index, scanned)
  out = {}
  for name, pieces in parts.items():
    index = np.concatenate([i for i, _ in pieces])
    assert sorted(index.tolist()) == list(range(num_layers)), (name, index)
    out[name] = jnp.zeros(num_layers, jnp.float32).at[index].set(
        jnp.concatenate([a for _, a in pieces]).astype(jnp.float32))
  return out


# ----------------------------------------------------------------------------- the step
def diagnostics_step(state: Any, batch: dict, *, model: Any, tx: optax.GradientTransformation,
                     loss_fn: Callable, micro_batches: int) -> dict[str, jax.Array]:
  """Every quantity of the module docstring as a [num_layers] array (pure; jit it).

  `loss_fn(params, images, labels, dropout_rng) -> (loss, logits)` is the train step's loss
  (`train.make_loss_fn`);
  `state` is the TrainState before the update the record describes.
  """
  num_layers = model.num_layers
  images, labels = batch['image'], batch['label']
  if micro_batches > 1:  # the first micro-batch, as train.split_batch takes it
    images, labels = images[::micro_batches], labels[::micro_batches]
  rng = jax.random.fold_in(state.rng, state.step)
  grads, _ = jax.grad(loss_fn, has_aux=True)(state.params, images, labels, rng)
  updates, _ = tx.update(grads, state.opt_state, state.params)
  g, p, u = (squared_norms(t, num_layers) for t in (grads, state.params, updates))
  out = {}
  for sub in SUBLAYERS:
    out[f'{sub}_grad_norm'] = jnp.sqrt(g[sub])
    out[f'{sub}_param_norm'] = jnp.sqrt(p[sub])
    out[f'{sub}_update_ratio'] = jnp.sqrt(u[sub]) / jnp.maximum(jnp.sqrt(p[sub]), 1e-30)

  _, sown = model.apply({'params': state.params}, images, train=False,
                        mutable=[attention.DIAGNOSTICS])
  act = sown_per_layer(sown[attention.DIAGNOSTICS], num_layers)
  out.update({k: act[k] for k in ('attn_branch_rms', 'mlp_branch_rms', 'stream_rms',
                                    'attn_entropy_mean', 'attn_entropy_min', 'attn_entropy_max',
                                    'attn_logit_max_mean')})
  out['attn_logit_max'] = act['attn_logit_max_max']  # the largest over heads
  return out


def jit_diagnostics_step(model, tx, loss_fn: Callable, micro_batches: int, state_sharding: Any,
                         batch_sharding: Any, out_sharding: Any) -> Callable:
  """`diagnostics_step` compiled for the train step's mesh; the state is read, not donated."""
  step = functools.partial(diagnostics_step, model=model, tx=tx, loss_fn=loss_fn,
                           micro_batches=micro_batches)
  return jax.jit(step, in_shardings=(state_sharding, batch_sharding), out_shardings=out_sharding)


# ----------------------------------------------------------------------------- records
def records(step: int, values: Mapping[str, Any]) -> list[dict]:
  """Host arrays of `diagnostics_step` -> one JSON-ready record per layer."""
  values = {k: np.asarray(v) for k, v in values.items()}
  num_layers = len(next(iter(values.values())))
  return [{'step': int(step), 'layer': layer,
           **{k: float(values[k][layer]) for k in QUANTITIES if k in values}}
          for layer in range(num_layers)]
