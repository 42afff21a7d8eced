"""The study report: statistics over seeds, a markdown table per placement, and figures.

Why: one run per placement, read off a training log, cannot tell a real effect of the LayerNorm
placement from seed noise. This reads every run of a study folder (as `vit_jax.sweep` lays it out,
or any folder of run workdirs), groups the runs by the config fields that differ between them
(the norm placement and any extra sweep axes; never the seed), and writes into the study folder:

  report.md            one row per placement: mean ± sample std and a 95% t-interval over seeds;
                       paired t-tests (matched on seed) between every pair of placements, or of
                       each against `--baseline` (e.g. pre), with Holm's correction for the
                       number of tests; one row per run.
  curves.png           train / val loss and top-1 against step: mean over seeds, band = ±1 std.
  learning_rate.png    the learning rate each placement was trained with.
  final_accuracy.png   final val top-1 / top-5 per placement: bars = mean, whiskers = 95% CI,
                       dots = the individual seeds.
  stability.png, stability_loss.png
                       when the runs vary the learning rate (a grid, one seed per cell): final
                       val top-1 per cell and each cell's training loss, *instead of* the three
                       figures above, whose dozens of overlaid conditions no one could read.
  dynamics_<placement>.png, and the study's init-analysis figure: the training dynamics
                       (vit_jax/report_dynamics.py), when the runs wrote diagnostics.jsonl.
  Every figure is a 256-colour PNG (figure_plots.save): they are re-committed after every run.
  With one seed per condition there is nothing to test: the report says so instead of a table.
  summary.json         the same numbers for programs.

  python -m vit_jax.report runs/study [--baseline=pre]

Only finished runs (their last train line is at the configured total step) enter the statistics;
the others are listed with their state (diverged runs also enter the stability grid), so the
report can be built while a sweep is running.
Reading the run folders and grouping them is `vit_jax.study_runs`; the statistics (t-intervals,
paired t-tests, Holm) are `vit_jax.study_stats`. This module turns them into tables and figures.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import sys
from collections.abc import Sequence

if __name__ == '__main__' and not __package__:  # run as a file: `vit_jax` from the repo root
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

from vit_jax import report_dynamics
from vit_jax import figure_plots
from vit_jax import study_runs
from vit_jax import study_stats

ALPHA = 0.05               # family-wise error rate of the paired tests (Holm)
FIG_DPI = 120
CURVE_FIGSIZE = (13, 10)
CURVE_HUES = 10                   # tab10's distinct colours; past ten the line style changes
CURVE_STYLES = ('-', '--', ':')   # groups 1-10, 11-20, 21-30
BAR_FIGSIZE = (12, 5)
LR_FIGSIZE = (8, 4.5)
CONDITION_FIGURES = ('curves.png', 'learning_rate.png', 'final_accuracy.png')  # not for LR grids
# Every top-level figure a report may draw (besides dynamics_<placement>.png): a rebuild removes
# those it did not draw this time.
REPORT_FIGURES = CONDITION_FIGURES + (report_dynamics.STABILITY_FIGURE,
                                      report_dynamics.STABILITY_LOSS_FIGURE)

# The columns of the placement table: (key in run_metrics, header, is an accuracy in [0, 1]).
TABLE_COLUMNS = (
    ('final_val_top1', 'final val top-1 (%)', True),
    ('final_val_top5', 'final val top-5 (%)', True),
    ('best_val_top1', 'best val top-1 (%)', True),
    ('best_val_top5', 'best val top-5 (%)', True),
    ('test_top1', 'test top-1 (%)', True),
    ('steps', 'steps', False),
    ('train_minutes', 'train time (min)', False),
)
NON_ACC_DIGITS = {'steps': 0, 'train_minutes': 1}
COMPARED_METRIC = 'final_val_top1'



# ============================================================================ markdown


def _pct(x: float) -> float:
  return 100 * x


def format_summary(s: study_stats.Summary, scale: float = 1.0, digits: int = 2) -> str:
  """'12.34 ± 0.56 [10.95, 13.73]'; with one seed only the value ('n=1: no spread')."""
  if s.n == 0:
    return '—'
  if s.n < 2:
    return f'{scale * s.mean:.{digits}f}'
  return (f'{scale * s.mean:.{digits}f} ± {scale * s.std:.{digits}f} '
          f'[{scale * s.ci_low:.{digits}f}, {scale * s.ci_high:.{digits}f}]')


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def placement_table(groups: Sequence[study_runs.Group]) -> tuple[str, dict]:
  """Markdown table, one row per group, plus the numbers as a dict for summary.json."""
  has_test = any(not math.isnan(study_runs.run_metrics(r)['test_top1'])
                 for g in groups for r in g.runs)
  columns = [c for c in TABLE_COLUMNS if has_test or c[0] != 'test_top1']
  rows, numbers = [], {}
  for g in groups:
    row = [g.label, str(len(g.runs)), ', '.join(str(r.seed) for r in g.runs)]
    numbers[g.label] = {}
    for key, _, is_acc in columns:
      s = study_stats.summarize(list(g.values(key).values()))
      numbers[g.label][key] = dataclasses.asdict(s)
      if is_acc:
        row.append(format_summary(s, 100.0, 2))
      elif s.n >= 2 and s.std > 0:  # bookkeeping columns: no interval
        row.append(f'{s.mean:.{NON_ACC_DIGITS[key]}f} ± {s.std:.{NON_ACC_DIGITS[key]}f}')
      else:
        row.append('—' if s.n == 0 else f'{s.mean:.{NON_ACC_DIGITS[key]}f}')
    rows.append(row)
  header = ['placement', 'n', 'seeds'] + [c[1] for c in columns]
  return _md_table(header, rows), numbers


def comparison_table(groups: Sequence[study_runs.Group], metric: str = COMPARED_METRIC,
                     alpha: float = ALPHA, baseline: str = '') -> tuple[str, list[dict]]:
  """Paired t-tests, Holm-adjusted over the tests: every group against `baseline` (a group
  label), or every pair of groups when it is ''."""
  if baseline:
    base = next(g for g in groups if g.label == baseline)
    pairs = [(g, base) for g in groups if g is not base]
  else:
    pairs = list(itertools.combinations(groups, 2))
  tests = [study_stats.paired_t_test(a.values(metric), b.values(metric)) for a, b in pairs]
  adjusted = study_stats.holm_adjust([t.p for t in tests])
  rows, numbers = [], []
  for (a, b), t, p_adj in zip(pairs, tests, adjusted):
    if math.isnan(t.p):
      verdict = 'n/a (fewer than 2 shared seeds, or every difference equal)'
    elif p_adj < alpha:
      verdict = f'**yes** ({a.label if t.mean_diff > 0 else b.label} better)'
    else:
      verdict = 'no'
    ci = '—' if math.isnan(t.ci_low) else f'[{_pct(t.ci_low):+.2f}, {_pct(t.ci_high):+.2f}]'
    fmt = lambda v, f: '—' if math.isnan(v) else format(v, f)
    rows.append([a.label, b.label, str(t.n), f'{_pct(t.mean_diff):+.2f}', ci, fmt(t.t, '.2f'),
                 fmt(t.p, '.4f'), fmt(p_adj, '.4f'), verdict])
    numbers.append({'a': a.label, 'b': b.label, **dataclasses.asdict(t), 'p_holm': p_adj,
                    'significant': bool(not math.isnan(p_adj) and p_adj < alpha)})
  header = ['A', 'B', 'n pairs', 'A − B (pp)', f'{int(study_stats.CONFIDENCE * 100)}% CI (pp)',
            't', 'p', 'p (Holm)', f'significant at α={alpha}']
  return _md_table(header, rows), numbers


def _seed_count(groups: Sequence[study_runs.Group]) -> str:
  counts = sorted({len(g.runs) for g in groups}) or [0]
  return str(counts[0]) if counts[0] == counts[-1] else f'{counts[0]}–{counts[-1]}'


def runs_table(runs: Sequence[study_runs.Run]) -> str:
  rows = []
  for r in sorted(runs, key=lambda r: (study_runs.placement_rank(r.placement), r.workdir, r.seed)):
    m = study_runs.run_metrics(r)
    acc = lambda k: '—' if math.isnan(m[k]) else f'{_pct(m[k]):.2f}'
    steps = f'{r.last_step}' + (f'/{r.total_steps}' if r.total_steps else '')
    rows.append([f'`{r.workdir}`', r.placement, str(r.seed), r.status + (f' ({r.note})' if r.note
                                                                         else ''),
                 steps, acc('final_val_top1'), acc('final_val_top5'), acc('best_val_top1'),
                 acc('test_top1'), f'{m["train_minutes"]:.1f}'])
  header = ['run', 'placement', 'seed', 'status', 'steps', 'final val top-1', 'final val top-5',
            'best val top-1', 'test top-1', 'train min']
  return _md_table(header, rows)


def inspection_table(study_dir: str, runs: Sequence[study_runs.Run]) -> str:
  """Mean attention distance per layer (averaged over heads) of the runs vit_jax.figures saw."""
  rows = []
  for r in sorted(runs, key=lambda r: (study_runs.placement_rank(r.placement), r.seed, r.workdir)):
    summary = study_runs.read_json(
        os.path.join(study_dir, r.workdir, study_runs.INSPECT_DIR, 'inspect.json'))
    if not summary or 'mean_attention_distance' not in summary:
      continue
    per_layer = np.mean(np.asarray(summary['mean_attention_distance']), axis=1)
    figures = ', '.join(f'[{os.path.splitext(f)[0]}]({r.workdir}/{study_runs.INSPECT_DIR}/{f})'
                        for f in summary.get('figures', []))
    rows.append([f'`{r.workdir}`', r.placement, str(r.seed),
                 f'{_pct(summary.get("top1", math.nan)):.2f}',
                 ' / '.join(f'{d:.1f}' for d in per_layer), figures])
  if not rows:
    return ''
  header = ['run', 'placement', 'seed', 'top-1 (%)',
            'mean attention distance per layer (px, layer 1 / 2 / …)', 'figures']
  return _md_table(header, rows)


# ============================================================================ figures


def _integer_locator():
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  return ticker.MaxNLocator(integer=True)


def mean_curve(runs: Sequence[study_runs.Run], split: str, key: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(steps, mean, std) over the runs at the steps every run logged (std 0 for one run)."""
  series = []
  for r in runs:
    series.append({int(rec['step']): float(rec[key]) for rec in r.metrics.get(split, [])
                   if key in rec})
  if not series:
    return np.zeros(0), np.zeros(0), np.zeros(0)
  steps = sorted(set.intersection(*(set(s) for s in series)))
  values = np.asarray([[s[t] for t in steps] for s in series], np.float64)
  std = values.std(axis=0, ddof=1) if len(series) > 1 else np.zeros(len(steps))
  return np.asarray(steps), values.mean(axis=0), std


