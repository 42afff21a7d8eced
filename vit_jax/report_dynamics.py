"""The training-dynamics part of a study report: stability over (learning rate, warmup) and each
placement's per-layer diagnostics. `vit_jax.report` calls it and adds what it returns.

  stability.png            per placement, final val top-1 over learning rate x warmup (mean over
                           seeds); a cell where a seed diverged (the trainer stopped it) or
                           stalled (ran to the end without learning) is marked. Only when the
                           runs differ in learning rate.
  dynamics_<placement>.png from the first seed's diagnostics.jsonl (vit_jax/diagnostics.py):
                           gradient norm by layer over training (layer x step), residual-stream
                           RMS by depth at the first and last record, attention entropy by layer
                           at the first and last record.
  init/init_grad_norms.png the study's `python -m vit_jax.init_analysis --out=<study>/init`, when
                           present.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from vit_jax import figure_plots
from vit_jax import study_runs

LR_FIELD = 'learning_rate'
WARMUP_FIELDS = ('warmup_fraction', 'warmup_steps')
INIT_FIGURE = os.path.join('init', 'init_grad_norms.png')
INIT_NUMBERS = os.path.join('init', 'init_grad_norms.json')


def plot_init(results: dict, path: str, what: str) -> str:
  """vit_jax/init_analysis.py's figure: a panel per placement, a line per depth."""
  return figure_plots.plot_layer_curves(
      {p: {f'L={d}': r['total'] for d, r in per_depth.items()} for p, per_depth in results.items()},
      path, title=f'Gradient norm per layer at initialization ({what})',
      ylabel='gradient norm at init (log scale)')


# ----------------------------------------------------------------------------- stability
# What became of one seed at one (learning rate, warmup): it trained, it diverged (the trainer
# stopped it: non-finite loss or above divergence_factor x the initial loss), or it stalled: it
# ran to the end without learning, its final val loss less than STALL_NATS below where it
# started (e.g. post-LN at a high learning rate stuck at the uniform prediction, loss ln C).
# The divergence rule alone misses a stall; the report calls neither stable.
TRAINED, STALLED, DIVERGED = 'trained', 'stalled', 'diverged'
# "Without learning": a margin, because a run stuck at chance still drifts a little (post-LN at
# 3e-3 in the study's grid: 1.3% top-1, val loss 0.02 nats under its first logged loss; every
# run there above 5% top-1 was >= 0.25 nats under, the slowest learners at 1e-2, 2-3.6%, 0.12 to
# 0.17). Under 0.1 nats: the geometric-mean probability of the right class rose by less than
# 11% (e^0.1).
STALL_NATS = 0.1
# Where a run started: ln C, the uniform prediction of the zero-initialized head, or its first
# logged training loss if lower. Not the first log alone: at a high learning rate the loss
# overshoots in the first steps (deepnorm at 1e-2: 4.72 averaged over steps 1-50, then ln 100 =
# 4.605 to the end, 1.0% top-1). The class counts of the offline datasets (vit_jax/data/cifar.py,
# not imported: it brings TensorFlow; tests/test_report_dynamics.py checks they agree); for
# another dataset the first logged loss is the reference.
NUM_CLASSES = {'cifar10': 10, 'cifar100': 100}
STABILITY_FIGURE = 'stability.png'
STABILITY_LOSS_FIGURE = 'stability_loss.png'
STABILITY_COLUMNS = 4            # panels per row of the stability figures (one per scheme)
STABILITY_LOSS_CEILING = 1.5     # its y axis stops at this x the largest initial loss
WARMUP_STYLES = ('-', '--', ':', '-.')   # the loss figure's line style per warmup value


def outcome(run: study_runs.Run) -> tuple[str, float | None]:
  """(TRAINED | STALLED | DIVERGED, final val top-1 or None) of a finished or diverged run."""
  if run.status == 'diverged':
    return DIVERGED, None
  numbers = study_runs.run_metrics(run)
  train = run.metrics.get('train', [])
  start = float(train[0]['loss']) if train else math.nan
  classes = NUM_CLASSES.get(run.config.get('data.dataset'))  # Run.config is flattened
  if classes:
    start = min(start, math.log(classes))
  stalled = not numbers['final_val_loss'] < start - STALL_NATS  # NaN (no val): a stall
  return (STALLED if stalled else TRAINED), numbers['final_val_top1']


