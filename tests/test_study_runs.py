"""Reading a study's run folders: metrics of resumed and killed runs, the configured length."""

import json
import math

import pytest

from vit_jax import study_runs


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
  metrics = study_runs.read_metrics(str(path))
  assert [r['step'] for r in metrics['train']] == [2, 4, 6]
  assert metrics['train'][1]['loss'] == 2.5
  assert study_runs.train_wall_time(str(path)) == pytest.approx(20.0 + 15.0)


def test_train_wall_time_takes_pauses_out(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  # 10 s per 2 steps; a validation pass makes one interval 14 s (counted), a SIGSTOP makes
  # another 600 s (counted as a median interval, 10 s); then a resume whose first line is at 8 s.
  walls = [5.0, 15.0, 29.0, 39.0, 639.0, 649.0]
  lines = [{'step': 2 * (i + 1), 'split': 'train', 'loss': 1.0, 'wall_time': w}
           for i, w in enumerate(walls)]
  lines += [{'step': 12, 'split': 'train', 'loss': 1.0, 'wall_time': 8.0},
            {'step': 14, 'split': 'train', 'loss': 1.0, 'wall_time': 18.0}]
  _write_lines(path, lines)
  assert study_runs.train_wall_time(str(path)) == pytest.approx(5 + 10 + 14 + 10 + 10 + 10 + 8 + 10)
  # without the cap the pause would count in full
  assert study_runs.train_wall_time(str(path), pause_factor=1e9) == pytest.approx(649 + 18)


def test_total_steps_from_epochs():
  config = {'total_steps': 0, 'num_epochs': 2.0, 'batch_size': 16}
  metrics = {'train': [{'step': 5, 'epoch': 5 * 16 / 100}]}  # 100 training examples
  assert study_runs.total_steps(config, metrics) == math.ceil(2 * 100 / 16)
  assert study_runs.total_steps({'total_steps': 7}, {}) == 7


def test_a_field_added_to_the_config_schema_does_not_split_runs():
  """Runs from before a new config field lack it; those after have it at its default. Only
  runs that have a field and disagree on it differ in it."""
  run = lambda **config: study_runs.Run(workdir='w', config=config, metrics={}, total_steps=1,
                                         status='finished')
  old = run(**{'model.norm_placement': 'pre'})
  new = run(**{'model.norm_placement': 'post', 'model.name': 'vit'})
  assert study_runs.varying_fields([old, new]) == ['model.norm_placement']
  other = run(**{'model.norm_placement': 'post', 'model.name': 'swin'})
  assert study_runs.varying_fields([old, new, other]) == ['model.norm_placement', 'model.name']
