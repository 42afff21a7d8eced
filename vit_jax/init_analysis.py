"""Gradient norm per layer at initialization, for several norm schemes and depths (seconds).

Xiong et al. (2020, "On Layer Normalization in the Transformer Architecture") predict that at
initialization the gradient of the last layers of a post-LN Transformer does not shrink with the
depth L (hence its need for warmup), while pre-LN's shrinks about as 1/sqrt(L). This measures it
on real CIFAR batches of the config's data pipeline (the archive offline, or TFDS). Usage:

  python -m vit_jax.init_analysis --config=configs/cpu_quick.py --out=runs/init \
      --placements=pre,post,sandwich,deepnorm --depths=6,12,24,48 \
      --config.data.archive=../shared/data/cifar-100-binary-train.tar.gz

For each placement and depth: the config's model with that norm scheme and `num_layers`, its
parameters initialised from `config.seed` (the embedding and head from it, block l from a key
folded from it), the classifier head drawn like a Dense kernel (lecun normal) instead of vit_jax's zeros,
which would make every body gradient exactly zero at step 0, and dropout off; then the gradient
of the mean cross-entropy over `--batches` training batches of `--batch_size` images. Per layer:
the norm of the gradient of the block's parameters (attention and MLP sublayers, their norms
included; vit_jax/diagnostics.py groups them). It prints a table (first and last layer, and
last x sqrt(L), constant when the 1/sqrt(L) law holds; `--print_table=FILE` prints it again from
a written JSON) and writes to --out:
  init_grad_norms.png   gradient norm (log) against layer index, a panel per placement, a line
                        per depth
  init_grad_norms.json  every number, with the command and the config
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Sequence

if __name__ == '__main__' and not __package__:  # run as a file: `vit_jax` from the repo root
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from vit_jax import diagnostics
from vit_jax import hardware
from vit_jax import models
from vit_jax import report_dynamics
from vit_jax import train

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as a program: the study tools' flags would collide in one process (tests)."""
  config_flags.DEFINE_config_file('config', None, 'A training config (its data and model shape).')
  flags.DEFINE_string('out', None, 'Folder for init_grad_norms.png / .json.')
  flags.DEFINE_string('placements', 'pre,post,sandwich,deepnorm',
                      "Norm presets, ','-separated, or specs (vit_jax/norms.py), ';'-separated "
                      "(e.g. 'pre;pre,mixln=0.5').")
  flags.DEFINE_list('depths', ['6', '12', '24', '48'], 'Encoder depths (num_layers).')
  flags.DEFINE_integer('batches', 2, 'Training batches the gradient is averaged over.')
  flags.DEFINE_integer('batch_size', 64, 'Images per batch.')
  flags.DEFINE_string('print_table', '', 'Only print the table of an init_grad_norms.json (e.g. '
                      'docs/results/init_analysis/init_grad_norms.json) and exit.')


# ----------------------------------------------------------------------------- block by block
# A whole-model jit compiles once per (scheme, depth): ~3 s each on 2 cores, most of the runtime.
# But a scheme's blocks are the same computation at every depth, and its embedding and head too.
# So the embedding and head compile once per scheme, each distinct block once (its init+forward
# and its backward), and the layer loop runs here: the forward pass block by block, then the chain
# rule back through the blocks (jax.vjp), which gives each block's parameter gradient exactly.


def _skipping_blocks(first_output=None):
  """A flax interceptor under which every encoder block is the identity, and the (module, args)
  of each block call; with `first_output`, the first block returns it (the blocks' output)."""
  calls = []

  def interceptor(next_fun, args, kwargs, context):
    if not (isinstance(context.module, models.Encoder1DBlock) and
            context.method_name == '__call__'):
      return next_fun(*args, **kwargs)
    calls.append((context.module, args))
    return first_output if first_output is not None and len(calls) == 1 else args[0]
  return interceptor, calls


