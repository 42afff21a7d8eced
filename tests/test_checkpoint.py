"""Checkpoints that never lose work: exact resume, preemption, corrupt checkpoints, shape changes."""

import glob
import json
import os
import shutil
import signal
import threading
import time

import jax
import numpy as np
import pytest

import cifar_fixtures
from configs import common
from vit_jax import checkpoint
from vit_jax import data
from vit_jax import hardware
from vit_jax import models
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
  original = data.create_train_iterator

  def patched(*args, **kwargs):
    def gen():
      for i, batch in enumerate(original(*args, **kwargs)):
        if i == batches_before_crash:
          action()
        yield batch
    return gen()

  monkeypatch.setattr(data, 'create_train_iterator', patched)


class Killed(Exception):
  pass


def _kill():
  raise Killed('simulated crash')


def crash_and_resume(config, workdir, monkeypatch):
  """Trains until a crash after 5 steps (newest checkpoint: step 3), then reruns to the end."""
  crash_after(monkeypatch, 5, _kill)
  with pytest.raises(Killed):
    train.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  return train.train_and_evaluate(config, workdir)


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


@pytest.mark.parametrize('model', [
    dict(norm_placement='pre,mixln=0.5', num_layers=2, scan=True, remat=True),  # 2 scanned runs
    dict(norm_placement='resi_dual', num_layers=2, scan=True),                   # a tuple carry
    dict(norm_placement='normformer,layerscale=0.1', norm_type='dyt', dtype='bfloat16'),
], ids=['mixln-scan-remat', 'resi_dual-scan', 'normformer-dyt-bf16'])
def test_every_kind_of_scheme_resumes_exactly(archive, tmp_path, monkeypatch, model):
  """Depth schedules under scan, ResiDual's second stream, norms inside the sublayers, on the
  8-device mesh: a crashed run resumes to the uninterrupted run's params, bit for bit."""
  config = tiny_config(archive)
  config.model.update(model)
  uninterrupted = str(tmp_path / 'uninterrupted')
  train.train_and_evaluate(config, uninterrupted)
  crashed = str(tmp_path / 'crashed')
  crash_and_resume(config, crashed, monkeypatch)
  (step, params), (ref_step, ref_params) = final_params(crashed), final_params(uninterrupted)
  assert step == ref_step == 8
  assert_trees_equal(params, ref_params)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_signal_checkpoints_and_resumes_exactly(archive, reference, tmp_path, monkeypatch, signum):
  workdir = str(tmp_path / 'preempted')
  # checkpoint_every beyond the run: the only checkpoint before the end is the one the signal asks for.
  config = tiny_config(archive, checkpoint_every=1000)
  crash_after(monkeypatch, 4, lambda: os.kill(os.getpid(), signum))
  result = train.train_and_evaluate(config, workdir)
  # The signal arrives while batch 5 is prefetched; the loop stops at the next step boundary.
  assert 1 <= result['step'] < 8
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(f'{workdir}/checkpoints/*'))
  assert steps == [result['step']], 'the preempted step must be checkpointed'
  monkeypatch.undo()
  train.train_and_evaluate(config, workdir)
  assert_trees_equal(final_params(workdir)[1], final_params(reference)[1])


def test_signal_landing_late_in_a_step_still_checkpoints_that_step(archive, reference, tmp_path,
                                                                   monkeypatch):
  """A signal's Python handler runs when the blocking call it interrupted returns, which can be
  the train line's device->host copy, after the step decided whether to save. The run must
  still checkpoint the step it stops at (it once stopped there unsaved, losing up to
  checkpoint_every steps)."""
  workdir = str(tmp_path / 'late_signal')
  config = tiny_config(archive, checkpoint_every=1000)
  real_check = train.divergence.check
  calls = []

  def check_then_signal(*args, **kwargs):  # runs during the copy at the train line of step 2
    calls.append(1)
    if len(calls) == 1:
      os.kill(os.getpid(), signal.SIGTERM)
    return real_check(*args, **kwargs)

  monkeypatch.setattr(train.divergence, 'check', check_then_signal)
  result = train.train_and_evaluate(config, workdir)
  assert result['step'] in (2, 3)  # this step, or the next when the handler runs after the check
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(f'{workdir}/checkpoints/*'))
  assert steps == [result['step']], 'the step the run stopped at must be checkpointed'
  monkeypatch.undo()
  train.train_and_evaluate(config, workdir)
  assert_trees_equal(final_params(workdir)[1], final_params(reference)[1])


