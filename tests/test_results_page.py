"""Tests for vit_jax/results_page.py: the study page's numbers and findings come from the files."""

import json
import math
import os
import subprocess
import sys

import figure_checks
from vit_jax import diagnostics
from vit_jax import report
from vit_jax import report_dynamics
from vit_jax import results_page
from vit_jax import study_findings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4
TRAIN_IMAGES = 64
# Final val top-1 per scheme and seed: post is consistently ~5 points worse than pre, dual
# patchnorm within noise of it.
TOP1 = {'pre': (0.31, 0.33, 0.32), 'post': (0.26, 0.28, 0.265),
        'dual_patchnorm': (0.32, 0.32, 0.33)}


def _run(study, name, config, top1, *, val_loss=3.0, seconds=3600.0, paused=0.0,
         diagnostics_values=None):
  """A finished run that trained for `seconds`; `paused` seconds of SIGSTOP before its last
  log line count in its DONE record (as the sweep measures it), not in its training time."""
  workdir = os.path.join(study, name)
  os.makedirs(workdir)
  full = {'total_steps': STEPS, 'batch_size': 8, 'learning_rate': 1e-3, 'warmup_fraction': 0.05,
          'data': {'image_size': 32}, **config,
          'model': {'patch_size': 8, 'num_layers': 6, 'hidden_size': 128, **config['model']}}
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(full, f)
  lines = [{'step': s, 'split': 'train', 'loss': 4.5 - 0.1 * s, 'top1': top1, 'top5': top1,
            'lr': 1e-3, 'img_per_sec': 1.0, 'epoch': s * 8 / TRAIN_IMAGES,
            'wall_time': seconds * s / STEPS + (paused if s == STEPS else 0.0)}
           for s in range(1, STEPS + 1)]
  lines.append({'step': STEPS, 'split': 'val', 'loss': val_loss, 'top1': top1, 'top5': top1,
                'num_examples': 10})
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(l) + '\n' for l in lines)
  with open(os.path.join(workdir, 'diagnostics.jsonl'), 'w') as f:
    f.writelines(json.dumps({'step': s, 'layer': layer, **{q: 1.0 for q in diagnostics.QUANTITIES},
                             **(diagnostics_values or {})})
                 + '\n' for s in (0, STEPS) for layer in (0, 1))
  with open(os.path.join(workdir, 'DONE'), 'w') as f:
    json.dump({'seconds': seconds + paused, 'cpu': 'Test CPU (AVX2)', 'cores': 2,
               **({'code': 'abc123'} if config['seed'] else {})}, f)


def _results(tmp_path):
  results = tmp_path / 'results'
  accuracy = str(results / results_page.ACCURACY)
  planned = []
  for scheme, values in TOP1.items():
    for seed, top1 in enumerate(values):
      _run(accuracy, f'{scheme}/seed_{seed}',
           {'seed': seed, 'model': {'norm_placement': scheme}}, top1,
           paused=7200.0 if (scheme, seed) == ('pre', 0) else 0.0)
      planned.append({'workdir': f'{scheme}/seed_{seed}'})
  planned.append({'workdir': 'dyt/seed_0'})  # not run yet
  with open(os.path.join(accuracy, 'sweep.json'), 'w') as f:
    json.dump({'runs': planned}, f)
  os.makedirs(os.path.join(accuracy, 'init'))
  curve = lambda last, depth: {'total': [1.0] * (depth - 1) + [last], 'attn': [], 'mlp': []}
  with open(os.path.join(accuracy, 'init', 'init_grad_norms.json'), 'w') as f:
    json.dump({'seconds': 36.0, 'cpu': 'Test CPU (AVX2)', 'cores': 2, 'data': 'test', 'results': {
        'pre': {str(d): curve(2.0 / math.sqrt(d), d) for d in (6, 48)},    # 1/sqrt(L)
        'post': {str(d): curve(1.5, d) for d in (6, 48)},                   # flat
        'none': {'6': curve(3.0, 6), '48': curve(float('nan'), 48)}}}, f)
  stability = str(results / results_page.STABILITY)
  for lr in (1e-3, 1e-2):
    for warmup in (0.0, 0.05):
      for scheme in ('pre', 'post'):
        stalls = scheme == 'post' and lr == 1e-2 and warmup == 0.0  # ends at ln(100)
        best = scheme == 'pre' and lr == 1e-2 and warmup == 0.05     # pre's best cell
        _run(stability, f'{scheme}/lr{lr}_w{warmup}',
             {'seed': 0, 'learning_rate': lr, 'warmup_fraction': warmup,
              'model': {'norm_placement': scheme}}, 0.008 if stalls else 0.12 if best else 0.1,
             val_loss=4.61 if stalls else 3.9, seconds=360.0)
  return str(results)


