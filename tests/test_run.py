"""End to end through the command line: train, then eval reproduces the validation figures."""

import json
import os
import subprocess
import sys

import pytest

import cifar_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config=configs/cpu_quick.py', '--config.data.image_size=8',
        '--config.data.strict_counts=False', '--config.data.val_fraction=0.2',
        '--config.model.patch_size=4', '--config.model.hidden_size=16',
        '--config.model.num_layers=1', '--config.model.num_heads=2', '--config.model.mlp_dim=32',
        '--config.batch_size=16', '--config.eval_batch_size=32', '--config.total_steps=6',
        '--config.warmup_steps=1', '--config.log_every=2', '--config.eval_every=3',
        '--config.checkpoint_every=3']


def run(*args, check=True):
  result = subprocess.run([sys.executable, 'run.py', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=os.environ.copy())
  if check and result.returncode != 0:
    raise AssertionError(f'run.py failed ({result.returncode}):\n{result.stderr[-3000:]}')
  return result


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
  return cifar_fixtures.write_cifar100_python(
      str(tmp_path_factory.mktemp('data')), {'train': cifar_fixtures.make_examples(160, 100)})


def test_train_then_eval_reproduces_val(archive, tmp_path):
  workdir = str(tmp_path / 'run')
  out = run(*TINY, f'--workdir={workdir}', f'--config.data.archive={archive}')
  assert 'train done: step 6/6' in out.stdout
  lines = read_metrics(workdir)
  train_lines = [l for l in lines if l['split'] == 'train']
  val_lines = [l for l in lines if l['split'] == 'val']
  assert [l['step'] for l in train_lines] == [2, 4, 6]
  assert [l['step'] for l in val_lines] == [3, 6]
  for l in train_lines:
    assert {'loss', 'top1', 'top5', 'lr', 'img_per_sec'} <= set(l)
  assert all(l['num_examples'] == 32 for l in val_lines)  # 20% of 160, each exactly once
  assert os.path.isfile(os.path.join(workdir, 'config.json'))

  out = run(*TINY, f'--workdir={workdir}', f'--config.data.archive={archive}', '--mode=eval',
            '--config.data.eval_split=val')
  record = json.loads(out.stdout.strip().splitlines()[-2])
  assert record['step'] == 6 and record['split'] == 'val'
  assert record['top1'] == val_lines[-1]['top1'] and record['num_examples'] == 32
  assert abs(record['loss'] - val_lines[-1]['loss']) < 1e-6

  # The archive holds no test split: eval on the default split says so.
  out = run(*TINY, f'--workdir={workdir}', f'--config.data.archive={archive}', '--mode=eval',
            check=False)
  assert out.returncode == 2
  assert 'test' in out.stderr and archive in out.stderr


def test_bad_config_stops_before_compile(tmp_path):
  out = run(*TINY, f'--workdir={tmp_path}', '--config.model.num_heads=3',
            '--config.model.norm_placement=middle', check=False)
  assert out.returncode == 2
  assert 'model.hidden_size=16 is not divisible by model.num_heads=3' in out.stderr
  assert "'middle'" in out.stderr
  assert 'Traceback' not in out.stderr


def test_missing_dataset_names_both_fixes(tmp_path):
  out = run(*TINY, f'--workdir={tmp_path}/w', f'--config.data.tfds_data_dir={tmp_path}/empty',
            '--config.data.tfds_download=False', check=False)
  assert out.returncode == 2
  assert 'tfds_data_dir' in out.stderr and 'data.archive' in out.stderr