def test_train_iterator_is_torn_down_off_the_main_thread(archive, tmp_path, monkeypatch):
  """Tearing down a long-running tf.data iterator waits for its autotuning thread (up to a
  minute): the trainer must leave that to another thread so a preempted job exits at once."""
  torn_down_on = []

  class Watched:
    def __init__(self, inner):
      self.inner = inner

    def __iter__(self):
      return self

    def __next__(self):
      return next(self.inner)

    def __del__(self):
      torn_down_on.append(threading.current_thread() is threading.main_thread())

  original = data.create_train_iterator
  monkeypatch.setattr(data, 'create_train_iterator', lambda *a, **k: Watched(original(*a, **k)))
  train.train_and_evaluate(tiny_config(archive, total_steps=4), str(tmp_path / 'run'))
  for _ in range(100):  # the release thread runs at once; give it up to 10 s
    if torn_down_on:
      break
    time.sleep(0.1)
  assert torn_down_on == [False]


def test_keeps_latest_and_best(archive, tmp_path, monkeypatch):
  """keep_checkpoints=2 keeps the two newest plus the best by val top-1, here an older one."""
  scripted_top1 = iter([0.25, 0.75, 0.5, 0.125])  # the evals at steps 2, 4, 6, 8
  real_evaluate = train.evaluate

  def evaluate(*args, **kwargs):
    return {**real_evaluate(*args, **kwargs), 'top1': next(scripted_top1)}

  monkeypatch.setattr(train, 'evaluate', evaluate)
  workdir = str(tmp_path / 'best')
  train.train_and_evaluate(tiny_config(archive, eval_every=2, checkpoint_every=2), workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    val = [r for r in map(json.loads, f) if r['split'] == 'val']
  assert [r['step'] for r in val] == [2, 4, 6, 8]
  best = max(val, key=lambda r: r['top1'])['step']
  assert best == 4
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(f'{workdir}/checkpoints/*'))
  assert steps == [4, 6, 8]
  manager = checkpoint.create_manager(workdir, read_only=True)
  assert manager.best_step() == best
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
  assert os.path.isdir(f'{workdir}/checkpoints/8'), 'evaluation reports a bad checkpoint, moves nothing'


def _flip_middle_bytes(step_dir, size=4096):
  """Inverts `size` bytes in the middle of every array-data file of a step (ocdbt's d/ folders).

  Every file, not one: where the arrays land depends on their size (a model this small has
  them merged into the top-level database's file; a cpu_quick checkpoint has them in
  ocdbt.process_0/d/), and the bug does not depend on which file was hit.
  """
  files = [f for f in glob.glob(f'{step_dir}/**/d/*', recursive=True) if os.path.isfile(f)]
  assert any('ocdbt.process_0' in f for f in files), f'no ocdbt data files under {step_dir}'
  for path in files:
    with open(path, 'r+b') as f:
      raw = bytearray(f.read())
      start = max(0, len(raw) // 2 - size // 2)
      for i in range(start, min(len(raw), start + size)):
        raw[i] ^= 0xFF
      f.seek(0)
      f.write(raw)


@pytest.mark.parametrize('damage', ['data', 'commit'])
def test_resume_replaces_a_corrupt_newest_checkpoint(archive, reference, tmp_path, caplog, damage):
  """A finished run whose newest checkpoint is damaged: rerunning the train command resumes from
  the previous one, writes the final step again, and eval then reads the new one."""
  workdir = str(tmp_path / 'damaged')
  shutil.copytree(reference, workdir)
  if damage == 'data':
    _flip_middle_bytes(f'{workdir}/checkpoints/8')
  else:
    _corrupt(f'{workdir}/checkpoints/8', 'commit')
  result = train.train_and_evaluate(tiny_config(archive), workdir)
  assert 'unreadable' in caplog.text
  assert result['step'] == 8
  # The damaged folder is kept for inspection, outside the checkpoints the manager reads.
  assert os.path.isdir(f'{workdir}/checkpoints_unreadable/8')
  step, params = final_params(workdir)
  assert step == 8
  assert_trees_equal(params, final_params(reference)[1])  # the resumed run's work was saved
  config = tiny_config(archive)
  config.data.eval_split = 'val'
  record = train.evaluate_checkpoint(config, workdir)
  assert record['step'] == 8
  assert record['top1'] == result['val']['top1'] and record['loss'] == result['val']['loss']


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


@pytest.mark.parametrize('guard, overrides, kept', [
    # The NaN comes at step 5. log_every is beyond the run, so no train line catches it: the
    # check before the step-6 save must (else step 6 is saved with NaN params) ...
    ('save', dict(log_every=1000, eval_every=1000, checkpoint_every=3), [3]),
    # ... or the check before the step-6 evaluation (else a NaN val line is written).
    ('eval', dict(log_every=1000, eval_every=6, checkpoint_every=4), [4]),
], ids=['before_save', 'before_eval'])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(archive, tmp_path, monkeypatch,
                                                              guard, overrides, kept):
  workdir = str(tmp_path / 'nan')
  original = data.create_train_iterator

  def poisoned(*args, **kwargs):
    for i, batch in enumerate(original(*args, **kwargs)):
      if i == 4:  # step 5's batch
        batch = {**batch, 'image': np.full_like(batch['image'], np.nan)}
      yield batch

  monkeypatch.setattr(data, 'create_train_iterator', poisoned)
  with pytest.raises(FloatingPointError, match='at step 5'):
    train.train_and_evaluate(tiny_config(archive, **overrides), workdir)
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(f'{workdir}/checkpoints/*'))
  assert steps == kept, guard
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  records = []
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      records = [json.loads(line) for line in f]
  assert all(r['step'] < 5 for r in records), records  # nothing logged from the NaN on