def _stem_and_head(model):
  """Jitted (init -> (params without blocks, block-0 input), head gradient) of `model`."""
  @jax.jit
  def init(init_key, head_key, images):
    interceptor, calls = _skipping_blocks()
    with nn.intercept_methods(interceptor):
      params = model.init(init_key, images)['params']
    head = params['head']['kernel']
    params['head']['kernel'] = jax.nn.initializers.lecun_normal()(head_key, head.shape, head.dtype)
    return params, calls[0][1][0]  # x0: [batch, tokens, width] (a pair with ResiDual)

  @jax.jit
  def head_grad(params, images, labels, x_last):  # d mean-loss / d (the last block's output)
    def loss(x):
      interceptor, _ = _skipping_blocks(first_output=x)
      with nn.intercept_methods(interceptor):
        logits = model.apply({'params': params}, images)
      return jnp.mean(train.cross_entropy(logits, labels))
    return jax.grad(loss)(x_last)
  return init, head_grad


@functools.partial(jax.jit, static_argnums=0)  # one compile per distinct block
def _block_init_forward(block, key, x, drop_rate, in_scale):
  output, variables = block.init_with_output(key, x, drop_rate, in_scale, False)
  return variables['params'], output


@functools.partial(jax.jit, static_argnums=0)
def _block_backward(block, params, x, drop_rate, in_scale, g_output):
  """(attn, mlp) squared gradient norms of the block's parameters and the gradient of its input."""
  _, pullback = jax.vjp(lambda p, y: block.apply({'params': p}, y, drop_rate, in_scale, False),
                        params, x)
  g_params, g_input = pullback(g_output)
  sq = diagnostics.squared_norms({'Transformer': {'encoderblock_0': g_params}}, 1)
  return sq['attn'][0], sq['mlp'][0], g_input


def layer_grad_norms(config, placement: str, depth: int, batches: Sequence[dict],
                     num_classes: int, compiled: dict | None = None) -> dict:
  """{'total', 'attn', 'mlp': per-layer gradient norms, 'params': the model's params} at init.

  `compiled` (a dict, kept across calls) holds the jitted embedding and head, so that a scheme's
  compile once whatever the depths (the blocks' jit caches by block).
  """
  compiled = {} if compiled is None else compiled
  model_config = config.model.copy_and_resolve_references()
  model_config.update(norm_placement=placement, num_layers=depth, scan=False, remat=False,
                      dropout_rate=0.0, attention_dropout_rate=0.0, head_dropout_rate=0.0)
  model = models.create_model(model_config, num_classes)
  spec = model.norm_spec()
  # One batch of all the images: the mean loss over equal batches is their mean.
  images = jnp.concatenate([jnp.asarray(b['image']) for b in batches])
  labels = jnp.concatenate([jnp.asarray(b['label']) for b in batches])

  # What the embedding and head compute depends on the depth only through these.
  key = ('stem', tuple((f.name, getattr(model, f.name)) for f in dataclasses.fields(model)
                       if f.name not in ('num_layers', 'parent', 'name')),
         spec.patch, spec.encoder, spec.residual, spec.types)
  if key not in compiled:
    compiled[key] = _stem_and_head(model)
  init, head_grad = compiled[key]
  init_key, head_key = jax.random.key(config.seed), jax.random.key(config.seed + 1)
  params, x = init(init_key, head_key, images)

  # The blocks' modules and arguments, from an abstract pass (no compile).
  interceptor, calls = _skipping_blocks()
  with nn.intercept_methods(interceptor):
    jax.eval_shape(model.init, init_key, images[:1])
  assert len(calls) == depth, (len(calls), depth)
  blocks = []
  for module, (_, drop_rate, in_scale, _) in calls:
    # Blocks differ by their own norms and the spec's scalars, not by the other layers.
    block = module.clone(parent=None, name=None, norm_spec=dataclasses.replace(spec, layers=()))
    blocks.append((block, jnp.float32(drop_rate), jnp.float32(in_scale)))
  block_keys = jax.random.split(jax.random.fold_in(init_key, 1), depth)
  inputs, block_params = [], []
  for (block, drop_rate, in_scale), k in zip(blocks, block_keys):
    inputs.append(x)
    p, x = _block_init_forward(block, k, x, drop_rate, in_scale)
    block_params.append(p)

  g = head_grad(params, images, labels, x)
  sq_attn, sq_mlp = np.zeros(depth), np.zeros(depth)
  for layer in reversed(range(depth)):
    block, drop_rate, in_scale = blocks[layer]
    a, m, g = _block_backward(block, block_params[layer], inputs[layer], drop_rate,
                                                in_scale, g)
    sq_attn[layer], sq_mlp[layer] = float(a), float(m)
  params['Transformer'].update(
      {f'encoderblock_{i}': p for i, p in enumerate(block_params)})
  return {'attn': np.sqrt(sq_attn).tolist(), 'mlp': np.sqrt(sq_mlp).tolist(),
          'total': np.sqrt(sq_attn + sq_mlp).tolist(), 'params': params}


