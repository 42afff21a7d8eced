"""The study page's findings: fixed rules that turn the result files' numbers into sentences.

Why apart from the page: the rules are the scientific claims (when a scaling "holds", when
attention "collapses", when a scheme "needs warmup"), so they live in one place with their
thresholds, and the page (`vit_jax.results_page`) only lays them out. docs/study.md states them.
"""

from __future__ import annotations

import math
import statistics

from vit_jax import norms
from vit_jax import report_dynamics
from vit_jax import study_runs
from vit_jax import study_stats

BASELINE = 'pre'            # every scheme is tested against it
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


def pct(x: float) -> str:
  return '—' if x is None or math.isnan(x) else f'{100 * x:.2f}'


# ----------------------------------------------------------------------------- accuracy
def verdict(comparison: dict | None, alpha: float) -> str:
  """'better' | 'worse' | 'indistinguishable' | 'not tested yet' for one scheme against pre."""
  if not comparison or comparison['n'] < 2 or math.isnan(comparison['p_holm']):
    return 'not tested yet'
  if comparison['p_holm'] < alpha:
    return 'better' if comparison['mean_diff'] > 0 else 'worse'
  return 'indistinguishable'


def _names(verdicts: dict[str, str], which: str) -> str:
  names = [k for k, v in verdicts.items() if v == which]
  return ', '.join(f'`{n}`' for n in names) if names else 'none'


def accuracy_findings(summary: dict, verdicts: dict[str, str]) -> list[str]:
  """The budget check, the verdicts against pre, and Dual PatchNorm's two claims."""
  lines = []
  pre = summary['groups'].get(BASELINE, {}).get('final_val_top1', {})
  if pre:
    reached = pre['mean'] >= TARGET_TOP1
    lines.append(f'- **Budget**: `pre` reaches {pct(pre["mean"])}% val top-1 '
                 f'({"at least" if reached else "below"} the {100 * TARGET_TOP1:.0f}% the budget '
                 'was chosen for).')
  lines += [f'- **Better than pre-LN** (Holm-adjusted p < {summary["alpha"]}): '
            f'{_names(verdicts, "better")}.',
            f'- **Worse than pre-LN**: {_names(verdicts, "worse")}.',
            f'- **Indistinguishable from pre-LN at this scale**: '
            f'{_names(verdicts, "indistinguishable")}.']
  lines.append(_leaning(summary, verdicts))
  if 'not tested yet' in verdicts.values():
    lines.append('- Not tested yet (fewer than 2 seeds, or the same difference from pre on '
                 f'every seed, which leaves no spread to test): {_names(verdicts, "not tested yet")}.')
  dual = verdicts.get('dual_patchnorm', 'not tested yet')
  better = [k for k, v in verdicts.items() if v == 'better']
  tested = [k for k, v in verdicts.items() if v in ('better', 'worse', 'indistinguishable')]
  if better:
    near_optimal = f'**does not hold** ({", ".join(f"`{b}`" for b in better)} significantly better)'
  elif tested:
    near_optimal = (f'**holds** for the {len(tested)} schemes tested (none significantly '
                    'better)')
  else:
    near_optimal = '**not tested yet**'
  lines.append(
      '- **Dual PatchNorm\'s conclusion** (Kumar et al., 2023: pre-LN is near optimal among '
      'placements, and norms around the patch embedding help): pre-LN near optimal — '
      + near_optimal
      + f'; patch norms help — `dual_patchnorm` is **{dual}** against pre.')
  return lines


def _leaning(summary: dict, verdicts: dict[str, str]) -> str:
  """The indistinguishable schemes whose own 95% CI excludes 0, and the seeds each would need.

  Why: with 3 seeds and a dozen comparisons, Holm can only reject large, steady differences; a
  reader deciding where to spend more seeds wants the ones that lean, and how many seeds the
  observed difference and spread would take to pass Holm's strictest step (alpha / tests).
  """
  tests = [c for c in summary.get('comparisons', []) if c['b'] == BASELINE and
           not math.isnan(c['p'])]
  alpha = summary['alpha'] / max(len(tests), 1)
  leaning = []
  for c in tests:
    if verdicts.get(c['a']) != 'indistinguishable' or c['ci_low'] <= 0 <= c['ci_high']:
      continue
    std = abs(c['mean_diff']) * math.sqrt(c['n']) / abs(c['t'])     # t = mean / (std / sqrt(n))
    seeds = study_stats.seeds_to_pass(c['mean_diff'], std, alpha)
    needs = (f'{seeds} seeds' if seeds else
             f'more than {study_stats.MAX_SEEDS_PLANNED} seeds')
    leaning.append(f'`{c["a"]}` {100 * c["mean_diff"]:+.2f} pp ({needs})')
  return (f'- **Leaning, not shown** (indistinguishable, but the comparison\'s own 95% CI '
          f'excludes 0; in brackets, the seeds at which the observed difference and spread would '
          f'pass Holm\'s strictest step, p < {alpha:.2g}: a rough plan, not a power analysis): '
          + (', '.join(leaning) if leaning else 'none') + '.')


# ----------------------------------------------------------------------------- initialization
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


# ----------------------------------------------------------------------------- stability
def stability_findings(summary: dict) -> list[str]:
  stable = summary.get('largest_stable_learning_rate') or {}
  if not stable:
    # finished runs, but all at one learning rate so far: no grid to read a largest rate from
    return ['- Stability grid: its finished runs do not vary the learning rate yet.']
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
  warmup = (f'- **Warmup**: the largest stable learning rate is higher with warmup than without '
            f'for {", ".join(needs)}; the others are as stable without it.' if needs else
            '- **Warmup**: no scheme\'s largest stable learning rate is higher with warmup than '
            'without: each is as stable without it.')
  return [warmup, largest]


def best_learning_rates(stability_dir: str, study_lr: float | None) -> list[str]:
  """Each scheme's best cell of the grid (highest final val top-1 among the cells where every
  seed trained): whether the accuracy study's one learning rate sits near each scheme's own."""
  warmup, grid = report_dynamics.stability_grid(study_runs.find_runs(stability_dir))
  if not report_dynamics.varies_learning_rate(grid):
    return []                      # one learning rate so far: no best one to name
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


# ----------------------------------------------------------------------------- dynamics
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
    lines.append(f'| {label} | {pct(top1)} | '
                 + ' | '.join(f'{dynamics[label][n]:.3g}' for n in names) + ' |')
  lines.append('')
  entropy = {label: dynamics[label]['lowest attention entropy'] for label in accuracy}
  collapsed = sorted((label for label, e in entropy.items() if e < ENTROPY_COLLAPSE_NATS),
                     key=entropy.get)
  lines.append(
      f'- **Attention collapse** (a layer averaging below {ENTROPY_COLLAPSE_NATS:g} nats, mostly '
      'one token per query): '
      + (', '.join(f'`{c}` ({entropy[c]:.2g} nats, {pct(accuracy[c])}% val top-1, largest logit '
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
