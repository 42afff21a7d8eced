"""docs/results/README.md: the normalization study's page, written from its committed files only.

Why a program: the page's every number (accuracies, intervals, tests, init gradients, stable
learning rates, CPU-hours) must come from the result files, and its findings must say what those
numbers say, however many runs are done. This rebuilds each study's report (report.md, figures,
summary.json) from the files that `vit_jax.publish` copied, then writes the page:

  python -m vit_jax.results_page docs/results

Studies read: ACCURACY (schemes x seeds, tested against pre; its init/ analysis of every
scheme) and STABILITY (learning rate x warmup). The findings' rules are the constants below.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections.abc import Sequence

if __name__ == '__main__' and not __package__:  # run as a file: `vit_jax` from the repo root
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from vit_jax import norms
from vit_jax import report
from vit_jax import report_dynamics
from vit_jax import study_runs
from vit_jax import study_stats

ACCURACY = 'study_norms_cpu'
STABILITY = 'study_stability_cpu'
BASELINE = 'pre'
PAGE = 'README.md'
TARGET_TOP1 = 0.30          # the budget was chosen so that pre reaches this (the study's question)
# Xiong et al.: pre-LN's last-layer gradient shrinks as 1/sqrt(L), post-LN's does not. Compared
# between the shallowest and the deepest model of the init analysis:
SQRT_LAW_TOLERANCE = 1.5    # "about 1/sqrt(L)": the measured ratio within this factor of it
NO_SHRINK_RATIO = 0.75      # "does not shrink": the deep model keeps >= 75% of the shallow's
# ... and across the layers of one model (their Fig. 3): post-LN's gradient grows toward the
# output, pre-LN's is about the same in every layer. Last block / first block within this factor
# of 1 counts as flat; above it the gradient grows toward the output, below it it falls.
PROFILE_FLAT_TOLERANCE = 1.5
# Attention "collapses" when its lowest-entropy layer averages below this many nats over training:
# less than an even split over two tokens (ln 2 = 0.69), i.e. mostly one token per query.
ENTROPY_COLLAPSE_NATS = 0.5
MIN_SCHEMES_FOR_CORRELATION = 5

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


def _pct(x: float) -> str:
  return '—' if x is None or math.isnan(x) else f'{100 * x:.2f}'


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


def verdict(comparison: dict | None, alpha: float) -> str:
  """'better' | 'worse' | 'indistinguishable' | 'not tested yet' for one scheme against pre."""
  if not comparison or comparison['n'] < 2 or math.isnan(comparison['p_holm']):
    return 'not tested yet'
  if comparison['p_holm'] < alpha:
    return 'better' if comparison['mean_diff'] > 0 else 'worse'
  return 'indistinguishable'


def accuracy_section(summary: dict) -> tuple[list[str], dict[str, str]]:
  """The results table (one row per scheme) and each scheme's verdict against the baseline."""
  alpha = summary['alpha']
  against = {c['a']: c for c in summary['comparisons'] if c['b'] == BASELINE}
  lines = ['| scheme | seeds | final val top-1 (%): mean ± std [95% CI] | − pre (pp) [95% CI] '
           '| p (Holm) | vs pre |', '|---|---|---|---|---|---|']
  verdicts = {}
  for label, numbers in summary['groups'].items():
    s = numbers['final_val_top1']
    cell = (f'{_pct(s["mean"])} ± {_pct(s["std"])} [{_pct(s["ci_low"])}, {_pct(s["ci_high"])}]'
            if s['n'] >= 2 else _pct(s['mean']))
    c = against.get(label)
    verdicts[label] = '(baseline)' if label == BASELINE else verdict(c, alpha)
    if c and c['n'] >= 2:
      diff = (f'{100 * c["mean_diff"]:+.2f} [{100 * c["ci_low"]:+.2f}, '
              f'{100 * c["ci_high"]:+.2f}]')
      p = '—' if math.isnan(c['p_holm']) else f'{c["p_holm"]:.4f}'
    else:
      diff = p = '—'
    lines.append(f'| {label} | {s["n"]} | {cell} | {diff} | {p} | {verdicts[label]} |')
  return lines, verdicts


def _names(verdicts: dict[str, str], which: str) -> str:
  names = [k for k, v in verdicts.items() if v == which]
  return ', '.join(f'`{n}`' for n in names) if names else 'none'


def _last_layer(init: dict, placement: str) -> dict[int, float]:
  return {int(d): r['total'][-1] for d, r in init.get('results', {}).get(placement, {}).items()}


def _profile(ratio: float) -> str:
  if ratio >= PROFILE_FLAT_TOLERANCE:
    return 'grows toward the output'
  return 'about flat' if ratio > 1 / PROFILE_FLAT_TOLERANCE else 'falls toward the output'


