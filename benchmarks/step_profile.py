"""Where a train step's time goes, per HLO op: our full step against the minimal step.

    python benchmarks/step_profile.py [--config=cpu_fast] [--steps=3] [--top=15]

Both steps of the config's model (benchmarks/train_step.py's `compile_ours`, exactly as train.py
builds it, and benchmarks/reference_step.py's minimal one) run `--steps` steps under
`jax.profiler.trace`. Every executed HLO op's time (summed over the XLA threads, so it is CPU
time, not wall time) is grouped by what produced it: the JAX operation and scope in the op's
metadata (e.g. `transpose(jvp(VisionTransformer))/.../dot_general`, shortened to the part
after the model's scope). The table lists, per group, ms per step in ours and in the minimal
step and the difference, largest first; then the ops only ours has. Wall time per step is
printed beside, from the same traced steps.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.dirname(os.path.abspath(__file__))):
  if path not in sys.path:
    sys.path.insert(0, path)

_METADATA = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"', re.M)


def op_sources(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the JAX op_name in its metadata (fusions carry their root's)."""
  return {name: op_name for name, op_name in _METADATA.findall(hlo_text)}


def group_of(op_name: str) -> str:
  """A readable group for a JAX op_name: the primitive, under the model's outermost scope."""
  if not op_name:
    return '(no metadata: copies, buffers)'
  parts = op_name.split('/')
  primitive = parts[-1]
  autodiff = 'backward' if any(p.startswith('transpose(') for p in parts) else 'forward'
  in_model = [p for p in parts if 'VisionTransformer' in p or 'SwinTransformer' in p]
  if in_model:
    scopes = [p for p in parts[parts.index(in_model[0]) + 1:-1] if not p.startswith(('jvp', 'transpose'))]
    return f'model {autodiff}: {"/".join(scopes[:2])}/{primitive}'
  return f'outside the model: {"/".join(p for p in parts[1:] if not p.startswith("jit("))}'


def op_times(trace_dir: str) -> dict[str, float]:
  """Total ns per HLO op over every traced step, from the trace's XLA thread events."""
  import jax  # pylint: disable=g-import-not-at-top
  [path] = glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True)
  totals = collections.defaultdict(float)
  for plane in jax.profiler.ProfileData.from_file(path).planes:
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        if 'hlo_op' in stats:
          totals[stats['hlo_op']] += event.duration_ns
  return totals


def profile(run, hlo_text: str, steps: int) -> tuple[dict[str, float], float]:
  """(ms per step per group, wall s per step) of `steps` calls of `run` under the profiler."""
  import jax  # pylint: disable=g-import-not-at-top
  run()  # warm
  with tempfile.TemporaryDirectory() as trace_dir:
    t0 = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        run()
    wall = (time.perf_counter() - t0) / steps
    times = op_times(trace_dir)
  sources = op_sources(hlo_text)
  groups = collections.defaultdict(float)
  for op, ns in times.items():
    groups[group_of(sources.get(op, ''))] += ns / 1e6 / steps
  return groups, wall


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='cpu_fast')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--top', type=int, default=15)
  args = parser.parse_args(argv)

  import jax  # pylint: disable=g-import-not-at-top
  import reference_step  # pylint: disable=g-import-not-at-top
  import train_step  # pylint: disable=g-import-not-at-top
  print(f'# {train_step.cpu_model()}; {train_step.device_summary()}; load '
        f'{train_step.load_average()}')
  config = train_step.load_config(args.config)
  ours = train_step.compile_ours(config, config.batch_size)
  minimal, minimal_state, _ = reference_step.compile_reference(ours.model, ours.state.params,
                                                               ours.batch)
  box = {'ours': ours.state, 'minimal': minimal_state}

  def run_ours():
    box['ours'], metrics = ours.step(box['ours'], ours.batch)
    jax.block_until_ready(metrics)

  def run_minimal():
    params, opt_state = box['minimal']
    params, opt_state, loss = minimal(params, opt_state, ours.batch['image'], ours.batch['label'])
    box['minimal'] = (params, opt_state)
    jax.block_until_ready(loss)

  ours_groups, ours_wall = profile(run_ours, ours.step.as_text(), args.steps)
  ref_groups, ref_wall = profile(run_minimal, minimal.as_text(), args.steps)
  total_ours, total_ref = sum(ours_groups.values()), sum(ref_groups.values())
  print(f'{args.config}, batch {ours.batch_size}: wall {1e3 * ours_wall:.1f} ms/step ours, '
        f'{1e3 * ref_wall:.1f} minimal (ratio {ours_wall / ref_wall:.2f}); op time (CPU) '
        f'{total_ours:.1f} vs {total_ref:.1f} ms/step (ratio {total_ours / total_ref:.2f})\n')
  names = sorted(set(ours_groups) | set(ref_groups),
                 key=lambda g: -abs(ours_groups.get(g, 0) - ref_groups.get(g, 0)))
  print('| group (JAX op under its scope) | ours ms/step | minimal ms/step | difference |')
  print('|---|---|---|---|')
  for name in names[:args.top]:
    a, b = ours_groups.get(name, 0.0), ref_groups.get(name, 0.0)
    print(f'| {name} | {a:.2f} | {b:.2f} | {a - b:+.2f} |')
  only_ours = sum(v for k, v in ours_groups.items() if k not in ref_groups)
  print(f'\nops only ours has: {only_ours:.2f} ms/step in all '
        f'({100 * only_ours / max(total_ours, 1e-9):.1f}% of our op time)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
