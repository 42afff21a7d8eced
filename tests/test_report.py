"""The study report: tables, figures, a synthetic study and real tiny runs."""

import json
import os

import numpy as np
import pytest

import cifar_fixtures
import figure_checks
from configs import common
from vit_jax import report
from vit_jax import study_runs
from vit_jax import study_stats
from vit_jax import train

PLACEMENTS = ('pre', 'post', 'addnorm', 'sandwich')


# ----------------------------------------------------------------------------- markdown


def test_one_seed_is_formatted_without_spread():
  s = study_stats.summarize([0.5, float('nan')])
  assert report.format_summary(s, 100) == '50.00'


# ----------------------------------------------------------------------------- a synthetic study

# Final val top-1 per (placement, seed): the numbers the tables must reproduce.
FINAL_TOP1 = {'pre': (0.40, 0.42, 0.44), 'post': (0.30, 0.33, 0.31),
              'addnorm': (0.41, 0.41, 0.45), 'sandwich': (0.38, 0.40, 0.39)}
TOTAL = 10


def _synthetic_run(study, placement, seed, top1, steps=TOTAL, extra=None):
  workdir = os.path.join(study, placement, f'seed_{seed}')
  os.makedirs(workdir)
  config = {'seed': seed, 'total_steps': TOTAL, 'num_epochs': 1.0, 'batch_size': 8,
            'model': {'norm_placement': placement, 'num_layers': 2, **(extra or {})},
            'sweep': {'seeds': [seed]}}  # sweep.* differs between runs: must not split groups
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config, f)
  lines = []
  for step in range(2, steps + 1, 2):
    frac = step / TOTAL
    lines.append({'step': step, 'split': 'train', 'loss': 4 - 2 * frac, 'top1': top1 * frac,
                  'top5': min(1, 2 * top1 * frac), 'lr': 1e-3 * (1 - frac), 'img_per_sec': 100.0,
                  'epoch': frac, 'wall_time': 6.0 * step})
    if step % 4 == 0 or step == TOTAL:
      lines.append({'step': step, 'split': 'val', 'loss': 4.1 - 2 * frac,
                    'top1': top1 * frac if step < TOTAL else top1,
                    'top5': min(1, 2 * top1), 'num_examples': 100})
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in lines)
  return workdir


def _table_rows(markdown, heading):
  section = markdown.split(heading, 1)[1].split('\n## ', 1)[0]
  rows = [l for l in section.splitlines() if l.startswith('| ') and not l.startswith('| placement')
          and not l.startswith('| A |')]
  return [[c.strip() for c in r.strip('|').split('|')] for r in rows]


def test_report_on_synthetic_study(tmp_path):
  study = str(tmp_path / 'study')
  for placement, values in FINAL_TOP1.items():
    for seed, top1 in enumerate(values):
      _synthetic_run(study, placement, seed, top1)
  _synthetic_run(study, 'none', 0, 0.5, steps=6)  # interrupted: listed, not counted

  summary = report.build_report(study)

  for name in ('report.md', 'summary.json', 'curves.png', 'learning_rate.png',
               'final_accuracy.png'):
    assert os.path.exists(os.path.join(study, name)), name
  for name in ('curves.png', 'learning_rate.png', 'final_accuracy.png'):
    figure_checks.assert_figure(os.path.join(study, name), (400, 300))
  with open(os.path.join(study, 'report.md')) as f:
    md = f.read()
  rows = _table_rows(md, '## Results per placement')
  assert [r[0] for r in rows] == list(PLACEMENTS)  # one row per placement, preset order
  assert summary['varying_fields'] == ['model.norm_placement']
  for row in rows:
    s = study_stats.summarize(FINAL_TOP1[row[0]])
    assert row[1] == '3'
    assert row[3] == (f'{100 * s.mean:.2f} ± {100 * s.std:.2f} '
                      f'[{100 * s.ci_low:.2f}, {100 * s.ci_high:.2f}]')
    got = summary['groups'][row[0]]['final_val_top1']
    assert got['mean'] == pytest.approx(np.mean(FINAL_TOP1[row[0]]))
    assert got['std'] == pytest.approx(np.std(FINAL_TOP1[row[0]], ddof=1))

  comparisons = {(c['a'], c['b']): c for c in summary['comparisons']}
  assert len(comparisons) == 6
  pre_post = comparisons[('pre', 'post')]
  expected = study_stats.paired_t_test(dict(enumerate(FINAL_TOP1['pre'])),
                                       dict(enumerate(FINAL_TOP1['post'])))
  assert pre_post['p'] == pytest.approx(expected.p)
  raw = [c['p'] for c in summary['comparisons']]
  assert ([c['p_holm'] for c in summary['comparisons']] ==
          pytest.approx(study_stats.holm_adjust(raw)))
  assert '| pre | post | 3 |' in md
  assert '`none/seed_0`' in md and 'incomplete (at step 6 of 10)' in md
  statuses = {r['workdir']: r['status'] for r in summary['runs']}
  assert statuses[os.path.join('none', 'seed_0')] == 'incomplete'