def profile_findings(init: dict) -> list[str]:
  """Xiong et al.'s layer profile at init: each depth's last-block / first-block gradient norm."""
  parts, holds = [], []
  for placement, predicted in (('pre', 'about flat'), ('post', 'grows toward the output')):
    per_depth = init.get('results', {}).get(placement, {})
    ratios = {int(d): r['total'][-1] / r['total'][0] for d, r in per_depth.items()
              if len(r['total']) > 1 and all(map(math.isfinite, r['total'])) and r['total'][0] > 0}
    if not ratios:
      continue
    shapes = {_profile(v) for v in ratios.values()}
    shape = shapes.pop() if len(shapes) == 1 else 'differs with depth'
    holds.append(shape == predicted)
    parts.append(f'`{placement}` ' + ', '.join(f'{ratios[d]:.2f} (L={d})' for d in sorted(ratios))
                 + f': **{shape}** ({"as predicted" if shape == predicted else "predicted: " + predicted})')
  if not parts:
    return []
  return [f'- **Across the layers of one model** (Xiong et al.\'s Fig. 3: at init post-LN\'s '
          f'gradient grows toward the output, pre-LN\'s is about the same in every layer; here last '
          f'block / first block, flat = within {PROFILE_FLAT_TOLERANCE:g}x): ' + '; '.join(parts)
          + f'. The layer profile **{"holds" if all(holds) else "does not hold"}** here.']


def init_findings(init: dict) -> list[str]:
  """Xiong et al.'s two predictions, checked on the shallowest and deepest models."""
  out = []
  for placement, law in (('pre', 'sqrt'), ('post', 'flat')):
    last = _last_layer(init, placement)
    finite = {d: v for d, v in last.items() if math.isfinite(v)}
    if len(finite) < 2:
      out.append(f'- `{placement}`: not measured.')
      continue
    shallow, deep = min(finite), max(finite)
    ratio, predicted = finite[deep] / finite[shallow], math.sqrt(shallow / deep)
    values = ', '.join(f'{finite[d]:.3g} (L={d})' for d in sorted(finite))
    if law == 'sqrt':
      holds = abs(math.log(ratio / predicted)) < math.log(SQRT_LAW_TOLERANCE)
      out.append(f'- **pre-LN: the last layer\'s gradient shrinks {"about as" if holds else "not as"}'
                 f' 1/√L** ({"as predicted" if holds else "against the prediction"}): {values}; '
                 f'L={shallow}→{deep} multiplies it by {ratio:.2f}, 1/√L predicts {predicted:.2f}.')
    else:
      holds = ratio >= NO_SHRINK_RATIO
      out.append(f'- **post-LN: the last layer\'s gradient {"does not shrink" if holds else "shrinks"}'
                 f' with depth** ({"as predicted" if holds else "against the prediction"}): '
                 f'{values}; L={shallow}→{deep} multiplies it by {ratio:.2f} (1/√L would be '
                 f'{predicted:.2f}).')
  out += profile_findings(init)
  broken = sorted({p for p, per_depth in init.get('results', {}).items()
                   for r in per_depth.values() if not all(map(math.isfinite, r['total']))})
  if broken:
    def where(p):
      depths = ','.join(d for d, r in init['results'][p].items()
                        if not all(map(math.isfinite, r['total'])))
      what = f': {norms.PRESET_DOCS[p][1]}' if p in norms.PRESET_DOCS else ''
      return f'`{p}` at L={depths}{what}'
    out.append('- Non-finite gradients at init (the forward pass overflows): '
               + '; '.join(map(where, broken)) + '.')
  return out


def stability_findings(summary: dict) -> list[str]:
  stable = summary.get('largest_stable_learning_rate') or {}
  if not stable:
    return ['- The stability grid has no finished runs yet.']
  needs, top = [], 0.0
  for placement, per_warmup in stable.items():
    warmups = sorted((w for w in per_warmup if w != 'None'), key=float)  # 'None': not varied
    if len(warmups) >= 2:
      cold, warm = per_warmup[warmups[0]], per_warmup[warmups[-1]]
      if (cold or 0.0) < (warm or 0.0):
        needs.append(f'`{placement}` ({cold if cold is not None else "none"} without, {warm} with)')
    top = max(top, *(v or 0.0 for v in per_warmup.values()))
  best = [p for p, per_warmup in stable.items() if max(v or 0.0 for v in per_warmup.values()) == top]
  largest = (f'- **Largest learning rate**: {", ".join(f"`{p}`" for p in best)} trained at '
             f'{top:g}, the largest stable rate in the grid.' if top else
             '- **Largest learning rate**: no scheme trained stably at any rate of the grid.')
  return [f'- **Warmup**: the largest stable learning rate is higher with warmup than without for '
          f'{", ".join(needs) if needs else "no scheme"}; the others are as stable without it.',
          largest]


