"""docs/norms.md's preset table, printed from committed result files (no number typed by hand).

    python benchmarks/norm_table.py [--speed=docs/results/norm_presets/cpu_fast_speed.json]
        [--smoke=docs/results/norm_smoke] [--write=docs/norms.md]

One row per preset of vit_jax/norms.py: its formula and paper (`norms.PRESET_DOCS`), the
parameter count and the train-step speed relative to `pre` (benchmarks/norm_presets.py's JSON:
medians over rounds, by process CPU time per image and by wall time), and the final validation
top-1 of the smoke sweep (configs/norm_smoke.py: the metrics.jsonl files under --smoke).
A preset missing from a file gets '-'. `--write` replaces the text between the
`<!-- norm_table:begin -->` and `<!-- norm_table:end -->` lines of that file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from vit_jax import norms  # pylint: disable=g-import-not-at-top
from vit_jax import study_runs  # pylint: disable=g-import-not-at-top

BEGIN, END = '<!-- norm_table:begin -->', '<!-- norm_table:end -->'


def smoke_results(folder: str) -> dict[str, dict]:
  """preset -> {'top1', 'steps', 'minutes'} of each finished smoke run."""
  if not os.path.isdir(folder):
    return {}
  out = {}
  for run in study_runs.find_runs(folder):
    if run.status == 'finished':
      m = study_runs.run_metrics(run)
      out[run.placement] = dict(top1=m['final_val_top1'], steps=int(m['steps']),
                                minutes=m['train_minutes'])
  return out


def table(speed: dict, smoke: dict[str, dict]) -> str:
  presets = speed.get('presets', {})
  median = lambda name, key: statistics.median(presets[name][key]) if name in presets else None
  fmt = lambda v, f: '-' if v is None else format(v, f)
  lines = ['| preset | formula | paper | parameters | speed vs pre (CPU time / wall) | '
           'val top-1 (%) |', '|---|---|---|---|---|---|']
  for name, (formula, paper) in norms.PRESET_DOCS.items():
    params = presets.get(name, {}).get('parameters')
    ratio = (f'{median(name, "cpu_ratio"):.2f} / {median(name, "wall_ratio"):.2f}'
             if name in presets else '-')
    top1 = smoke.get(name, {}).get('top1')
    lines.append(f'| `{name}` | {formula} | {paper} | {fmt(params, ",")} | {ratio} | '
                 f'{fmt(None if top1 is None else 100 * top1, ".2f")} |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--speed', default=os.path.join(ROOT, 'docs/results/norm_presets/cpu_fast_speed.json'))
  parser.add_argument('--smoke', default=os.path.join(ROOT, 'docs/results/norm_smoke'))
  parser.add_argument('--write', default='', help='a markdown file with the two marker lines')
  args = parser.parse_args(argv)
  speed = {}
  if os.path.exists(args.speed):
    with open(args.speed) as f:
      speed = json.load(f)
  smoke = smoke_results(args.smoke)
  text = table(speed, smoke)
  if speed:
    text += (f"\n\nParameters and speed: `{speed['command']}` ({speed['config']} shape, "
             f"{speed['date']}, {speed['cpu']}; load average at the end {speed['load_average_end']}).")
  if smoke:
    steps = {r['steps'] for r in smoke.values()}
    minutes = statistics.median(r['minutes'] for r in smoke.values())
    text += (f'\nVal top-1: configs/norm_smoke.py, seed 0, {len(smoke)} finished runs of '
             f'{"/".join(map(str, sorted(steps)))} steps (median {minutes:.1f} min of training '
             'each), final validation on the 5,000 held-out images.')
  print(text)
  if args.write:
    with open(args.write) as f:
      doc = f.read()
    if BEGIN not in doc or END not in doc:
      parser.error(f'{args.write} lacks the lines {BEGIN} and {END}')
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(args.write, 'w') as f:
      f.write(f'{head}{BEGIN}\n{text}\n{END}{tail}')
    print(f'wrote {args.write}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
