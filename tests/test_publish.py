"""Tests for vit_jax/publish.py: only finished and diverged runs' small files are copied, never
checkpoints or logs, and the report is rebuilt from the copies alone."""

import json
import os
import subprocess
import sys

from vit_jax import diagnostics
from vit_jax import publish
from vit_jax import study_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4


def _run(study, placement, seed, *, steps_done=STEPS, diverged=False, top1=0.3):
  workdir = os.path.join(study, placement, f'seed_{seed}')
  os.makedirs(os.path.join(workdir, 'checkpoints', '4'))
  with open(os.path.join(workdir, 'checkpoints', '4', 'state'), 'w') as f:
    f.write('weights')
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'seed': seed, 'total_steps': STEPS, 'model': {'norm_placement': placement}}, f)
  lines = [{'step': s, 'split': 'train', 'loss': 4.0 - 0.1 * s, 'top1': top1, 'top5': top1,
            'lr': 1e-3, 'img_per_sec': 1.0, 'wall_time': float(s)} for s in range(1, steps_done + 1)]
  if steps_done == STEPS and not diverged:
    lines.append({'step': STEPS, 'split': 'val', 'loss': 3.0, 'top1': top1, 'top5': top1,
                  'num_examples': 10})
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(l) + '\n' for l in lines)
  with open(os.path.join(workdir, 'diagnostics.jsonl'), 'w') as f:
    f.writelines(json.dumps({'step': s, 'layer': l, **{q: 1.0 for q in diagnostics.QUANTITIES}})
                 + '\n' for s in (0, STEPS) for l in (0, 1))
  with open(os.path.join(workdir, 'run.log'), 'w') as f:
    f.write('log\n')
  if diverged:
    with open(os.path.join(workdir, study_runs.DIVERGED_FILE), 'w') as f:
      json.dump({'step': steps_done, 'loss': 'nan'}, f)
  if steps_done == STEPS or diverged:
    with open(os.path.join(workdir, study_runs.DONE_FILE), 'w') as f:
      json.dump({'seconds': 60.0, 'cpu': 'test CPU', 'cores': 2}, f)
  return workdir


def _study(tmp_path):
  study = str(tmp_path / 'runs' / 'study')
  for seed, (a, b) in enumerate(((0.30, 0.35), (0.31, 0.37))):
    _run(study, 'pre', seed, top1=a)
    _run(study, 'post', seed, top1=b)
  _run(study, 'sandwich', 0, steps_done=2)            # still running
  _run(study, 'deepnorm', 0, steps_done=2, diverged=True)
  with open(os.path.join(study, study_runs.SWEEP_FILE), 'w') as f:
    json.dump({'runs': [{'workdir': w} for w in ('pre/seed_0', 'pre/seed_1', 'post/seed_0',
                                                 'post/seed_1', 'sandwich/seed_0',
                                                 'deepnorm/seed_0', 'mixln/seed_0')]}, f)
  os.makedirs(os.path.join(study, 'init'))
  with open(os.path.join(study, 'init', 'init_grad_norms.json'), 'w') as f:
    json.dump({'results': {}}, f)
  return study


def test_publishes_finished_and_diverged_runs_only(tmp_path):
  study, out = _study(tmp_path), str(tmp_path / 'docs' / 'results' / 'study')
  published, pending = publish.publish(study, out)
  assert sorted(published) == ['deepnorm/seed_0', 'post/seed_0', 'post/seed_1', 'pre/seed_0',
                               'pre/seed_1']
  assert sorted(p.split(' ')[0] for p in pending) == ['mixln/seed_0', 'sandwich/seed_0']
  files = sorted(os.path.relpath(os.path.join(root, f), out)
                 for root, _, names in os.walk(out) for f in names)
  assert 'pre/seed_0/metrics.jsonl' in files and 'pre/seed_0/diagnostics.jsonl' in files
  assert 'pre/seed_0/DONE' in files and 'deepnorm/seed_0/diverged.json' in files
  assert 'init/init_grad_norms.json' in files and 'sweep.json' in files
  assert not [f for f in files if 'checkpoints' in f or f.endswith('run.log')]
  assert not [f for f in files if f.startswith('sandwich')]


def test_command_line_rebuilds_the_report_from_the_copies(tmp_path):
  study, out = _study(tmp_path), str(tmp_path / 'published')
  proc = subprocess.run([sys.executable, '-m', 'vit_jax.publish', study, out, '--baseline=pre'],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert 'published 5 runs' in proc.stdout and '2 still to run' in proc.stdout
  with open(os.path.join(out, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['baseline'] == 'pre'
  assert [(c['a'], c['b']) for c in summary['comparisons']] == [('post', 'pre')]  # not every pair
  assert {r['workdir']: r['status'] for r in summary['runs']}['deepnorm/seed_0'] == 'diverged'
  with open(os.path.join(out, 'report.md')) as f:
    assert 'Each placement against **pre**' in f.read()
  same = subprocess.run([sys.executable, '-m', 'vit_jax.publish', study, study],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert same.returncode == 2 and 'both the study and the destination' in same.stderr


def test_restore_lets_a_sweep_on_a_new_machine_skip_published_runs(tmp_path):
  """runs/ is lost with the machine: the published files, copied back, make the sweep's DONE
  check and the report see the runs as finished; a run with its own DONE is left alone."""
  study, out = _study(tmp_path), str(tmp_path / 'published')
  publish.publish(study, out)
  fresh = str(tmp_path / 'new_machine' / 'study')
  os.makedirs(os.path.join(fresh, 'pre', 'seed_1'))
  with open(os.path.join(fresh, 'pre', 'seed_1', study_runs.DONE_FILE), 'w') as f:
    f.write('{"seconds": 1}')
  proc = subprocess.run([sys.executable, '-m', 'vit_jax.publish', '--restore', out, fresh],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert 'restored 4 published runs' in proc.stdout  # 5 published, pre/seed_1 had its own DONE
  runs = {r.workdir: r.status for r in study_runs.find_runs(fresh)}
  assert runs['pre/seed_0'] == 'finished' and runs['deepnorm/seed_0'] == 'diverged'
  with open(os.path.join(fresh, 'pre', 'seed_1', study_runs.DONE_FILE)) as f:
    assert f.read() == '{"seconds": 1}'
  with open(os.path.join(fresh, 'pre', 'seed_0', study_runs.DONE_FILE)) as f:
    assert json.load(f)['cpu'] == 'test CPU'  # the sweep compares its recorded args
  assert os.path.exists(os.path.join(fresh, 'init', 'init_grad_norms.json'))