def stability_grid(runs: Sequence[study_runs.Run]) -> tuple[str | None, dict]:
  """(the warmup field that varies or None, {placement: {(lr, warmup): [outcome per seed]}});
  only finished and diverged runs."""
  done = [r for r in runs if r.status in ('finished', 'diverged')]
  varying = study_runs.varying_fields(done)
  warmup = next((f for f in WARMUP_FIELDS if f in varying), None)
  grid: dict[str, dict] = {}
  for r in done:
    key = (float(r.config.get(LR_FIELD, math.nan)), r.config.get(warmup) if warmup else None)
    grid.setdefault(r.placement, {}).setdefault(key, []).append(outcome(r))
  return warmup, grid


def varies_learning_rate(grid: dict) -> bool:
  """Whether the grid's runs span two learning rates or more: only then is there a largest
  stable rate or a best one to read."""
  return len({lr for cells in grid.values() for lr, _ in cells}) >= 2


def _failures(seeds: Sequence[tuple[str, float | None]]) -> list[str]:
  return [kind for kind, _ in seeds if kind != TRAINED]


def largest_stable(cells: dict) -> dict:
  """{warmup: the largest learning rate at which every seed trained (None if none)}."""
  out = {}
  for warmup in sorted({w for _, w in cells}, key=str):
    stable = [lr for (lr, w), seeds in cells.items() if w == warmup and not _failures(seeds)]
    out[warmup] = max(stable) if stable else None
  return out


def _mean_top1(seeds) -> float:
  """Mean final val top-1 (%) over the seeds that ran to the end; NaN if one diverged."""
  if any(kind == DIVERGED for kind, _ in seeds):
    return math.nan
  return 100 * float(np.mean([top1 for _, top1 in seeds]))


def _panels(plt, n: int, width: float, height: float, **kwargs):
  """(figure, axes) of n panels, STABILITY_COLUMNS to a row, the unused ones hidden: a row of
  seven schemes would be too wide to read on the page."""
  columns = min(n, STABILITY_COLUMNS)
  rows = -(-n // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(width * columns + 1.5, height * rows + 0.6),
                           squeeze=False, layout='constrained', **kwargs)
  for ax in axes.flat[n:]:
    ax.axis('off')
  return fig, axes


def plot_stability(grid: dict, warmup_field: str | None, path: str) -> None:
  plt = figure_plots.pyplot()
  fig, axes = _panels(plt, len(grid), 3.2, 2.9)
  image = None
  finished = [_mean_top1(v) for cells in grid.values() for v in cells.values()]
  top = max(max((v for v in finished if not math.isnan(v)), default=0.0), 1.0)  # one scale
  for ax, (placement, cells) in zip(axes.flat, sorted(grid.items(),
                                                     key=lambda kv: study_runs.placement_rank(kv[0]))):
    lrs = sorted({lr for lr, _ in cells})
    warmups = sorted({w for _, w in cells}, key=str)
    values = np.full((len(warmups), len(lrs)), np.nan)
    for (lr, w), seeds in cells.items():
      values[warmups.index(w), lrs.index(lr)] = _mean_top1(seeds)
    image = ax.imshow(values, cmap='viridis', vmin=0, vmax=top, aspect='auto')
    for (lr, w), seeds in cells.items():
      i, j = warmups.index(w), lrs.index(lr)
      failures = _failures(seeds)
      if DIVERGED in failures:
        ax.text(j, i, DIVERGED, ha='center', va='center', fontsize=7, color='crimson')
      else:
        text = f'{values[i, j]:.1f}' + (f'\n{STALLED}' if failures else '')
        ax.text(j, i, text, ha='center', va='center', fontsize=8 if not failures else 7,
                color='white' if values[i, j] < top / 2 else  # crimson is unreadable on dark
                ('crimson' if failures else 'black'))
    for i, w in enumerate(warmups):
      for j, lr in enumerate(lrs):
        if (lr, w) not in cells:  # no finished or diverged run there (yet)
          ax.text(j, i, 'not run', ha='center', va='center', fontsize=7, color='gray')
    ax.set_xticks(range(len(lrs)), [f'{lr:g}' for lr in lrs], rotation=45)
    ax.set_yticks(range(len(warmups)), ['as configured' if w is None else str(w) for w in warmups])
    ax.set_xlabel('peak learning rate')
    ax.set_title(placement)
  for ax in axes[:, 0]:
    ax.set_ylabel(warmup_field or 'warmup (not varied)')
  if image is not None:
    fig.colorbar(image, ax=axes.ravel().tolist(), label='final val top-1 (%), mean over seeds')
  fig.suptitle('Stability: final val top-1 by learning rate and warmup '
               '(diverged: stopped; stalled: did not learn)', fontsize=10)
  figure_plots.save(fig, path)


