"""Gradient norm per layer at initialization, for several norm schemes and depths (~5 s a model).

Xiong et al. (2020, "On Layer Normalization in the Transformer Architecture") predict that at
initialization the gradient of the last layers of a post-LN Transformer does not shrink with the
depth L (hence its need for warmup), while pre-LN's shrinks about as 1/sqrt(L). This measures it
on real CIFAR batches of the config's data pipeline (the archive offline, or TFDS). Usage:

  python -m vit_jax.init_analysis --config=configs/cpu_quick.py --out=runs/init \
      --placements=pre,post,sandwich,deepnorm --depths=6,12,24,48 \
      --config.data.archive=../shared/data/cifar-100-binary-train.tar.gz

For each placement and depth: the config's model with that norm scheme and `num_layers`, its
parameters initialised from `config.seed` (scanned blocks: one compile per model, whatever the
depth), the classifier head drawn like a Dense kernel (lecun normal) instead of vit_jax's zeros,
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
from ml_collections import config_flags

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


def layer_grad_norms(config, placement: str, depth: int, batches: Sequence[dict],
                     num_classes: int) -> dict:
  """{'total', 'attn', 'mlp': per-layer gradient norms} of one model at initialization."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vit_jax import diagnostics, models, train  # pylint: disable=g-import-not-at-top
  model_config = config.model.copy_and_resolve_references()
  model_config.update(norm_placement=placement, num_layers=depth, scan=True, remat=False)
  model = models.create_model(model_config, num_classes)
  # One batch of all the images: the mean loss over equal batches is their mean.
  images = jnp.concatenate([jnp.asarray(b['image']) for b in batches])
  labels = jnp.concatenate([jnp.asarray(b['label']) for b in batches])

  @jax.jit  # one compile per model: init, head, gradient and the per-layer norms together
  def layer_squares(init_key, head_key, images, labels):
    params = model.init(init_key, images[:1])['params']
    head = params['head']['kernel']
    params['head']['kernel'] = jax.nn.initializers.lecun_normal()(head_key, head.shape, head.dtype)
    loss = lambda p: jnp.mean(train.cross_entropy(model.apply({'params': p}, images), labels))
    return diagnostics.squared_norms(jax.grad(loss)(params), depth)

  sq = jax.device_get(layer_squares(jax.random.key(config.seed), jax.random.key(config.seed + 1),
                                    images, labels))
  return {'attn': np.sqrt(sq['attn']).tolist(), 'mlp': np.sqrt(sq['mlp']).tolist(),
          'total': np.sqrt(sq['attn'] + sq['mlp']).tolist()}


def table(results: dict) -> str:
  lines = ['| placement | depth | first layer | last layer | last / first | last x sqrt(L) |',
           '|---|---|---|---|---|---|']
  for placement, per_depth in results.items():
    for depth, r in per_depth.items():
      first, last = r['total'][0], r['total'][-1]
      lines.append(f'| {placement} | {depth} | {first:.4g} | {last:.4g} | '
                   f'{last / max(first, 1e-30):.3g} | {last * math.sqrt(int(depth)):.4g} |')
  return '\n'.join(lines)


def plot(results: dict, path: str, title: str) -> str:
  from vit_jax import figure_plots  # pylint: disable=g-import-not-at-top
  return figure_plots.plot_layer_curves(
      {p: {f'L={d}': r['total'] for d, r in per_depth.items()} for p, per_depth in results.items()},
      path, title=title, ylabel='gradient norm at init (log scale)')


def main(argv: Sequence[str]) -> None:
  del argv
  if FLAGS.print_table:
    with open(FLAGS.print_table) as f:
      print(table(json.load(f)['results']))
    return
  if FLAGS.config is None or not FLAGS.out:
    raise app.UsageError('--config and --out are required (or --print_table=FILE)')
  import numpy as np  # pylint: disable=g-import-not-at-top
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
  results = {}
  for placement in placements:
    results[placement] = {}
    for depth in depths:
      results[placement][str(depth)] = layer_grad_norms(config, placement, depth, batches,
                                                        source.info.num_classes)
      print(f'{placement} L={depth}: last layer {results[placement][str(depth)]["total"][-1]:.4g}',
            flush=True)
  seconds = time.time() - t0
  os.makedirs(FLAGS.out, exist_ok=True)
  text = table(results)
  print(text)
  what = (f'{config.model.hidden_size} wide, patch {config.model.patch_size}, '
          f'{FLAGS.batches} x {FLAGS.batch_size} {config.data.dataset} training images')
  png = plot(results, os.path.join(FLAGS.out, 'init_grad_norms.png'),
             f'Gradient norm per layer at initialization ({what})')
  with open(os.path.join(FLAGS.out, 'init_grad_norms.json'), 'w') as f:
    json.dump({'command': ' '.join([sys.executable, '-m', 'vit_jax.init_analysis', *sys.argv[1:]]),
               'seconds': seconds, 'model': config.model.to_dict(), 'data': what,
               'results': results}, f, indent=1, default=str)
  print(f'wrote {os.path.join(FLAGS.out, png)} and init_grad_norms.json ({seconds:.0f} s)')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