def curve_style(i: int) -> tuple[int, str]:
  """(tab10 colour index, line style) of the i-th group: distinct for up to 30 groups."""
  return i % CURVE_HUES, CURVE_STYLES[i // CURVE_HUES % len(CURVE_STYLES)]


def plot_curves(groups: Sequence[study_runs.Group], path: str, title: str) -> None:
  """Loss and top-1, train and val, against step: mean over seeds with a ±1 std band."""
  plt = figure_plots.pyplot()
  fig, axes = plt.subplots(2, 2, figsize=CURVE_FIGSIZE, layout='constrained')
  panels = [(axes[0, 0], 'train', 'loss', 'training loss'),
            (axes[0, 1], 'val', 'loss', 'validation loss'),
            (axes[1, 0], 'train', 'top1', 'training top-1 (%)'),
            (axes[1, 1], 'val', 'top1', 'validation top-1 (%)')]
  colors = plt.get_cmap('tab10')
  for ax, split, key, name in panels:
    scale = 100.0 if key == 'top1' else 1.0
    for i, g in enumerate(groups):
      steps, mean, std = mean_curve(g.runs, split, key)
      if not len(steps):
        continue
      hue, style = curve_style(i)
      color = colors(hue)
      ax.plot(steps, scale * mean, color=color, label=f'{g.label} (n={len(g.runs)})',
              linestyle=style, marker='o' if split == 'val' else None, markersize=3)
      ax.fill_between(steps, scale * (mean - std), scale * (mean + std), color=color, alpha=0.2,
                      linewidth=0)
    ax.set_title(name)
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_xlabel('step')
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  if handles:  # below the panels: inside one, a dozen entries hid its curves
    fig.legend(handles, labels, loc='outside lower center', ncol=min(len(handles), 5), fontsize=9,
               title='placement (band: ±1 std over seeds)', title_fontsize=9)
  fig.suptitle(title)
  figure_plots.save(fig, path, dpi=FIG_DPI)


def plot_learning_rate(groups: Sequence[study_runs.Group], path: str, title: str) -> None:
  plt = figure_plots.pyplot()
  fig, ax = plt.subplots(figsize=LR_FIGSIZE)
  styles = ('-', '--', ':', '-.')
  curves = []
  for i, g in enumerate(groups):
    steps, mean, _ = mean_curve(g.runs[:1], 'train', 'lr')
    if len(steps):
      ax.plot(steps, mean, linestyle=styles[i % len(styles)], label=g.label)
      curves.append((tuple(steps), tuple(mean)))
  if len(curves) > 1 and len(set(curves)) == 1:
    title += '\n(the same schedule for every placement: the lines coincide)'
  ax.xaxis.set_major_locator(_integer_locator())
  ax.set_xlabel('step')
  ax.set_ylabel('learning rate (at the logged step)')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=9)
  fig.tight_layout()
  figure_plots.save(fig, path, dpi=FIG_DPI)