def plot_stability_losses(runs: Sequence[study_runs.Run], warmup_field: str | None,
                          path: str) -> None:
  """The training loss behind the heatmap: a panel per placement, a line per run, coloured by
  peak learning rate (darker = smaller), one line style per warmup; x = where a run diverged."""
  plt = figure_plots.pyplot()
  done = [r for r in runs if r.status in ('finished', 'diverged') and r.metrics.get('train')]
  placements = sorted({r.placement for r in done}, key=study_runs.placement_rank)
  lrs = sorted({float(r.config.get(LR_FIELD, math.nan)) for r in done})
  warmups = sorted({r.config.get(warmup_field) if warmup_field else None for r in done}, key=str)
  fig, axes = _panels(plt, len(placements), 3.6, 2.9, sharex=True, sharey=True)
  colours = plt.get_cmap('plasma')(np.linspace(0.05, 0.8, len(lrs)))
  first = max(float(r.metrics['train'][0]['loss']) for r in done)
  ceiling = STABILITY_LOSS_CEILING * first           # a diverging loss leaves the panel here
  for ax, placement in zip(axes.flat, placements):
    for r in (r for r in done if r.placement == placement):
      lr = float(r.config.get(LR_FIELD, math.nan))
      w = r.config.get(warmup_field) if warmup_field else None
      steps = [int(m['step']) for m in r.metrics['train']]
      losses = np.minimum([float(m['loss']) for m in r.metrics['train']], ceiling)
      style = WARMUP_STYLES[warmups.index(w) % len(WARMUP_STYLES)]
      ax.plot(steps, losses, style, color=colours[lrs.index(lr)], linewidth=1.2)
      if r.status == 'diverged':
        ax.plot(steps[-1], losses[-1] if math.isfinite(losses[-1]) else ceiling, 'x',
                color=colours[lrs.index(lr)], markersize=9, markeredgewidth=2)
    ax.set_title(placement)
    ax.grid(alpha=0.3)
  for ax in axes[:, 0]:
    ax.set_ylabel('training loss')
  for ax in axes[-1]:
    ax.set_xlabel('step')
  handles = [plt.Line2D([], [], color=c, label=f'lr {lr:g}') for lr, c in zip(lrs, colours)]
  handles += [plt.Line2D([], [], color='gray', linestyle=WARMUP_STYLES[i % len(WARMUP_STYLES)],
                         label=f'{warmup_field or "warmup"} {w}') for i, w in enumerate(warmups)]
  handles += [plt.Line2D([], [], color='gray', marker='x', linestyle='', label='diverged')]
  fig.legend(handles=handles, loc='outside lower center', ncol=min(len(handles), 8), fontsize=8)
  fig.suptitle('Stability: training loss by learning rate and warmup', fontsize=10)
  figure_plots.save(fig, path)