def test_page_findings_come_from_the_files(tmp_path):
  results = _results(tmp_path)
  with open(results_page.build_page(results)) as f:
    page = f.read()
  assert 'accuracy study 9/10 runs, stability grid 8/8 runs, init analysis 3 schemes' in page
  assert 'still running' in page
  assert 'Wall time left, at the median finished run: accuracy ~1.0 h.' in page  # 1 run of 1 h
  # pre: 32.00 ± 1.00; post - pre = -5.00 on every seed
  # pre 32.00 ± 1.00; post 26.83 ± 1.04; post - pre: -5, -5, -5.5 points
  assert '| pre | 3 | 32.00 ± 1.00 [29.52, 34.48] | — | — | (baseline) |' in page
  assert '| post | 3 | 26.83 ± 1.04 [24.25, 29.42] | -5.17 [-5.88, -4.45] |' in page
  assert '**Worse than pre-LN**: `post`.' in page
  assert 'a rough plan, not a power analysis): none.' in page  # dual_patchnorm's CI spans 0
  assert '**Better than pre-LN** (Holm-adjusted p < 0.05): none.' in page
  assert '**holds** for the 2 schemes tested (none significantly better)' in page
  assert '`dual_patchnorm` is **indistinguishable** against pre' in page
  assert 'pre` reaches 32.00% val top-1 (at least the 30%' in page
  assert "**pre-LN: the last layer's gradient shrinks about as 1/√L** (as predicted)" in page
  assert "**post-LN: the last layer's gradient does not shrink with depth** (as predicted)" in page
  assert '`none` at L=48: no norm in the blocks (a control).' in page
  # the layer profile: pre's fixture ends at 2/sqrt(L) of its first block (0.82 at L=6: flat;
  # 0.29 at L=48: falls), post's at 1.5x (grows toward the output, as Xiong et al. predict)
  assert ('`pre` 0.82 (L=6), 0.29 (L=48): **differs with depth** (predicted: about flat); '
          '`post` 1.50 (L=6), 1.50 (L=48): **grows toward the output** (as predicted). The layer '
          'profile **does not hold** here.') in page
  assert '`post` (0.001 without, 0.01 with)' in page  # needs warmup at 1e-2
  assert '`pre`, `post` trained at 0.01' in page  # post with warmup
  assert ('`pre` 0.01 (warmup_fraction 0.05), `post` 0.001 (warmup_fraction 0). The accuracy '
          'study trains every scheme at 0.001; the grid\'s best differs for `pre`.') in page
  assert ('A 6-layer, width-128 ViT on 16 tokens of 32-pixel images,\n  trained for 4 steps '
          '(0.5 epochs) on 64 images') in page
  assert 'which allows for the 2 comparisons, does not reject' in page  # post, sandwich vs pre
  assert '## Accuracy: 3 schemes × 3 seeds' in page and '(4 steps, 1 seed(s))' in page
  # 9 accuracy runs of 1 h (pre seed 0's 2 h pause not counted), 8 stability runs of 0.1 h,
  # the init analysis 0.01 h; 2 cores
  assert '| Test CPU (AVX2) | 2 | 18 | 9.81 | 19.62 |' in page
  assert '| pre | 32.00 | 1 | 1 | 1 | 1 |' in page  # the dynamics beside the accuracy
  assert 'Rank correlations: fewer than 5 schemes so far' in page
  assert ('Code: `abc123` (6 runs), not recorded (11 runs, finished before the sweep recorded '
          'it).') in page
  for figure in ('final_accuracy.png', 'curves.png', 'dynamics_pre.png', 'init/init_grad_norms.png'):
    figure_checks.assert_figure(os.path.join(results, results_page.ACCURACY, figure))
  figure_checks.assert_figure(os.path.join(results, results_page.STABILITY, 'stability.png'))
  assert f'({results_page.STABILITY}/{report_dynamics.STABILITY_LOSS_FIGURE})' in page