def plot_final_accuracy(groups: Sequence[study_runs.Group], path: str, title: str) -> None:
  """Bars = mean over seeds, whiskers = 95% t-interval, dots = individual seeds."""
  plt = figure_plots.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=BAR_FIGSIZE)
  x = np.arange(len(groups))
  colors = plt.get_cmap('tab10' if len(groups) <= 10 else 'tab20')
  for ax, key, name in ((axes[0], 'final_val_top1', 'final validation top-1 (%)'),
                        (axes[1], 'final_val_top5', 'final validation top-5 (%)')):
    for i, g in enumerate(groups):
      values = np.asarray(list(g.values(key).values())) * 100
      s = study_stats.summarize(values)
      err = None if s.n < 2 else [[s.mean - s.ci_low], [s.ci_high - s.mean]]
      ax.bar(i, s.mean, color=colors(i % colors.N), alpha=0.75, yerr=err, capsize=6)
      jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
      ax.scatter(i + jitter, values, color='black', s=14, zorder=3)
      top = max([s.mean, *values] + ([s.ci_high] if s.n >= 2 else []))
      ax.annotate(f'{s.mean:.2f}', (i, top), textcoords='offset points', xytext=(0, 5),
                  ha='center', fontsize=9, fontweight='bold')
    ax.set_xticks(x, [g.label for g in groups], rotation=20 if len(groups) > 4 else 0,
                  ha='right' if len(groups) > 4 else 'center', fontsize=9)
    ax.set_xlabel('norm placement')
    ax.set_ylabel(name)
    ax.set_title(f'{name}\nbars: mean, whiskers: {int(study_stats.CONFIDENCE * 100)}% CI, '
                 'dots: seeds', fontsize=10)
    ax.grid(axis='y', alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  figure_plots.save(fig, path, dpi=FIG_DPI)


# ============================================================================ the report


def build_report(study_dir: str, alpha: float = ALPHA, baseline: str = '') -> dict:
  """Writes report.md, the figures and summary.json into `study_dir`; returns the summary.

  `baseline` (a placement, e.g. 'pre'): the tests compare each placement with it, Holm-adjusted
  over those; '' compares every pair. Absent from the finished runs: every pair, and a note.
  """
  runs = study_runs.find_runs(study_dir)
  if not runs:
    raise FileNotFoundError(
        f'No runs under {study_dir} (looked for folders with {study_runs.CONFIG_FILE} or '
        f'{study_runs.METRICS_FILE}). '
        'Run the sweep first, or pass the folder that holds the run folders.')
  finished = [r for r in runs if r.status == 'finished']
  fields = study_runs.varying_fields(finished)
  groups = study_runs.group_runs(finished, fields)
  sweep_plan = study_runs.read_json(os.path.join(study_dir, study_runs.SWEEP_FILE)) or {}
  title = f'Norm-placement study: {study_dir.rstrip("/")}'

  stability_md, stability_figures, stability = report_dynamics.stability_section(runs, study_dir)
  figures = []
  if groups and not stability_figures:  # a learning-rate grid: its own figures say it better
    for fname, plot in zip(CONDITION_FIGURES, (plot_curves, plot_learning_rate,
                                               plot_final_accuracy)):
      plot(groups, os.path.join(study_dir, fname), title)
      figures.append(fname)

  dynamics_md, dynamics_figures = report_dynamics.diagnostics_section(runs, study_dir)
  table, numbers = placement_table(groups)
  labels = [g.label for g in groups]
  missing_baseline = bool(baseline) and baseline not in labels
  comparisons, tests = comparison_table(groups, alpha=alpha,
                                        baseline='' if missing_baseline else baseline)
  if not any(t['n'] >= 2 for t in tests):  # one seed per condition (a grid): nothing to test
    comparisons, tests = '', []
  counts = {s: sum(r.status == s for r in runs)
            for s in ('finished', 'diverged', 'incomplete', 'failed', 'not started')}
  lines = [f'# {title}', '']
  if sweep_plan:
    lines += [f'Sweep: `{sweep_plan.get("command", "")}`', '']
  lines += [f'{len(runs)} runs: ' + ', '.join(f'{v} {k}' for k, v in counts.items() if v) + '.',
            'Conditions differ in: ' + (', '.join(f'`{f}`' for f in fields) or
                                        'nothing (one condition)') +
            '; the seed is the replicate.', '']
  lines += ['## Results per placement', '',
            f'Mean ± sample std over seeds [{int(study_stats.CONFIDENCE * 100)}% confidence '
            'interval of the mean, t distribution with n−1 degrees of freedom]; finished runs '
            'only. *final* = the last validation evaluation (end of training); *best* = the '
            'maximum over all validation evaluations (optimistic: chosen on the same data). With '
            'one seed there is no spread and no interval.', '', table or '(no finished runs yet)', '']
  if groups:
    best = max(groups, key=lambda g: study_stats.summarize(
        list(g.values(COMPARED_METRIC).values())).mean)
    lines += [f'Highest mean final val top-1: **{best.label}**.', '']
  lines += ['## Which differences are significant', '']
  if tests:
    lines += ['Final val top-1, two-sided paired t-test over the seeds both conditions ran (the '
              'same seed gives the same data order and initialisation key). '
              + (f'Each placement against **{baseline}**; ' if baseline and not missing_baseline
                 else f'No finished {baseline} runs yet: every pair; ' if missing_baseline else '')
              + f'p-values are Holm-adjusted over the {len(tests)} test'
              f'{"s" if len(tests) != 1 else ""}; "significant" means adjusted p < {alpha}. With '
              f'{_seed_count(groups)} seeds only large, consistent differences can be '
              'significant: no significance is not evidence of no effect.', '', comparisons, '']
  elif len(groups) < 2:
    lines += ['(needs at least two conditions with finished runs)', '']
  else:
    lines += ['No tests: no two conditions share two finished seeds, so there is no spread to '
              'test a difference against. Compare them by the table above.', '']
  if figures:
    lines += ['## Figures', '']
    lines += [f'![{os.path.splitext(f)[0]}]({f})' for f in figures]
    lines += ['']
  lines += stability_md + dynamics_md
  inspect_md = inspection_table(study_dir, finished)
  if inspect_md:
    lines += ['## Inspected runs (`python -m vit_jax.figures`)', '', inspect_md, '']
  lines += ['## Runs', '', runs_table(runs), '']
  with open(os.path.join(study_dir, 'report.md'), 'w') as f:
    f.write('\n'.join(lines))

  summary = {'study_dir': study_dir.rstrip('/'), 'varying_fields': fields,
             'groups': numbers, 'comparisons': tests, 'metric_compared': COMPARED_METRIC,
             'baseline': '' if missing_baseline else baseline,
             'alpha': alpha, 'confidence': study_stats.CONFIDENCE,
             'figures': figures + stability_figures + dynamics_figures,
             'largest_stable_learning_rate': stability,
             'runs': [{'workdir': r.workdir, 'placement': r.placement, 'seed': r.seed,
                       'status': r.status, 'note': r.note, **study_runs.run_metrics(r)}
                      for r in runs]}
  with open(os.path.join(study_dir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2, default=str)
  _remove_stale_figures(study_dir, summary['figures'])
  return summary


def _remove_stale_figures(study_dir: str, figures: Sequence[str]) -> None:
  """Deletes the figures an earlier report drew that this one did not (e.g. the per-condition
  curves of a grid's first cell, before its learning rates varied): a published folder holds
  only what report.md shows."""
  for name in os.listdir(study_dir):
    drawn_here = name in REPORT_FIGURES or (name.startswith('dynamics_') and name.endswith('.png'))
    if drawn_here and name not in figures:
      os.remove(os.path.join(study_dir, name))


def main(argv: Sequence[str]) -> int:
  usage = 'usage: python -m vit_jax.report STUDY_DIR [--alpha=0.05] [--baseline=pre]'
  args = [a for a in argv[1:] if not a.startswith('--')]
  alpha, baseline = ALPHA, ''
  for a in argv[1:]:
    if a.startswith('--alpha='):
      alpha = float(a.split('=', 1)[1])
    elif a.startswith('--baseline='):
      baseline = a.split('=', 1)[1]
    elif a.startswith('--'):
      print(f'unknown option {a}\n{usage}', file=sys.stderr)
      return 2
  if len(args) != 1:
    print(usage, file=sys.stderr)
    return 2
  try:
    build_report(args[0], alpha, baseline)
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {os.path.join(args[0], "report.md")}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
