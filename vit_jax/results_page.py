"""docs/results/README.md: the normalization study's page, written from its committed files only.

Why a program: the page's every number (accuracies, intervals, tests, init gradients, stable
learning rates, CPU-hours) must come from the result files, and its findings must say what those
numbers say, however many runs are done. This rebuilds each study's report (report.md, figures,
summary.json) from the files that `vit_jax.publish` copied, then writes the page:

  python -m vit_jax.results_page docs/results

Studies read: ACCURACY (schemes x seeds, tested against pre; its init/ analysis of every
scheme) and STABILITY (learning rate x warmup). The findings' rules: `vit_jax.study_findings`.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections.abc import Sequence

if __name__ == '__main__' and not __package__:  # run as a file: `vit_jax` from the repo root
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from vit_jax import report
from vit_jax import report_dynamics
from vit_jax import study_runs
from vit_jax import study_findings

ACCURACY = 'study_norms_cpu'
STABILITY = 'study_stability_cpu'
PAGE = 'README.md'

COMMANDS = '''```bash
ARCHIVE=--config.data.archive=../shared/data/cifar-100-binary-train.tar.gz
# on a new machine (runs/ is not in git): put the published runs back, so the sweeps skip them
python -m vit_jax.publish --restore docs/results/study_norms_cpu runs/study_norms_cpu
python -m vit_jax.publish --restore docs/results/study_stability_cpu runs/study_stability_cpu
# 1. gradient norms at init: every preset at depths 6/12/24/48, width 128 (a few minutes)
python -m vit_jax.init_analysis --config=configs/study_norms_cpu.py --out=runs/study_norms_cpu/init \\
    --placements=$(python -c "from vit_jax import norms; print(','.join(norms.NORM_PRESETS))") \\
    --depths=6,12,24,48 $ARCHIVE
# 2. accuracy: 13 schemes x 3 seeds (resumable: rerun to go on)
python -m vit_jax.sweep --config=configs/study_norms_cpu.py --workdir=runs/study_norms_cpu $ARCHIVE
# 3. stability: 7 schemes x 4 learning rates x 2 warmups, 500 steps (resumable)
python -m vit_jax.sweep --config=configs/study_stability_cpu.py --workdir=runs/study_stability_cpu $ARCHIVE
# after each session: copy the finished runs' small files here, then rebuild reports and this page
python -m vit_jax.publish runs/study_norms_cpu docs/results/study_norms_cpu --baseline=pre
python -m vit_jax.publish runs/study_stability_cpu docs/results/study_stability_cpu
python -m vit_jax.results_page docs/results
```'''

LIMITS = '''- **Scale.** A {layers}-layer, width-{width} ViT on {tokens} tokens of {image}-pixel images,
  trained for {steps:,} steps ({epochs:.1f} epochs) on {train_images:,} images: far from the
  depths and budgets where post-LN's instability and DeepNorm's or Mix-LN's remedies were
  reported (24 to 1,000 layers). Schemes whose benefit grows with depth can look neutral here;
  the init analysis (to {max_depth} layers) is the only part that reaches those depths, and it
  looks at initialization only.
- **Seeds.** {seeds} seeds per scheme: only differences of roughly a point or more, consistent
  across seeds, can pass the Holm-adjusted tests. "Indistinguishable" means *not shown
  different*, not *shown equal*.
- **One recipe.** Every scheme uses pre-LN's recipe (peak learning rate {lr:g}, warmup
  {warmup:g} of the steps). A scheme that needs another learning rate is judged at this one;
  the stability grid shows how each responds to the learning rate and warmup, at a shorter
  budget and with one seed.
- **Validation, not test.** The numbers are on {val_images:,} images held out of the training
  split; the official test split was not used.'''


# ----------------------------------------------------------------------------- numbers
def hours_left(study_dir: str, done: int, planned: int) -> float | None:
  """Wall hours the study's unfinished runs need at its median finished run (None before any)."""
  seconds = [r.train_seconds for r in study_runs.find_runs(study_dir)
             if r.status == 'finished'] if done else []
  return statistics.median(seconds) * (planned - done) / 3600 if seconds else None