def test_command_line(tmp_path):
  results = _results(tmp_path)
  proc = subprocess.run([sys.executable, '-m', 'vit_jax.results_page', results], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert os.path.exists(os.path.join(results, 'README.md'))
  bad = subprocess.run([sys.executable, '-m', 'vit_jax.results_page'], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2 and 'usage' in bad.stderr


def test_dynamics_summary_numbers():
  records = [{'step': s, 'layer': l, 'attn_grad_norm': g, 'mlp_grad_norm': 0.0, 'stream_rms': rms,
              'attn_entropy_mean': ent, 'attn_logit_max': logit}
             for s, l, g, rms, ent, logit in [
                 (0, 0, 0.0, 1.0, 2.0, 1.0), (0, 1, 0.0, 9.0, 0.0, 99.0),   # step 0: ignored
                 (10, 0, 4.0, 1.0, 2.0, 5.0), (10, 1, 1.0, 2.0, 1.0, 3.0),
                 (20, 0, 6.0, 2.0, 1.5, 7.0), (20, 1, 2.0, 8.0, 0.5, 1.0)]]
  summary = report_dynamics.summarize_dynamics(records)
  assert summary == {'stream growth': (2.0 + 4.0) / 2, 'gradient spread': (4.0 + 3.0) / 2,
                     'lowest attention entropy': (1.0 + 0.5) / 2,
                     'largest attention logit': (5.0 + 7.0) / 2}


def test_dynamics_findings_name_collapse_and_correlations(tmp_path):
  study = str(tmp_path / 'study')
  # six schemes; the logit grows as accuracy falls (a perfect negative rank correlation), the
  # entropy collapses in the worst one only; stream growth and gradient spread do not vary.
  schemes = ('pre', 'post', 'respost', 'sandwich', 'deepnorm', 'qknorm')
  for i, scheme in enumerate(schemes):
    for seed in (0, 1):
      _run(study, f'{scheme}/seed_{seed}', {'seed': seed, 'model': {'norm_placement': scheme}},
           0.40 - 0.02 * i + 0.001 * seed,
           diagnostics_values={'attn_logit_max': 10.0 * (i + 1),
                               'attn_entropy_mean': 0.1 if scheme == 'qknorm' else 1.5})
  summary = report.build_report(study, baseline='pre')
  text = '\n'.join(study_findings.dynamics_findings(study, summary))
  assert '| qknorm | 30.05 | 1 | 1 | 0.1 | 60 |' in text
  assert '**Attention collapse**' in text and '`qknorm` (0.1 nats, 30.05% val top-1' in text
  assert 'across the 6 schemes' in text
  assert 'largest attention logit ρ = -1.00 (Holm p = 0.000: schemes with less of it scored higher)' in text
  assert 'stream growth: the same for every scheme' in text


def test_layer_profile_holds_only_when_both_schemes_match_xiong():
  flat, growing = [1.0, 1.1, 0.9, 1.2], [1.0, 1.5, 2.0, 3.0]
  as_predicted = {'results': {'pre': {'4': {'total': flat}}, 'post': {'4': {'total': growing}}}}
  swapped = {'results': {'pre': {'4': {'total': growing}}, 'post': {'4': {'total': flat}}}}
  assert study_findings.profile_findings(as_predicted)[0].endswith('**holds** here.')
  text = study_findings.profile_findings(swapped)[0]
  assert '`pre` 3.00 (L=4): **grows toward the output** (predicted: about flat)' in text
  assert text.endswith('**does not hold** here.')
  assert study_findings.profile_findings({'results': {}}) == []


def test_leaning_names_the_indistinguishable_schemes_whose_ci_excludes_zero():
  import dataclasses
  from vit_jax import study_stats
  pre = {0: 0.32, 1: 0.32, 2: 0.32}
  tests = {'deepnorm': {0: 0.34, 1: 0.3475, 2: 0.3325},  # +2 pp, sd 0.75 pp: CI excludes 0, p 0.044
           'mixln': {0: 0.33, 1: 0.31, 2: 0.325},        # CI includes 0
           'post': {0: 0.26, 1: 0.27, 2: 0.265}}         # worse: not "leaning"
  comparisons = [{'a': k, 'b': 'pre', **dataclasses.asdict(study_stats.paired_t_test(v, pre))}
                 for k, v in tests.items()]
  summary = {'alpha': 0.05, 'groups': {}, 'comparisons': comparisons}
  verdicts = {'pre': '(baseline)', 'deepnorm': 'indistinguishable', 'mixln': 'indistinguishable',
              'post': 'worse'}
  lines = study_findings.accuracy_findings(summary, verdicts)
  leaning = [l for l in lines if 'Leaning' in l]
  # Holm's strictest step over 3 tests: 0.05 / 3. With the observed sd, t = (2 / 0.75) sqrt(n):
  # 4.62 at n = 3 < t_{1-0.05/6}(2) = 7.65; 5.33 at n = 4 > t(3) = 4.86: 4 seeds
  assert leaning == [
      "- **Leaning, not shown** (indistinguishable, but the comparison's own 95% CI excludes 0; in "
      "brackets, the seeds at which the observed difference and spread would pass Holm's "
      "strictest step, p < 0.017: a rough plan, not a power analysis): `deepnorm` +2.00 pp "
      "(4 seeds)."]
  verdicts['deepnorm'] = 'better'
  assert 'power analysis): none.' in study_findings.accuracy_findings(summary, verdicts)[3]


def test_stability_findings_before_the_grid_varies_the_learning_rate():
  # the sweep's first cell (one learning rate, every scheme) is done: no largest rate to read
  assert study_findings.stability_findings({'largest_stable_learning_rate': {}}) == [
      '- Stability grid: its finished runs do not vary the learning rate yet.']
  stable = {'pre': {'0.0': 1e-2, '0.05': 1e-2}, 'post': {'0.0': 3e-4, '0.05': 1e-3}}
  assert study_findings.stability_findings({'largest_stable_learning_rate': stable}) == [
      '- **Warmup**: the largest stable learning rate is higher with warmup than without for '
      '`post` (0.0003 without, 0.001 with); the others are as stable without it.',
      '- **Largest learning rate**: `pre` trained at 0.01, the largest stable rate in the grid.']
  stable['post'] = {'0.0': 1e-3, '0.05': 1e-3}
  assert study_findings.stability_findings({'largest_stable_learning_rate': stable})[0] == (
      "- **Warmup**: no scheme's largest stable learning rate is higher with warmup than without: "
      'each is as stable without it.')


def test_no_best_learning_rate_while_the_grid_has_one_rate(tmp_path):
  stability = str(tmp_path / 'stability')
  for warmup in (0.0, 0.05):
    _run(stability, f'pre/w{warmup}', {'seed': 0, 'learning_rate': 3e-4, 'warmup_fraction': warmup,
                                       'model': {'norm_placement': 'pre'}}, 0.1, seconds=60.0)
  assert study_findings.best_learning_rates(stability, 1e-3) == []
  _run(stability, 'pre/lr1e-3', {'seed': 0, 'learning_rate': 1e-3, 'warmup_fraction': 0.05,
                                 'model': {'norm_placement': 'pre'}}, 0.12, seconds=60.0)
  assert study_findings.best_learning_rates(stability, 1e-3)[0].endswith(
      '`pre` 0.001 (warmup_fraction 0.05). The accuracy study trains every scheme at 0.001; that '
      'is every scheme\'s best in the grid.')