def best_learning_rates(stability_dir: str, study_lr: float | None) -> list[str]:
  """Each scheme's best cell of the grid (highest final val top-1 among the cells where every
  seed trained): whether the accuracy study's one learning rate sits near each scheme's own."""
  warmup, grid = report_dynamics.stability_grid(study_runs.find_runs(stability_dir))
  best = {}
  for placement, cells in sorted(grid.items(), key=lambda kv: study_runs.placement_rank(kv[0])):
    trained = {key: statistics.mean(top1 for _, top1 in seeds) for key, seeds in cells.items()
               if all(kind == report_dynamics.TRAINED for kind, _ in seeds)}
    if trained:
      best[placement] = max(trained, key=trained.get)
  if not best:
    return []
  cell = lambda lr, w: f'{lr:g}' + (f' ({warmup} {w:g})' if warmup else '')
  line = ('- **Best learning rate in the grid** (highest final val top-1; a short budget favours '
          'larger rates): ' + ', '.join(f'`{p}` {cell(*best[p])}' for p in best) + '.')
  if study_lr:
    other = [p for p, (lr, _) in best.items() if not math.isclose(lr, study_lr)]
    line += (f' The accuracy study trains every scheme at {study_lr:g}; '
             + (f'the grid\'s best differs for {", ".join(f"`{p}`" for p in other)}.' if other
                else 'that is every scheme\'s best in the grid.'))
  return [line]


