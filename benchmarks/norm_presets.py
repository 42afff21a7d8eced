"""Every normalization preset at one shape: parameter count and train-step speed relative to `pre`.

    python benchmarks/norm_presets.py [--config=cpu_fast] [--presets=all] [--rounds=3]
        [--steps=3] [--warmup=1] [--out=docs/results/norm_presets/cpu_fast_speed.json]

Each preset's train step is compiled once (benchmarks/train_step.py's `compile_ours`: the step
exactly as train.py builds it, on a fixed random batch of the config's shape). Then, in each
round, every preset is timed right after a timing of `pre`, so each ratio compares neighbours in
time on a VM whose speed drifts. Per preset and round: best-of-`--steps` images/sec, its ratio
to the `pre` timing just before it, and the ratio of process CPU seconds per image (`pre`'s over
the preset's; the load-independent cost, the one to read when something else shares the
machine). The medians over rounds are printed as a table and written to `--out` (JSON, with the
CPU model, the date and the command), which benchmarks/norm_table.py reads for docs/norms.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.dirname(os.path.abspath(__file__))):
  if path not in sys.path:
    sys.path.insert(0, path)

import train_step  # pylint: disable=g-import-not-at-top  (benchmarks/train_step.py)

BASELINE = 'pre'


def parameter_count(config) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import models, train  # pylint: disable=g-import-not-at-top
  model = models.create_model(config.model, train_step.NUM_CLASSES)
  shape = (config.data.image_size, config.data.image_size, 3)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(train.abstract_params(model, shape)))


def main(argv=None) -> int:
  from vit_jax import norms  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='cpu_fast', help=f'one of {train_step.CONFIGS}')
  parser.add_argument('--presets', default='all', help="comma-separated, or 'all'")
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--out', default='', help='JSON file for the results (optional)')
  args = parser.parse_args(argv)
  presets = list(norms.NORM_PRESETS) if args.presets == 'all' else args.presets.split(',')
  unknown = [p for p in presets if p not in norms.NORM_PRESETS]
  if unknown:
    parser.error(f'unknown presets {unknown}; valid: {", ".join(norms.NORM_PRESETS)}')
  if BASELINE not in presets:
    presets.insert(0, BASELINE)

  print(f'# {train_step.cpu_model()}; {train_step.device_summary()}; load {train_step.load_average()}')
  compiled, params = {}, {}
  for name in presets:
    config = train_step.load_config(args.config)
    config.model.norm_placement = name
    params[name] = parameter_count(config)
    compiled[name] = train_step.compile_ours(config, config.batch_size)
    print(f'compiled {name}: {params[name]:,} parameters, {compiled[name].compile_s:.1f} s',
          flush=True)

  speed = {name: [] for name in presets}
  wall_ratio = {name: [] for name in presets}
  cpu_ratio = {name: [] for name in presets}
  for r in range(args.rounds):
    for name in presets:
      rows = {}
      for which in ((BASELINE, name) if name != BASELINE else (BASELINE,)):
        c = compiled[which]
        times, cpus = train_step.run_steps(c, args.steps, args.warmup)
        rows[which] = (c.batch_size / min(times), min(cpus) / c.batch_size)
      speed[name].append(rows[name][0])
      wall_ratio[name].append(rows[name][0] / rows[BASELINE][0])
      cpu_ratio[name].append(rows[BASELINE][1] / rows[name][1])
    print(f'round {r + 1}/{args.rounds} done, load {train_step.load_average()}', flush=True)

  results = {}
  print(f'\n| preset | parameters | img/s (median) | speed vs {BASELINE} (wall) | '
        f'speed vs {BASELINE} (CPU time) |')
  print('|---|---|---|---|---|')
  for name in presets:
    results[name] = dict(parameters=params[name], img_per_sec=speed[name],
                         wall_ratio=wall_ratio[name], cpu_ratio=cpu_ratio[name],
                         compile_s=compiled[name].compile_s)
    print(f'| {name} | {params[name]:,} | {statistics.median(speed[name]):.1f} | '
          f'{statistics.median(wall_ratio[name]):.3f} | {statistics.median(cpu_ratio[name]):.3f} |')
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(dict(config=args.config, cpu=train_step.cpu_model(),
                     date=datetime.date.today().isoformat(),
                     command='python benchmarks/norm_presets.py ' + ' '.join(argv or sys.argv[1:]),
                     load_average_end=train_step.load_average(), presets=results), f, indent=1)
    print(f'wrote {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
