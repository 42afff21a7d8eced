"""The study report: statistics against hand computation, tables, figures, real tiny runs."""

import json
import math
import os

import numpy as np
import pytest

import cifar_fixtures
from configs import common
from vit_jax import report
from vit_jax import train

PLACEMENTS = ('pre', 'post', 'addnorm', 'sandwich')
T_975_DF2 = 4.302652729749464   # Student t quantile 0.975, 2 degrees of freedom (tables)
T_975_DF1 = 12.706204736174698  # ... 1 degree of freedom
MIN_FIGURE_PIXELS = (400, 300)   # (width, height) a readable figure has at least


# ----------------------------------------------------------------------------- statistics


def test_summary_matches_hand_computation():
  s = report.summarize([0.30, 0.32, 0.34])
  assert s.n == 3
  assert s.mean == pytest.approx(0.32)
  assert s.std == pytest.approx(0.02)  # sqrt((0.02² + 0 + 0.02²) / 2)
  half = T_975_DF2 * 0.02 / math.sqrt(3)
  assert (s.ci_low, s.ci_high) == pytest.approx((0.32 - half, 0.32 + half))
  two = report.summarize([0.1, 0.3])
  assert two.std == pytest.approx(math.sqrt(0.02))
  assert two.half_width == pytest.approx(T_975_DF1 * math.sqrt(0.02) / math.sqrt(2))


def test_one_seed_has_no_spread_and_nan_is_skipped():
  s = report.summarize([0.5, float('nan')])
  assert s.n == 1 and s.mean == 0.5
  assert math.isnan(s.std) and math.isnan(s.ci_low)
  assert report.format_summary(s, 100) == '50.00'
  assert report.summarize([]).n == 0


def test_paired_t_test_matches_hand_computation():
  from scipy import stats
  a = {0: 0.30, 1: 0.32, 2: 0.34, 7: 0.9}  # seed 7 has no partner: ignored
  b = {0: 0.28, 1: 0.31, 2: 0.30}
  d = np.array([0.02, 0.01, 0.04])
  sd = math.sqrt(sum((x - d.mean()) ** 2 for x in d) / 2)
  t = d.mean() / (sd / math.sqrt(3))
  p = 2 * stats.t.sf(abs(t), 2)
  result = report.paired_t_test(a, b)
  assert result.n == 3
  assert result.mean_diff == pytest.approx(d.mean())
  assert result.t == pytest.approx(t) and result.t == pytest.approx(2.6457513, rel=1e-6)
  assert result.p == pytest.approx(p)
  half = T_975_DF2 * sd / math.sqrt(3)
  assert (result.ci_low, result.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))


def test_paired_t_test_undefined_cases():
  assert math.isnan(report.paired_t_test({0: 0.5}, {0: 0.4}).p)          # one pair
  assert math.isnan(report.paired_t_test({0: 0.5, 1: 0.6}, {0: 0.4, 1: 0.5}).p)  # equal diffs


def test_holm_adjustment():
  assert report.holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
  adjusted = report.holm_adjust([0.2, float('nan'), 0.01])
  assert adjusted[0] == pytest.approx(0.2) and adjusted[2] == pytest.approx(0.02)
  assert math.isnan(adjusted[1])
  assert report.holm_adjust([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 2 x 0.8 capped at 1


# ----------------------------------------------------------------------------- reading runs


def _write_lines(path, records, torn_tail=False):
  with open(path, 'w') as f:
    for r in records:
      f.write(json.dumps(r) + '\n')
    if torn_tail:
      f.write('{"step": 9, "spl')


def test_read_metrics_keeps_last_line_per_step_and_sums_resumed_wall_time(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  _write_lines(path, [
      {'step': 2, 'split': 'train', 'loss': 4.0, 'top1': 0.1, 'top5': 0.2, 'wall_time': 10.0},
      {'step': 4, 'split': 'train', 'loss': 3.0, 'top1': 0.2, 'top5': 0.3, 'wall_time': 20.0},
      # resumed from the step-2 checkpoint: a new process, a new clock
      {'step': 4, 'split': 'train', 'loss': 2.5, 'top1': 0.25, 'top5': 0.35, 'wall_time': 5.0},
      {'step': 4, 'split': 'val', 'loss': 2.9, 'top1': 0.3, 'top5': 0.5, 'num_examples': 10},
      {'step': 6, 'split': 'train', 'loss': 2.0, 'top1': 0.3, 'top5': 0.4, 'wall_time': 15.0},
  ], torn_tail=True)
  metrics = report.read_metrics(str(path))
  assert [r['step'] for r in metrics['train']] == [2, 4, 6]
  assert metrics['train'][1]['loss'] == 2.5
  assert report.train_wall_time(str(path)) == pytest.approx(20.0 + 15.0)


def test_total_steps_from_epochs():
  config = {'total_steps': 0, 'num_epochs': 2.0, 'batch_size': 16}
  metrics = {'train': [{'step': 5, 'epoch': 5 * 16 / 100}]}  # 100 training examples
  assert report.total_steps(config, metrics) == math.ceil(2 * 100 / 16)
  assert report.total_steps({'total_steps': 7}, {}) == 7


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
  _write_lines(os.path.join(workdir, 'metrics.jsonl'), lines)
  return workdir


def _assert_png(path):
  from matplotlib import image
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n', f'{path} is not a PNG'
  height, width = image.imread(path).shape[:2]
  assert width >= MIN_FIGURE_PIXELS[0] and height >= MIN_FIGURE_PIXELS[1], (path, width, height)


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
    _assert_png(os.path.join(study, name))
  with open(os.path.join(study, 'report.md')) as f:
    md = f.read()
  rows = _table_rows(md, '## Results per placement')
  assert [r[0] for r in rows] == list(PLACEMENTS)  # one row per placement, preset order
  assert summary['varying_fields'] == ['model.norm_placement']
  for row in rows:
    s = report.summarize(FINAL_TOP1[row[0]])
    assert row[1] == '3'
    assert row[3] == (f'{100 * s.mean:.2f} ± {100 * s.std:.2f} '
                      f'[{100 * s.ci_low:.2f}, {100 * s.ci_high:.2f}]')
    got = summary['groups'][row[0]]['final_val_top1']
    assert got['mean'] == pytest.approx(np.mean(FINAL_TOP1[row[0]]))
    assert got['std'] == pytest.approx(np.std(FINAL_TOP1[row[0]], ddof=1))

  comparisons = {(c['a'], c['b']): c for c in summary['comparisons']}
  assert len(comparisons) == 6
  pre_post = comparisons[('pre', 'post')]
  expected = report.paired_t_test(dict(enumerate(FINAL_TOP1['pre'])),
                                  dict(enumerate(FINAL_TOP1['post'])))
  assert pre_post['p'] == pytest.approx(expected.p)
  raw = [c['p'] for c in summary['comparisons']]
  assert [c['p_holm'] for c in summary['comparisons']] == pytest.approx(report.holm_adjust(raw))
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
    metrics = report.read_metrics(str(study / r['workdir'] / 'metrics.jsonl'))
    assert r['final_val_top1'] == metrics['val'][-1]['top1'] and metrics['val'][-1]['step'] == 4
  for name in summary['figures']:
    _assert_png(str(study / name))