# ----------------------------------------------------------------------------- the page
def dynamics_findings(study_dir: str, summary: dict) -> list[str]:
  """The diagnostics beside the accuracy, per scheme: a table of report_dynamics'
  DYNAMICS_SUMMARY, the schemes whose attention collapses, and each quantity's Spearman rank
  correlation with final val top-1 across schemes (Holm-adjusted over the quantities)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  finished = [r for r in study_runs.find_runs(study_dir) if r.status == 'finished']
  dynamics = report_dynamics.dynamics_by_placement(finished, study_dir)
  accuracy = {label: g['final_val_top1']['mean'] for label, g in summary['groups'].items()
              if label in dynamics}
  if not accuracy:
    return []
  names = [name for name, _ in report_dynamics.DYNAMICS_SUMMARY]
  lines = ['Each scheme\'s dynamics in four numbers (from `diagnostics.jsonl`, every 100 steps, '
           'averaged over training and seeds): '
           + '; '.join(f'**{name}**: {what}' for name, what in report_dynamics.DYNAMICS_SUMMARY)
           + '.', '', '| scheme | final val top-1 (%) | ' + ' | '.join(names) + ' |',
           '|---' * (2 + len(names)) + '|']
  for label, top1 in accuracy.items():
    lines.append(f'| {label} | {_pct(top1)} | '
                 + ' | '.join(f'{dynamics[label][n]:.3g}' for n in names) + ' |')
  lines.append('')
  entropy = {label: dynamics[label]['lowest attention entropy'] for label in accuracy}
  collapsed = sorted((label for label, e in entropy.items() if e < ENTROPY_COLLAPSE_NATS),
                     key=entropy.get)
  lines.append(
      f'- **Attention collapse** (a layer averaging below {ENTROPY_COLLAPSE_NATS:g} nats, mostly '
      'one token per query): '
      + (', '.join(f'`{c}` ({entropy[c]:.2g} nats, {_pct(accuracy[c])}% val top-1, largest logit '
                   f'{dynamics[c]["largest attention logit"]:.3g})' for c in collapsed)
         if collapsed else 'none') + '.')
  if len(accuracy) < MIN_SCHEMES_FOR_CORRELATION:
    return lines + [f'- Rank correlations: fewer than {MIN_SCHEMES_FOR_CORRELATION} schemes so far.']
  labels = list(accuracy)
  varying = [n for n in names if len({dynamics[l][n] for l in labels}) > 1]
  rhos, pvalues = [], []
  for name in varying:
    rho, p = stats.spearmanr([dynamics[l][name] for l in labels], [accuracy[l] for l in labels])
    rhos.append(float(rho))
    pvalues.append(float(p))
  adjusted = study_stats.holm_adjust(pvalues) if pvalues else []
  parts = [f'{name}: the same for every scheme' for name in names if name not in varying]
  for name, rho, p in zip(varying, rhos, adjusted):
    if math.isnan(rho):
      parts.append(f'{name}: no rank correlation (accuracy the same for every scheme)')
    elif p < summary['alpha']:
      parts.append(f'{name} ρ = {rho:+.2f} (Holm p = {p:.3f}: schemes with '
                   f'{"more" if rho > 0 else "less"} of it scored higher)')
    else:
      parts.append(f'{name} ρ = {rho:+.2f} (Holm p = {p:.2f}: no clear association)')
  return lines + [
      f'- **Which dynamics go with accuracy** (Spearman rank correlation with final val top-1 '
      f'across the {len(labels)} schemes, Holm-adjusted over the {len(varying)} that vary; it '
      'describes, it does not show cause): ' + '; '.join(parts) + '.']


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

  summary_a = report.build_report(accuracy_dir, baseline=BASELINE) if done_a else None
  summary_s = report.build_report(stability_dir) if done_s else None
  verdicts: dict[str, str] = {}
  scale, short = setup(accuracy_dir) if done_a else {}, setup(stability_dir) if done_s else {}
  depths = sorted(int(d) for per_depth in init.get('results', {}).values() for d in per_depth)
  lines += ['## Accuracy' + (f': {scale["schemes"]} schemes × {scale["seeds"]} seeds'
                             if scale else ''), '',
            'configs/study_norms_cpu.py; final validation top-1 after the last step; paired '
            't-test against `pre` over seeds (same seed = same data order and init), '
            'Holm-adjusted over the schemes. Full report: '
            f'[{ACCURACY}/report.md]({ACCURACY}/report.md).', '']
  if summary_a:
    table, verdicts = accuracy_section(summary_a)
    lines += table + ['', f'![final accuracy]({ACCURACY}/final_accuracy.png)', '',
                      f'![curves]({ACCURACY}/curves.png)', '']
  else:
    lines += ['(no finished runs yet)', '']

  lines += ['## Findings', '']
  if summary_a:
    pre = summary_a['groups'].get(BASELINE, {}).get('final_val_top1', {})
    if pre:
      reached = pre['mean'] >= TARGET_TOP1
      lines.append(f'- **Budget**: `pre` reaches {_pct(pre["mean"])}% val top-1 '
                   f'({"at least" if reached else "below"} the {100 * TARGET_TOP1:.0f}% the budget '
                   'was chosen for).')
    lines += [f'- **Better than pre-LN** (Holm-adjusted p < {summary_a["alpha"]}): '
              f'{_names(verdicts, "better")}.',
              f'- **Worse than pre-LN**: {_names(verdicts, "worse")}.',
              f'- **Indistinguishable from pre-LN at this scale**: '
              f'{_names(verdicts, "indistinguishable")}.']
    if 'not tested yet' in verdicts.values():
      lines.append('- Not tested yet (fewer than 2 seeds, or the same difference from pre on '
                   f'every seed, which leaves no spread to test): {_names(verdicts, "not tested yet")}.')
    dual = verdicts.get('dual_patchnorm', 'not tested yet')
    better = [k for k, v in verdicts.items() if v == 'better']
    tested = [k for k, v in verdicts.items() if v in ('better', 'worse', 'indistinguishable')]
    if better:
      near_optimal = f'**does not hold** ({", ".join(f"`{b}`" for b in better)} significantly better)'
    elif tested:
      near_optimal = (f'**holds** for the {len(tested)} schemes tested so far (none significantly '
                      'better)')
    else:
      near_optimal = '**not tested yet**'
    lines.append(
        '- **Dual PatchNorm\'s conclusion** (Kumar et al., 2023: pre-LN is near optimal among '
        'placements, and norms around the patch embedding help): pre-LN near optimal — '
        + near_optimal
        + f'; patch norms help — `dual_patchnorm` is **{dual}** against pre.')
  lines += init_findings(init) if init else ['- Init analysis: not published yet.']
  lines += (stability_findings(summary_s) + best_learning_rates(stability_dir, scale.get('lr'))
            if summary_s else ['- Stability grid: no finished runs yet.'])
  lines += ['']

  lines += ['## Why: the diagnostics', '',
            'Gradient norm per layer at initialization, every scheme at depths '
            f'{", ".join(map(str, sorted(set(depths))))} '
            '(`vit_jax/init_analysis.py`):', '',
            f'![init]({ACCURACY}/{report_dynamics.INIT_FIGURE})', '']
  if summary_s and 'stability.png' in summary_s['figures']:
    lines += [f'Final val top-1 over learning rate × warmup ({short.get("steps", "?")} steps, '
              f'{short.get("seeds", "?")} seed(s)); diverged '
              f'and stalled runs marked ([report]({STABILITY}/report.md)):', '',
              f'![stability]({STABILITY}/stability.png)', '']
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
    lines += dynamics_findings(accuracy_dir, summary_a) + ['']
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