def stability_section(runs: Sequence[study_runs.Run], study_dir: str
                      ) -> tuple[list[str], list[str], dict]:
  """(markdown lines, figure names, summary) of the stability grid; empty without an LR axis."""
  warmup, grid = stability_grid(runs)
  if not varies_learning_rate(grid):
    return [], [], {}
  plot_stability(grid, warmup, os.path.join(study_dir, STABILITY_FIGURE))
  plot_stability_losses(runs, warmup, os.path.join(study_dir, STABILITY_LOSS_FIGURE))
  warmups = sorted({w for cells in grid.values() for _, w in cells}, key=str)
  header = ['placement'] + [f'largest stable lr ({warmup}={w})' if warmup else 'largest stable lr'
                            for w in warmups] + ['diverged runs', 'stalled runs']
  rows, summary = [], {}
  for placement, cells in sorted(grid.items(), key=lambda kv: study_runs.placement_rank(kv[0])):
    best = largest_stable(cells)
    kinds = [kind for seeds in cells.values() for kind, _ in seeds]
    rows.append([placement] + [f'{best[w]:g}' if best.get(w) is not None else 'none'
                               for w in warmups] +
                [str(kinds.count(DIVERGED)), str(kinds.count(STALLED))])
    summary[placement] = {str(w): best.get(w) for w in warmups}
  lines = ['## Stability over learning rate' + (f' and {warmup}' if warmup else ''), '',
           'A run *diverged* when its training loss became non-finite or exceeded '
           '`divergence_factor` x its initial value; it stopped there and counts as a result. '
           'A run *stalled* when it ran to the end without learning: its final val loss is less '
           f'than {STALL_NATS:g} nats below where it started (ln of the number of classes, the '
           'uniform prediction, or its first logged training loss if lower). '
           'The largest stable learning rate is the largest one at which every seed trained '
           '(neither diverged nor stalled).', '',
           '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
  return (lines + ['', f'![stability]({STABILITY_FIGURE})', '',
                   f'![training loss]({STABILITY_LOSS_FIGURE})', ''],
          [STABILITY_FIGURE, STABILITY_LOSS_FIGURE], summary)


# ----------------------------------------------------------------------------- diagnostics
def layer_by_step(records: Sequence[dict], key) -> tuple[list[int], np.ndarray]:
  """(steps, [layers, steps] array of key(record))."""
  steps = sorted({r['step'] for r in records})
  layers = 1 + max(r['layer'] for r in records)
  grid = np.full((layers, len(steps)), np.nan)
  for r in records:
    grid[r['layer'], steps.index(r['step'])] = key(r)
  return steps, grid


def plot_dynamics(records: Sequence[dict], path: str, title: str) -> None:
  from matplotlib import colors  # pylint: disable=g-import-not-at-top
  plt = figure_plots.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), layout='constrained',
                           gridspec_kw={'wspace': 0.08})
  steps, grads = layer_by_step(
      records, lambda r: math.hypot(r['attn_grad_norm'], r['mlp_grad_norm']))
  positive = grads[grads > 0]
  norm = colors.LogNorm(positive.min(), positive.max()) if positive.size else None
  image = axes[0].imshow(np.where(grads > 0, grads, np.nan), aspect='auto', origin='lower',
                         cmap='magma', norm=norm, interpolation='nearest')
  axes[0].set_xticks(range(len(steps)), [str(s) for s in steps], rotation=90, fontsize=7)
  axes[0].set_xlabel('training step')
  axes[0].set_ylabel('layer (0 = first block)')
  axes[0].yaxis.set_major_locator(plt.MaxNLocator(integer=True))
  axes[0].set_title('gradient norm per block (white: exactly 0)', fontsize=10)
  fig.colorbar(image, ax=axes[0], label='||gradient|| (attention + MLP)')
  for ax, key, what in ((axes[1], 'stream_rms', 'residual-stream RMS at the block output'),
                        (axes[2], 'attn_entropy_mean', 'attention entropy (nats, mean over heads)')):
    _, grid = layer_by_step(records, lambda r, k=key: r[k])
    layers = np.arange(grid.shape[0])
    for column, label in ((0, f'step {steps[0]}'), (-1, f'step {steps[-1]}')):
      ax.plot(layers, grid[:, column], marker='o', label=label)
    ax.set_xlabel('layer (0 = first block)')
    ax.set_ylabel(what)
    ax.set_title(what.split(' (')[0] + ' by depth')
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  rms = np.asarray([r['stream_rms'] for r in records])
  if rms.min() > 0 and rms.max() / rms.min() > 10:  # growth over orders of magnitude
    axes[1].set_yscale('log')
  fig.suptitle(title, fontsize=10)
  figure_plots.save(fig, path)


