"""What the training diagnostics cost: one diagnostics pass against the train step, per config.

    python benchmarks/diagnostics_cost.py [--configs=cpu_quick,cpu_fast] [--every=100]
        [--rounds=3] [--steps=5]

Per config: the train step (benchmarks/train_step.py's `compile_ours`, as train.py builds it) and
`vit_jax.diagnostics.diagnostics_step` compiled for the same model, optimizer, mesh and batch;
then, per round, `--steps` train steps and one diagnostics pass are timed back to back (wall
and process CPU seconds, best of the round). The cost at interval N is
t_diagnostics / (N x t_step): the fraction the loop's time grows by with
`config.diagnostics_every=N`. Printed per config with the CPU model; medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.dirname(os.path.abspath(__file__))):
  if path not in sys.path:
    sys.path.insert(0, path)

import train_step  # pylint: disable=g-import-not-at-top  (benchmarks/train_step.py)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--configs', default='cpu_quick,cpu_fast')
  parser.add_argument('--every', type=int, default=100, help='config.diagnostics_every')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=5)
  args = parser.parse_args(argv)

  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import diagnostics, train  # pylint: disable=g-import-not-at-top
  print(f'# {train_step.cpu_model()}; {train_step.device_summary()}; load {train_step.load_average()}')
  print(f'\n| config | step s | diagnostics s | pass / step | cost at every={args.every} |')
  print('|---|---|---|---|---|')
  for name in args.configs.split(','):
    config = train_step.load_config(name)
    c = train_step.compile_ours(config, config.batch_size)
    diagnose = diagnostics.jit_diagnostics_step(
        c.model, c.tx, train.make_loss_fn(c.model, c.config.label_smoothing),
        c.config.grad_accum_steps, c.state_sharding, train.batch_sharded(c.mesh),
        train.replicated(c.mesh))
    jax.block_until_ready(diagnose(c.state, c.batch))  # compile
    steps, passes = [], []
    for _ in range(args.rounds):
      times, _ = train_step.run_steps(c, args.steps, 1)
      steps.append(min(times))
      best = float('inf')
      for _ in range(2):
        t0 = time.perf_counter()
        jax.block_until_ready(diagnose(c.state, c.batch))
        best = min(best, time.perf_counter() - t0)
      passes.append(best)
    step_s, pass_s = statistics.median(steps), statistics.median(passes)
    print(f'| {name} | {step_s:.4f} | {pass_s:.4f} | {pass_s / step_s:.2f} | '
          f'{100 * pass_s / (args.every * step_s):.2f}% |', flush=True)
  print(f'\nload average at end: {train_step.load_average()}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