def test_extra_axes_make_their_own_rows(tmp_path):
  study = str(tmp_path / 'study')
  for layers in (2, 4):
    for seed in (0, 1):
      workdir = _synthetic_run(study, 'pre', seed, 0.3 + 0.01 * seed + 0.05 * layers)
      os.rename(workdir, workdir + f'_l{layers}')
      with open(workdir + f'_l{layers}/config.json') as f:
        config = json.load(f)
      config['model']['num_layers'] = layers
      with open(workdir + f'_l{layers}/config.json', 'w') as f:
        json.dump(config, f)
  summary = report.build_report(study)
  assert summary['varying_fields'] == ['model.num_layers']
  assert sorted(summary['groups']) == ['model.num_layers=2', 'model.num_layers=4']


def test_one_seed_grid_has_no_table_of_untestable_pairs(tmp_path):
  """A learning-rate grid runs one seed per cell: no pair can be tested, so the report says so
  in a sentence instead of listing every pair as n/a (1,540 rows for the study's 56 cells)."""
  study = str(tmp_path / 'study')
  for i, placement in enumerate(PLACEMENTS):
    _synthetic_run(study, placement, 0, 0.2 + 0.05 * i)
  summary = report.build_report(study)
  with open(os.path.join(study, 'report.md')) as f:
    md = f.read()
  assert summary['comparisons'] == []
  assert 'No tests: no two conditions share two finished seeds' in md
  assert '| A |' not in md and 'n/a' not in md
  _synthetic_run(study, 'pre', 1, 0.21)              # a second seed of two conditions: testable
  _synthetic_run(study, 'post', 1, 0.26)
  summary = report.build_report(study)
  assert len(summary['comparisons']) == 6 and 'No tests' not in open(
      os.path.join(study, 'report.md')).read()


def test_curves_give_every_group_its_own_colour_and_style():
  """13 schemes: tab20's paired light/dark hues made pre and post look alike; tab10's ten hues,
  then a new line style, keep up to 30 groups apart."""
  styles = [report.curve_style(i) for i in range(30)]
  assert len(set(styles)) == 30
  assert len({hue for hue, _ in styles[:10]}) == 10 and styles[10] == (0, '--')


def test_missing_study_says_how_to_create_it(tmp_path):
  with pytest.raises(FileNotFoundError, match='vit_jax.sweep'):
    report.build_report(str(tmp_path / 'nothing'))


# ----------------------------------------------------------------------------- real tiny runs


def test_report_on_real_tiny_runs(tmp_path):
  archive = cifar_fixtures.write_cifar100_binary(
      str(tmp_path / 'data'), {'train': cifar_fixtures.make_examples(120, 100)})
  study = tmp_path / 'study'
  for placement in ('pre', 'post'):
    for seed in (0,):  # statistics over seeds are checked on fixed numbers above
      config = common.get_config()
      config.data = cifar_fixtures.data_config(archive=archive, image_size=8, val_fraction=0.2)
      config.model.update(patch_size=4, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=16,
                          norm_placement=placement)
      config.update(seed=seed, batch_size=16, eval_batch_size=16, total_steps=4, warmup_steps=1,
                    log_every=2, eval_every=2, checkpoint_every=4, async_checkpoints=False)
      train.train_and_evaluate(config, str(study / placement / f'seed_{seed}'))

  summary = report.build_report(str(study))
  with open(study / 'report.md') as f:
    md = f.read()
  assert [r[0] for r in _table_rows(md, '## Results per placement')] == ['pre', 'post']
  assert all(r['status'] == 'finished' for r in summary['runs'])
  for r in summary['runs']:  # the table's numbers are the runs' last val lines
    metrics = study_runs.read_metrics(str(study / r['workdir'] / 'metrics.jsonl'))
    assert r['final_val_top1'] == metrics['val'][-1]['top1'] and metrics['val'][-1]['step'] == 4
  for name in summary['figures']:
    figure_checks.assert_figure(str(study / name), (400, 300))
