"""Tests for vit_jax/report_dynamics.py's stability grid: a run that diverged and one that ran to
the end without learning are both unstable, and the report says which is which."""

import json
import os

import figure_checks
from vit_jax import report
from vit_jax import report_dynamics
from vit_jax import study_runs

STEPS = 10


def _run(study, placement, lr, warmup, *, first_loss, final_val_loss, top1, diverged_at=None):
  workdir = os.path.join(study, placement, f'lr{lr}_w{warmup}', 'seed_0')
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'seed': 0, 'total_steps': STEPS, 'learning_rate': lr, 'warmup_fraction': warmup,
               'model': {'norm_placement': placement}}, f)
  last = diverged_at or STEPS
  lines = [{'step': s, 'split': 'train', 'loss': first_loss - 0.01 * s, 'top1': top1,
            'top5': top1, 'lr': lr, 'img_per_sec': 1.0, 'wall_time': float(s)}
           for s in range(1, last + 1)]
  if diverged_at is None:
    lines.append({'step': STEPS, 'split': 'val', 'loss': final_val_loss, 'top1': top1,
                  'top5': top1, 'num_examples': 10})
  else:
    with open(os.path.join(workdir, study_runs.DIVERGED_FILE), 'w') as f:
      json.dump({'step': diverged_at, 'loss': 'nan'}, f)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(l) + '\n' for l in lines)


def _study(tmp_path):
  study = str(tmp_path / 'study')
  for warmup in (0.0, 0.05):
    # pre trains everywhere; post trains at 1e-3, stalls at 1e-2 without warmup (its val loss
    # ends at the uniform prediction's, above its first logged loss) and diverges at 1e-1.
    for lr in (1e-3, 1e-2, 1e-1):
      _run(study, 'pre', lr, warmup, first_loss=4.5, final_val_loss=3.5, top1=0.2)
    _run(study, 'post', 1e-3, warmup, first_loss=4.5, final_val_loss=3.8, top1=0.15)
    _run(study, 'post', 1e-2, warmup, first_loss=4.57, top1=0.008 if warmup == 0 else 0.1,
         final_val_loss=4.607 if warmup == 0 else 4.0)
    _run(study, 'post', 1e-1, warmup, first_loss=4.6, final_val_loss=None, top1=0.0,
         diverged_at=3)
  return study


def test_outcomes_and_largest_stable_learning_rate(tmp_path):
  runs = study_runs.find_runs(_study(tmp_path))
  warmup, grid = report_dynamics.stability_grid(runs)
  assert warmup == 'warmup_fraction'
  assert grid['post'][(1e-2, 0.0)] == [(report_dynamics.STALLED, 0.008)]
  assert grid['post'][(1e-2, 0.05)] == [(report_dynamics.TRAINED, 0.1)]
  assert grid['post'][(1e-1, 0.0)] == [(report_dynamics.DIVERGED, None)]
  assert report_dynamics.largest_stable(grid['post']) == {0.0: 1e-3, 0.05: 1e-2}
  assert report_dynamics.largest_stable(grid['pre']) == {0.0: 1e-1, 0.05: 1e-1}


def test_report_table_counts_diverged_and_stalled_runs(tmp_path):
  study = _study(tmp_path)
  summary = report.build_report(study)
  assert summary['largest_stable_learning_rate']['post'] == {'0.0': 1e-3, '0.05': 1e-2}
  with open(os.path.join(study, 'report.md')) as f:
    text = f.read()
  # placement | largest stable lr at warmup 0 | at 0.05 | diverged runs | stalled runs
  assert '| post | 0.001 | 0.01 | 2 | 1 |' in text
  assert '| pre | 0.1 | 0.1 | 0 | 0 |' in text
  assert 'stalled' in text
  figure_checks.assert_figure(os.path.join(study, 'stability.png'))
  # a grid's figures are the heatmap and the loss per cell, not 12 overlaid conditions' curves
  assert summary['figures'][:2] == ['stability.png', report_dynamics.STABILITY_LOSS_FIGURE]
  figure_checks.assert_figure(os.path.join(study, report_dynamics.STABILITY_LOSS_FIGURE))
  assert f'![training loss]({report_dynamics.STABILITY_LOSS_FIGURE})' in text
  assert not os.path.exists(os.path.join(study, 'curves.png'))


def test_a_run_stuck_near_its_first_loss_stalled(tmp_path):
  # post-LN at 3e-3 in the study's grid: 1.3% top-1, val loss 0.02 nats under its first logged
  # training loss. "No lower than" would call it trained; STALL_NATS calls it stalled.
  study = str(tmp_path / 'study')
  _run(study, 'post', 3e-3, 0.0, first_loss=4.60, final_val_loss=4.58, top1=0.013)
  learned = 4.50 - 2 * report_dynamics.STALL_NATS
  _run(study, 'post', 1e-3, 0.0, first_loss=4.50, final_val_loss=learned, top1=0.06)
  outcomes = {r.config['learning_rate']: report_dynamics.outcome(r)
              for r in study_runs.find_runs(study)}
  assert outcomes == {3e-3: (report_dynamics.STALLED, 0.013), 1e-3: (report_dynamics.TRAINED, 0.06)}


def test_a_rebuilt_report_removes_the_figures_it_no_longer_draws(tmp_path):
  study = _study(tmp_path)
  stale = ('curves.png', 'final_accuracy.png', 'dynamics_gone.png')  # e.g. from before LRs varied
  for name in stale + ('notes.png',):
    with open(os.path.join(study, name), 'wb') as f:
      f.write(b'old')
  summary = report.build_report(study)
  for name in stale:
    assert not os.path.exists(os.path.join(study, name)), name
  assert os.path.exists(os.path.join(study, 'notes.png'))  # not a report figure: kept
  for name in summary['figures']:
    assert os.path.exists(os.path.join(study, name)), name


def test_a_run_whose_first_log_overshot_is_judged_from_ln_classes(tmp_path):
  # deepnorm at 1e-2 in the study's grid: first logged loss 4.72 (the first 50 steps overshoot),
  # then ln 100 = 4.605 to the end. 0.11 nats under its first log, but not under ln 100.
  study = str(tmp_path / 'study')
  _run(study, 'deepnorm', 1e-2, 0.0, first_loss=4.72, final_val_loss=4.607, top1=0.0102)
  (run,) = study_runs.find_runs(study)
  assert report_dynamics.outcome(run)[0] == report_dynamics.TRAINED   # dataset unknown: first log
  config_file = os.path.join(study, run.workdir, study_runs.CONFIG_FILE)
  with open(config_file) as f:
    config = json.load(f)
  with open(config_file, 'w') as f:
    json.dump({**config, 'data': {'dataset': 'cifar100'}}, f)   # as the trainer writes it
  (run,) = study_runs.find_runs(study)
  assert report_dynamics.outcome(run)[0] == report_dynamics.STALLED


def test_class_counts_agree_with_the_cifar_reader():
  from vit_jax.data import cifar  # pylint: disable=g-import-not-at-top
  layouts = {lay.dataset: lay.num_classes for lay in cifar._LAYOUTS}  # pylint: disable=protected-access
  assert report_dynamics.NUM_CLASSES == layouts