# Each scheme's dynamics in four numbers, to set beside its accuracy: (name, what it measures).
# Each is taken per diagnostics record step (after step 0, which has no gradient yet), averaged
# over a run's steps, then over its seeds.
DYNAMICS_SUMMARY = (
    ('stream growth', 'residual-stream RMS after the last block / after the first'),
    ('gradient spread', 'largest / smallest block gradient norm'),
    ('lowest attention entropy', 'nats: the layer whose heads attend most narrowly'),
    ('largest attention logit', 'the largest pre-softmax logit in any layer'),
)


def summarize_dynamics(records: Sequence[dict]) -> dict[str, float]:
  """DYNAMICS_SUMMARY's numbers for one run's diagnostics records (NaN where not measured)."""
  per_step: dict[int, list[dict]] = {}
  for r in records:
    if r['step'] > 0:
      per_step.setdefault(r['step'], []).append(r)
  values: dict[str, list[float]] = {name: [] for name, _ in DYNAMICS_SUMMARY}
  for layers in per_step.values():
    layers = sorted(layers, key=lambda r: r['layer'])
    grads = [math.hypot(r['attn_grad_norm'], r['mlp_grad_norm']) for r in layers]
    values['stream growth'].append(layers[-1]['stream_rms'] / layers[0]['stream_rms'])
    values['gradient spread'].append(max(grads) / min(grads) if min(grads) > 0 else math.inf)
    values['lowest attention entropy'].append(min(r['attn_entropy_mean'] for r in layers))
    values['largest attention logit'].append(max(r['attn_logit_max'] for r in layers))
  return {name: float(np.mean(v)) if v else math.nan for name, v in values.items()}


def dynamics_by_placement(runs: Sequence[study_runs.Run], study_dir: str
                          ) -> dict[str, dict[str, float]]:
  """summarize_dynamics averaged over each placement's seeds (runs without diagnostics skipped)."""
  per_run: dict[str, list[dict[str, float]]] = {}
  for r in runs:
    records = study_runs.read_diagnostics(
        os.path.join(study_dir, r.workdir, study_runs.DIAGNOSTICS_FILE))
    if records:
      per_run.setdefault(r.placement, []).append(summarize_dynamics(records))
  return {p: {name: float(np.mean([s[name] for s in summaries])) for name, _ in DYNAMICS_SUMMARY}
          for p, summaries in per_run.items()}


def diagnostics_section(runs: Sequence[study_runs.Run], study_dir: str) -> tuple[list[str], list[str]]:
  """(markdown lines, figure names): one dynamics figure per placement (its lowest seed), and the
  study's init-analysis figure when present."""
  figures, seen = [], set()
  for r in sorted(runs, key=lambda r: (study_runs.placement_rank(r.placement), r.seed)):
    path = os.path.join(study_dir, r.workdir, study_runs.DIAGNOSTICS_FILE)
    if r.placement in seen or not os.path.exists(path):
      continue
    records = study_runs.read_diagnostics(path)
    if not records:
      continue
    seen.add(r.placement)
    name = f'dynamics_{study_runs.safe_name(r.placement)}.png'
    plot_dynamics(records, os.path.join(study_dir, name),
                  f'{r.placement}: training dynamics of {r.workdir}')
    figures.append(name)
  numbers = study_runs.read_json(os.path.join(study_dir, INIT_NUMBERS))
  if numbers and numbers.get('results'):  # redrawn from the numbers: committed studies rebuild it
    plot_init(numbers['results'], os.path.join(study_dir, INIT_FIGURE), numbers.get('data', ''))
  if os.path.exists(os.path.join(study_dir, INIT_FIGURE)):
    figures.append(INIT_FIGURE)
  if not figures:
    return [], []
  lines = ['## Training dynamics', '',
           'Per placement, from its first seed\'s `diagnostics.jsonl` (docs/training.md): the '
           'gradient norm of each block over training, the residual-stream RMS and the attention '
           'entropy by depth at the first and the last record'
           + ('; and the gradient norm per layer at initialization over depths '
              '(`python -m vit_jax.init_analysis`)' if INIT_FIGURE in figures else '') + '.', '']
  lines += [f'![{os.path.splitext(os.path.basename(f))[0]}]({f})' for f in figures]
  return lines + [''], figures