def _done_records(study_dirs: Sequence[str]):
  """(run, its DONE record) for every run of the studies that the sweep marked done."""
  for study_dir in study_dirs:
    if os.path.isdir(study_dir):
      for run in study_runs.find_runs(study_dir):
        done = study_runs.read_json(os.path.join(study_dir, run.workdir, study_runs.DONE_FILE))
        if done:
          yield run, done


def _runs_done(study_dir: str) -> tuple[int, int]:
  """(finished or diverged runs, planned runs) of a published study."""
  if not os.path.isdir(study_dir):
    return 0, 0
  plan = study_runs.read_json(os.path.join(study_dir, study_runs.SWEEP_FILE)) or {}
  done = [r for r in study_runs.find_runs(study_dir) if r.status in ('finished', 'diverged')]
  return len(done), len(plan.get('runs', [])) or len(done)


def setup(study_dir: str) -> dict:
  """The scale of a study's runs, read from its first finished run (config.json, metrics)."""
  finished = [r for r in study_runs.find_runs(study_dir) if r.status == 'finished']
  if not finished:
    return {}
  run, config = finished[0], finished[0].config
  last_train, last_val = run.metrics['train'][-1], run.metrics['val'][-1]
  steps, batch = int(config['total_steps']), int(config['batch_size'])
  epochs = float(last_train['epoch'])
  grid = int(config['data.image_size']) // int(config['model.patch_size'])
  plan = study_runs.read_json(os.path.join(study_dir, study_runs.SWEEP_FILE)) or {}
  return {'layers': config['model.num_layers'], 'width': config['model.hidden_size'],
          'tokens': grid * grid, 'image': config['data.image_size'], 'steps': steps,
          'epochs': epochs, 'train_images': round(steps * batch / epochs),
          'val_images': last_val['num_examples'], 'lr': float(config['learning_rate']),
          'warmup': float(config['warmup_fraction']),
          'seeds': len(plan.get('seeds', [])) or len({r.seed for r in finished}),
          'schemes': len(plan.get('norm_placements', [])) or len({r.placement for r in finished})}


def machine_table(study_dirs: Sequence[str]) -> str:
  """CPU time per machine type: each finished run's training and validation time from its
  metrics.jsonl with pauses taken out (Run.train_seconds), on the CPU its DONE record
  names, plus the init analysis's own record. DONE's `seconds` is not used: it is the last
  invocation's wall clock, pauses included, and misses the time before a resume."""
  hours: dict[tuple[str, int], list[float]] = {}
  for run, done in _done_records(study_dirs):
    key = (done.get('cpu', 'not recorded'), int(done.get('cores') or 0))
    hours.setdefault(key, []).append(run.train_seconds / 3600)
  for study_dir in study_dirs:
    init = study_runs.read_json(os.path.join(study_dir, report_dynamics.INIT_NUMBERS))
    if init and 'seconds' in init:
      key = (init.get('cpu', 'not recorded'), int(init.get('cores') or 0))
      hours.setdefault(key, []).append(float(init['seconds']) / 3600)
  rows = ['| CPU | cores | runs | wall hours | core-hours |', '|---|---|---|---|---|']
  total_wall = total_core = 0.0
  for (cpu, cores), values in sorted(hours.items()):
    wall = sum(values)
    total_wall += wall
    total_core += wall * cores
    rows.append(f'| {cpu} | {cores or "?"} | {len(values)} | {wall:.2f} | '
                f'{wall * cores:.2f} |' if cores else f'| {cpu} | ? | {len(values)} | {wall:.2f} | — |')
  known = all(cores for _, cores in hours)
  rows.append(f'| **total** | | {sum(len(v) for v in hours.values())} | **{total_wall:.2f}** | '
              + (f'**{total_core:.2f}** |' if known else f'at least {total_core:.2f} |'))
  return '\n'.join(rows)


