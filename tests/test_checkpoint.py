"""Checkpoints that never lose work: exact resume, preemption, corrupt checkpoints, shape changes."""

import glob
import os
import shutil
import signal

import jax
import numpy as np
import pytest

import cifar_fixtures
from configs import common
from vit_jax import checkpoint
from vit_jax import input_pipeline
from vit_jax import train


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
  root = tmp_path_factory.mktemp('data')
  return cifar_fixtures.write_cifar100_binary(
      str(root), {'train': cifar_fixtures.make_examples(200, 100),
                  'test': cifar_fixtures.make_examples(40, 100, start=200)})


def tiny_config(archive, **overrides):
  config = common.get_config()
  config.data = cifar_fixtures.data_config(archive=archive, image_size=8, val_fraction=0.2,
                                           crop_padding=1)
  config.model.update(patch_size=4, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32,
                      dropout_rate=0.1)
  config.update(batch_size=16, eval_batch_size=16, total_steps=8, warmup_steps=2, log_every=2,
                eval_every=4, checkpoint_every=3, keep_checkpoints=2, async_checkpoints=False)
  config.update(overrides)
  return config


def final_params(workdir):
  manager = checkpoint.create_manager(workdir, read_only=True, async_save=False)
  step = manager.latest_step()
  restored = manager.restore(step)
  manager.close()
  return step, restored['params']


def assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def crash_after(monkeypatch, batches_before_crash, action):
  """Makes the train iterator run `action` after yielding `batches_before_crash` batches."""
  original = input_pipeline.create_train_iterator

  def patched(*args, **kwargs):
    def gen():
      for i, batch in enumerate(original(*args, **kwargs)):
        if i == batches_before_crash:
          action()
        yield batch
    return gen()

  monkeypatch.setattr(input_pipeline, 'create_train_iterator', patched)


class Killed(Exception):
  pass


def _kill():
  raise Killed('simulated crash')


@pytest.fixture(scope='module')
def reference(archive, tmp_path_factory):
  """An uninterrupted run: its final params are what every resumed run must reproduce."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  train.train_and_evaluate(tiny_config(archive), workdir)
  return workdir


def test_exact_resume_after_crash(archive, reference, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'crashed')
  crash_after(monkeypatch, 5, _kill)  # dies after step 5; last checkpoint is step 3
  with pytest.raises(Killed):
    train.train_and_evaluate(tiny_config(archive), workdir)
  assert sorted(int(os.path.basename(p)) for p in glob.glob(f'{workdir}/checkpoints/*')) == [3]
  monkeypatch.undo()
  train.train_and_evaluate(tiny_config(archive), workdir)
  step, params = final_params(workdir)
  ref_step, ref_params = final_params(reference)
  assert step == ref_step == 8
  assert_trees_equal(params, ref_params)  # bit for bit


def test_sigterm_checkpoints_and_resumes_exactly(archive, reference, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'preempted')
  crash_after(monkeypatch, 4, lambda: os.kill(os.getpid(), signal.SIGTERM))
  result = train.train_and_evaluate(tiny_config(archive), workdir)
  # The signal arrives while batch 5 is prefetched; the loop stops at the next step boundary.
  assert 1 <= result['step'] < 8
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(f'{workdir}/checkpoints/*'))
  assert steps[-1] == result['step'], 'the preempted step must be checkpointed'
  monkeypatch.undo()
  train.train_and_evaluate(tiny_config(archive), workdir)
  assert_trees_equal(final_params(workdir)[1], final_params(reference)[1])


def test_keeps_latest_and_best(reference):
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(f'{reference}/checkpoints/*'))
  # checkpoint_every=3, total 8, keep 2 latest (6, 8) plus the best of the evaluated (4?, 8).
  assert steps[-2:] == [6, 8]
  manager = checkpoint.create_manager(reference, read_only=True)
  assert manager.best_step() in steps
  manager.close()


def _corrupt(step_dir, which):
  """Overwrites the step's commit metadata ('commit') or its array data files ('data')."""
  for f in glob.glob(f'{step_dir}/**/*', recursive=True):
    is_commit = os.path.basename(f) == '_CHECKPOINT_METADATA'
    if os.path.isfile(f) and (is_commit if which == 'commit' else
                              not is_commit and 'metadata' not in os.path.basename(f).lower()):
      with open(f, 'wb') as fh:
        fh.write(b'garbage')


@pytest.mark.parametrize('which', ['commit', 'data'])
def test_corrupt_newest_checkpoint_falls_back(archive, reference, tmp_path, caplog, which):
  workdir = str(tmp_path / 'corrupt')
  shutil.copytree(reference, workdir)
  _corrupt(f'{workdir}/checkpoints/8', which)
  config = tiny_config(archive)
  config.data.eval_split = 'val'
  record = train.evaluate_checkpoint(config, workdir)
  assert record['step'] == 6
  assert 'unreadable' in caplog.text
  assert os.path.isdir(f'{workdir}/checkpoints/8'), 'a bad checkpoint is reported, not deleted'


def test_changed_model_shape_is_a_clear_error(archive, reference):
  config = tiny_config(archive)
  config.model.hidden_size = 32
  with pytest.raises(checkpoint.CheckpointError, match=r'params/cls: checkpoint \(1, 1, 16\) vs '
                     r'model \(1, 1, 32\)'):
    train.evaluate_checkpoint(config, reference)


def test_eval_any_step_best_or_path(archive, reference):
  config = tiny_config(archive)
  config.data.eval_split = 'val'
  by_step = train.evaluate_checkpoint(config, reference, '6')
  by_path = train.evaluate_checkpoint(config, os.devnull,
                                      os.path.join(reference, 'checkpoints', '6'))
  assert by_step['step'] == by_path['step'] == 6
  assert by_step['top1'] == by_path['top1'] and by_step['num_examples'] == 40
  best = train.evaluate_checkpoint(config, reference, 'best')
  assert best['split'] == 'val'
  with pytest.raises(checkpoint.CheckpointError, match='available steps'):
    train.evaluate_checkpoint(config, reference, '7')


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(archive, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'nan')
  original = input_pipeline.create_train_iterator

  def poisoned(*args, **kwargs):
    for i, batch in enumerate(original(*args, **kwargs)):
      if i == 4:  # step 5's batch
        batch = {**batch, 'image': np.full_like(batch['image'], np.nan)}
      yield batch

  monkeypatch.setattr(input_pipeline, 'create_train_iterator', poisoned)
  with pytest.raises(FloatingPointError, match='at step 5'):
    train.train_and_evaluate(tiny_config(archive), workdir)
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(f'{workdir}/checkpoints/*'))
  assert steps == [3]


def test_workdir_files(reference):
  assert os.path.isfile(os.path.join(reference, 'config.json'))
  assert glob.glob(os.path.join(reference, 'tensorboard', 'events.out.tfevents.*'))