def table(results: dict) -> str:
  lines = ['| placement | depth | first layer | last layer | last / first | last x sqrt(L) |',
           '|---|---|---|---|---|---|']
  for placement, per_depth in results.items():
    for depth, r in per_depth.items():
      first, last = r['total'][0], r['total'][-1]
      lines.append(f'| {placement} | {depth} | {first:.4g} | {last:.4g} | '
                   f'{last / max(first, 1e-30):.3g} | {last * math.sqrt(int(depth)):.4g} |')
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> None:
  del argv
  if FLAGS.print_table:
    with open(FLAGS.print_table) as f:
      print(table(json.load(f)['results']))
    return
  if FLAGS.config is None or not FLAGS.out:
    raise app.UsageError('--config and --out are required (or --print_table=FILE)')
  from vit_jax import data, norms, validation  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  depths = [int(d) for d in FLAGS.depths]
  problems = []
  placements = FLAGS.placements.split(';' if ';' in FLAGS.placements else ',')
  for placement in placements:
    for depth in depths:
      try:
        norms.parse_spec(placement, depth, config.model.norm_type)
      except ValueError as e:
        problems.append(f'--placements={placement} at depth {depth}: {e}')
  if problems or any(d < 1 for d in depths):
    raise app.UsageError('\n'.join(problems) or f'--depths={FLAGS.depths}: positive integers')
  validation.validate_config(config)  # data and model fields, before any download or compile

  t0 = time.time()
  source = data.load_data(config.data)
  stream = data.create_train_iterator(config.data, global_batch_size=FLAGS.batch_size,
                                      seed=config.seed, start_step=0, source=source)
  batches = []
  for _ in range(FLAGS.batches):
    batch = next(stream)
    batches.append({'image': np.asarray(batch['image']), 'label': np.asarray(batch['label'])})
  results, compiled = {}, {}
  for placement in placements:
    results[placement] = {}
    for depth in depths:
      r = layer_grad_norms(config, placement, depth, batches, source.info.num_classes, compiled)
      del r['params']
      results[placement][str(depth)] = r
      print(f'{placement} L={depth}: last layer {results[placement][str(depth)]["total"][-1]:.4g}',
            flush=True)
  seconds = time.time() - t0
  os.makedirs(FLAGS.out, exist_ok=True)
  text = table(results)
  print(text)
  what = (f'{config.model.hidden_size} wide, patch {config.model.patch_size}, '
          f'{FLAGS.batches} x {FLAGS.batch_size} {config.data.dataset} training images')
  png = report_dynamics.plot_init(results, os.path.join(FLAGS.out, 'init_grad_norms.png'), what)
  with open(os.path.join(FLAGS.out, 'init_grad_norms.json'), 'w') as f:
    json.dump({'command': ' '.join([sys.executable, '-m', 'vit_jax.init_analysis', *sys.argv[1:]]),
               'seconds': seconds, 'cpu': hardware.cpu_model(), 'cores': os.cpu_count(),
               'model': config.model.to_dict(), 'data': what,
               'results': results}, f, indent=1, default=str)
  print(f'wrote {os.path.join(FLAGS.out, png)} and init_grad_norms.json ({seconds:.0f} s)')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