def code_line(study_dirs: Sequence[str]) -> str:
  """Which commits trained the published runs (DONE's `code`, written by vit_jax.sweep)."""
  counts: dict[str, int] = {}
  for _, done in _done_records(study_dirs):
    code = done.get('code', 'not recorded')
    counts[code] = counts.get(code, 0) + 1
  return 'Code: ' + (', '.join(f'`{code}` ({n} runs)' if code != 'not recorded' else
                               f'not recorded ({n} runs, finished before the sweep recorded it)'
                               for code, n in sorted(counts.items())) or 'no finished runs') + '.'


def accuracy_section(summary: dict) -> tuple[list[str], dict[str, str]]:
  """The results table (one row per scheme) and each scheme's verdict against the baseline."""
  alpha = summary['alpha']
  against = {c['a']: c for c in summary['comparisons'] if c['b'] == study_findings.BASELINE}
  lines = ['| scheme | seeds | final val top-1 (%): mean ± std [95% CI] | − pre (pp) [95% CI] '
           '| p (Holm) | vs pre |', '|---|---|---|---|---|---|']
  verdicts = {}
  for label, numbers in summary['groups'].items():
    s = numbers['final_val_top1']
    pct = study_findings.pct
    cell = (f'{pct(s["mean"])} ± {pct(s["std"])} [{pct(s["ci_low"])}, {pct(s["ci_high"])}]'
            if s['n'] >= 2 else pct(s['mean']))
    c = against.get(label)
    verdicts[label] = ('(baseline)' if label == study_findings.BASELINE else
                       study_findings.verdict(c, alpha))
    if c and c['n'] >= 2:
      diff = (f'{100 * c["mean_diff"]:+.2f} [{100 * c["ci_low"]:+.2f}, '
              f'{100 * c["ci_high"]:+.2f}]')
      p = '—' if math.isnan(c['p_holm']) else f'{c["p_holm"]:.4f}'
    else:
      diff = p = '—'
    lines.append(f'| {label} | {s["n"]} | {cell} | {diff} | {p} | {verdicts[label]} |')
  return lines, verdicts