def test_ema_resumes_exactly_and_is_evaluated(archive, tmp_path, monkeypatch):
  config = tiny_config(archive, ema_decay=0.9)
  uninterrupted = str(tmp_path / 'ema_ref')
  result = train.train_and_evaluate(config, uninterrupted)
  crashed = str(tmp_path / 'ema_crashed')
  crash_and_resume(config, crashed, monkeypatch)

  def ema_params(workdir):
    manager = checkpoint.create_manager(workdir, read_only=True, async_save=False)
    restored = manager.restore(manager.latest_step())
    manager.close()
    return restored['ema_params']

  reference_ema = ema_params(uninterrupted)
  assert_trees_equal(ema_params(crashed), reference_ema)
  # The val line's ema_* fields are the EMA params' own evaluation, not a copy of the params'.
  config.data.eval_split = 'val'
  record = train.evaluate_checkpoint(config, uninterrupted)
  val = result['val']
  for k in ('loss', 'top1', 'top5'):
    assert record[f'ema_{k}'] == val[f'ema_{k}'], k
  assert val['ema_loss'] != val['loss']
  model = models.create_model(config.model, 100)
  source = data.load_data(config.data)
  images, labels = [], []
  for batch in data.create_eval_iterator(config.data, 'val', global_batch_size=16,
                                                   source=source):
    keep = batch['mask'] > 0
    images.append(batch['image'][keep])
    labels.append(batch['label'][keep])
  logits = model.apply({'params': reference_ema}, np.concatenate(images))
  expected = float(np.mean(train.cross_entropy(logits, np.concatenate(labels))))
  np.testing.assert_allclose(val['ema_loss'], expected, rtol=1e-5)


def test_workdir_files(reference):
  assert os.path.isfile(os.path.join(reference, 'config.json'))
  assert glob.glob(os.path.join(reference, 'tensorboard', 'events.out.tfevents.*'))


def test_distributed_initialize_comes_before_any_backend_use(archive, monkeypatch):
  """jax.distributed.initialize must run before JAX touches a backend, which resolving the
  'auto' hardware fields does (jax.default_backend())."""
  order = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: order.append('initialize'))
  real_resolve = hardware.resolve

  def resolve(config, backend=None):
    order.append('resolve')
    return real_resolve(config, backend)

  monkeypatch.setattr(hardware, 'resolve', resolve)
  config = tiny_config(archive)
  config.distributed.enabled = True
  config, _, _ = train._setup(config)  # pylint: disable=protected-access
  assert order == ['initialize', 'resolve']
  assert config.host_malloc != 'auto' and config.concurrent_microbatches >= 1