# ----------------------------------------------------------------------------- the page
def build_page(results_dir: str) -> str:
  accuracy_dir = os.path.join(results_dir, ACCURACY)
  stability_dir = os.path.join(results_dir, STABILITY)
  lines = ['# Results: where should the normalization layers sit in a small ViT on CIFAR-100?', '',
           f'*Written by `python -m vit_jax.results_page {results_dir}` from the files in this '
           'folder (do not edit by hand): every number below comes from them.*', '']
  done_a, planned_a = _runs_done(accuracy_dir)
  done_s, planned_s = _runs_done(stability_dir)
  init = study_runs.read_json(os.path.join(accuracy_dir, report_dynamics.INIT_NUMBERS)) or {}
  grid = f'{done_s}/{planned_s} runs' if planned_s else 'not started'
  status = (f'**Status**: accuracy study {done_a}/{planned_a} runs, stability grid {grid}, '
            'init analysis '
            f'{len(init.get("results", {}))} schemes.')
  if done_a < planned_a or done_s < planned_s:
    status += (' The study is still running: the findings below are those of the runs done so '
               'far, and change as runs finish.')
    left = {study: hours_left(folder, done, planned) for study, folder, done, planned in (
        ('accuracy', accuracy_dir, done_a, planned_a), ('stability', stability_dir, done_s, planned_s))
            if done < planned}
    if any(hours is not None for hours in left.values()):
      status += (' Wall time left, at the median finished run: ' + ', '.join(
          f'{study} ~{hours:.1f} h' for study, hours in left.items() if hours is not None) + '.')
  lines += [status, '', '## How it was run', '', COMMANDS, '', '### Machines and CPU time', '',
            machine_table([accuracy_dir, stability_dir]), '',
            'Wall hours: each finished run\'s training and validation time from its metrics.jsonl, '
            'summed over resumes, with pauses taken out (an interval between two log lines over '
            f'{study_runs.PAUSE_FACTOR:g}x the run\'s median counts as the median); process '
            'start-up and the '
            'final evaluation are not counted. Core-hours: wall hours x the cores the run had.', '',
            code_line([accuracy_dir, stability_dir]), '']

  summary_a = report.build_report(accuracy_dir, baseline=study_findings.BASELINE) if done_a else None
  summary_s = report.build_report(stability_dir) if done_s else None
  verdicts: dict[str, str] = {}
  scale, short = setup(accuracy_dir) if done_a else {}, setup(stability_dir) if done_s else {}
  depths = sorted(int(d) for per_depth in init.get('results', {}).values() for d in per_depth)
  lines += ['## Accuracy' + (f': {scale["schemes"]} schemes × {scale["seeds"]} seeds'
                             if scale else ''), '',
            'configs/study_norms_cpu.py; final validation top-1 after the last step; paired '
            't-test against `pre` over seeds (same seed = same data order and init), '
            'Holm-adjusted over the schemes. '
            + (f'The 95% CI of a difference is that comparison\'s alone (not adjusted): it can '
               f'exclude 0 while the Holm-adjusted test, which allows for the '
               f'{len(summary_a["comparisons"])} comparisons, does not reject. '
               if summary_a and summary_a['comparisons'] else '')
            + f'Full report: [{ACCURACY}/report.md]({ACCURACY}/report.md).', '']
  if summary_a:
    table, verdicts = accuracy_section(summary_a)
    lines += table + ['', f'![final accuracy]({ACCURACY}/final_accuracy.png)', '',
                      f'![curves]({ACCURACY}/curves.png)', '']
  else:
    lines += ['(no finished runs yet)', '']

  lines += ['## Findings', '']
  if summary_a:
    lines += study_findings.accuracy_findings(summary_a, verdicts)
  lines += study_findings.init_findings(init) if init else ['- Init analysis: not published yet.']
  lines += (study_findings.stability_findings(summary_s)
            + study_findings.best_learning_rates(stability_dir, scale.get('lr'))
            if summary_s else ['- Stability grid: no finished runs yet.'])
  lines += ['']

  lines += ['## Why: the diagnostics', '',
            'Gradient norm per layer at initialization, every scheme at depths '
            f'{", ".join(map(str, sorted(set(depths))))} '
            '(`vit_jax/init_analysis.py`):', '',
            f'![init]({ACCURACY}/{report_dynamics.INIT_FIGURE})', '']
  if summary_s and report_dynamics.STABILITY_FIGURE in summary_s['figures']:
    lines += [f'Final val top-1 over learning rate × warmup ({short.get("steps", "?")} steps, '
              f'{short.get("seeds", "?")} seed(s)); diverged '
              f'and stalled runs marked ([report]({STABILITY}/report.md)):', '',
              f'![stability]({STABILITY}/{report_dynamics.STABILITY_FIGURE})', '']
    if report_dynamics.STABILITY_LOSS_FIGURE in summary_s['figures']:
      lines += ['The training loss of each cell (a line per learning rate and warmup):', '',
                f'![stability loss]({STABILITY}/{report_dynamics.STABILITY_LOSS_FIGURE})', '']
  dynamics = [f for f in (summary_a or {}).get('figures', []) if f.startswith('dynamics_')]
  if dynamics:
    lines += ['Per scheme, from its first seed\'s `diagnostics.jsonl`: gradient norm by layer '
              'over training, residual-stream RMS and attention entropy by depth at the first '
              'and last record:', '']
    lines += [f'- [{f[len("dynamics_"):-len(".png")]}]({ACCURACY}/{f})' for f in dynamics] + ['']
  if summary_a:
    lines += study_findings.dynamics_findings(accuracy_dir, summary_a) + ['']
  if scale:
    lines += ['## Limits', '', LIMITS.format(max_depth=max(depths, default=0), **scale), '']
  path = os.path.join(results_dir, PAGE)
  with open(path, 'w') as f:
    f.write('\n'.join(lines))
  return path


def main(argv: Sequence[str]) -> int:
  if len(argv) != 2 or argv[1].startswith('--'):
    print('usage: python -m vit_jax.results_page RESULTS_DIR   (e.g. docs/results)', file=sys.stderr)
    return 2
  print(f'wrote {build_page(argv[1])}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
