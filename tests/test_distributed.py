"""Several processes for real: run.py as 2 processes x 4 CPU devices (vit_jax.launch, gloo), held
against 1 process x 8 devices on the same global batch; preemption, crashes and faults."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import cifar_fixtures
from vit_jax import checkpoint
from vit_jax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 24
# 128 train / 32 val examples; eval batches of 24 leave the second one 16 short: padded and masked.
TINY = ['--config=configs/cpu_quick.py', '--config.data.image_size=8',
        '--config.data.strict_counts=False', '--config.data.val_fraction=0.2',
        '--config.model.patch_size=4', '--config.model.hidden_size=16',
        '--config.model.num_layers=1', '--config.model.num_heads=2', '--config.model.mlp_dim=32',
        '--config.model.dropout_rate=0.1', '--config.batch_size=16',
        '--config.eval_batch_size=24', f'--config.total_steps={STEPS}',
        '--config.warmup_steps=2', '--config.log_every=2', '--config.eval_every=12',
        '--config.checkpoint_every=4', '--config.keep_checkpoints=10',
        '--config.diagnostics_every=0']
TIMEOUT = 300


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
  return cifar_fixtures.write_cifar100_python(
      str(tmp_path_factory.mktemp('data')), {'train': cifar_fixtures.make_examples(160, 100)})


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_')}
  env.update({k: str(v) for k, v in extra.items()})
  return env


def launch_command(workdir, archive, *extra, processes=2, devices=4, launch_flags=()):
  return [sys.executable, '-m', 'vit_jax.launch', f'--processes={processes}',
          f'--cpu_devices_per_process={devices}', *launch_flags, '--', 'run.py', *TINY,
          f'--workdir={workdir}', f'--config.data.archive={archive}', *extra]


def launch(workdir, archive, *extra, **kwargs):
  result = subprocess.run(launch_command(workdir, archive, *extra, **kwargs), cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT, env=_env())
  assert result.returncode == 0, f'launch failed ({result.returncode}):\n{result.stdout[-3000:]}' \
                                 f'\n{result.stderr[-3000:]}'
  return result


def run_one_process(workdir, archive, *extra, devices=8):
  result = subprocess.run([sys.executable, 'run.py', *TINY, f'--workdir={workdir}',
                           f'--config.data.archive={archive}', *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env=_env(JAX_NUM_CPU_DEVICES=devices))
  assert result.returncode == 0, f'run.py failed ({result.returncode}):\n{result.stderr[-3000:]}'
  return result


def metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def final_val(workdir):
  return [r for r in metrics(workdir) if r['split'] == 'val'][-1]


def params_at(workdir, step=''):
  state, at = checkpoint.load(workdir, str(step))
  return at, state['params']


def max_difference(a, b):
  import jax  # pylint: disable=g-import-not-at-top
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))),
      a, b)))


def wait_for(predicate, timeout, what):
  start = time.time()
  while time.time() - start < timeout:
    if predicate():
      return time.time() - start
    time.sleep(0.05)
  raise AssertionError(f'timed out after {timeout} s waiting for {what}')


def checkpoint_steps(workdir):
  return sorted(int(os.path.basename(p)) for p in glob.glob(f'{workdir}/checkpoints/*')
                if os.path.basename(p).isdigit())


def logged_steps(workdir):
  try:
    return [r['step'] for r in metrics(workdir) if r['split'] == 'train']
  except (OSError, ValueError):
    return []


# ----------------------------------------------------------------------------- units


def test_addresses_come_from_the_config_then_the_environment(monkeypatch):
  from configs import common  # pylint: disable=g-import-not-at-top
  dist = common.get_config().distributed
  monkeypatch.setenv(distributed.ENV_COORDINATOR, 'head:1234')
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, '4')
  monkeypatch.setenv(distributed.ENV_PROCESS_ID, '3')
  got = distributed.settings(dist)
  assert (got['coordinator_address'], got['num_processes'], got['process_id']) == ('head:1234', 4, 3)
  dist.update(coordinator_address='other:99', num_processes=2, process_id=0)
  got = distributed.settings(dist)
  assert (got['coordinator_address'], got['num_processes'], got['process_id']) == ('other:99', 2, 0)
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
    monkeypatch.delenv(name)
  got = distributed.settings(common.get_config().distributed)  # all None: JAX auto-detects
  assert (got['coordinator_address'], got['num_processes'], got['process_id']) == (None,) * 3
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, 'two')
  with pytest.raises(ValueError, match='JAX_NUM_PROCESSES'):
    distributed.settings(common.get_config().distributed)


def test_config_differences_name_each_field_and_process():
  base = {'batch_size': 16, 'model.num_layers': 6, 'distributed.process_id': 0, 'workdir': 'w'}
  assert distributed.config_differences([base, {**base, 'distributed.process_id': 1}]) == []
  lines = distributed.config_differences([base, dict(base), {**base, 'batch_size': 32,
                                                              'workdir': 'v'}])
  assert lines == ["process 2: batch_size=32 (process 0: 16)", "process 2: workdir='v' (process 0: 'w')"]


def test_distributed_config_errors_come_before_any_start_up(monkeypatch):
  from configs import common  # pylint: disable=g-import-not-at-top
  from vit_jax import validation  # pylint: disable=g-import-not-at-top
  dist = common.get_config().distributed
  assert validation.distributed_problems(dist) == []
  monkeypatch.setenv(distributed.ENV_PROCESS_ID, 'first')
  dist.enabled = True
  assert validation.distributed_problems(dist) == [
      "$JAX_PROCESS_ID='first' must be an integer (or unset)."]
  monkeypatch.delenv(distributed.ENV_PROCESS_ID)
  dist.enabled = False
  dist.update(num_processes=2, process_id=2, coordinator_address='nohost',
              heartbeat_timeout_seconds=0)
  problems = '\n'.join(validation.distributed_problems(dist))
  for expected in ('distributed.enabled=False', 'process_id=2 must be in [0, num_processes)',
                   '"host:port"', 'heartbeat_timeout_seconds=0 must be positive'):
    assert expected in problems


def test_launch_gives_each_process_its_address_id_and_devices():
  from vit_jax import launch as launcher  # pylint: disable=g-import-not-at-top
  env = launcher.process_env(1, 3, 5555, cpu_devices=4, gpus=2, base={'PATH': '/bin'})
  assert env[distributed.ENV_COORDINATOR] == 'localhost:5555'
  assert (env[distributed.ENV_NUM_PROCESSES], env[distributed.ENV_PROCESS_ID]) == ('3', '1')
  assert env['JAX_NUM_CPU_DEVICES'] == '4' and env['JAX_LOCAL_DEVICE_IDS'] == '2,3'
  command = launcher.process_command(['run.py', '--workdir=w'])
  assert command == [sys.executable, 'run.py', '--workdir=w', launcher.ENABLE_FLAG]
  assert launcher.process_command(command) == command
  assert launcher.log_dir_of(command, '') == 'w'


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope='module')
def two_processes(archive, tmp_path_factory):
  """The uninterrupted 2 x 4 run, and its wall time."""
  workdir = str(tmp_path_factory.mktemp('two_processes'))
  start = time.time()
  result = launch(workdir, archive)
  return workdir, time.time() - start, result


def test_two_processes_train_as_one_process_of_eight_devices(archive, two_processes, tmp_path):
  two, seconds, result = two_processes
  one = str(tmp_path / 'one_process')
  run_one_process(one, archive)
  (step_two, params_two), (step_one, params_one) = params_at(two), params_at(one)
  assert step_two == step_one == STEPS
  difference = max_difference(params_two, params_one)
  val_two, val_one = final_val(two), final_val(one)
  loss_two, loss_one = (r['loss'] for r in (metrics(two)[-2], metrics(one)[-2]))
  print(f'\n2 processes x 4 devices ({seconds:.0f} s) vs 1 process x 8 devices: final train loss '
        f'{loss_two:.6f} vs {loss_one:.6f}; val top-1 {val_two["top1"]:.4f} vs '
        f'{val_one["top1"]:.4f}, loss {val_two["loss"]:.6f} vs {val_one["loss"]:.6f}; '
        f'max |param difference| {difference:.2e}')
  # The all-reduce sums in another order (gloo across processes); Adam divides by sqrt(v), so a
  # rounding difference in a near-zero gradient can move a weight by a good part of lr = 1e-3.
  assert difference < 1e-4
  assert abs(loss_two - loss_one) < 1e-5
  assert val_two['top1'] == val_one['top1'] and abs(val_two['loss'] - val_one['loss']) < 1e-5
  # Exact eval counts: 32 val examples, in two global batches of 24 split over both hosts.
  assert val_two['num_examples'] == val_one['num_examples'] == 32
  assert '8 devices on 2 hosts' in result.stderr
  # Only process 0 writes the logs: each step once in metrics.jsonl, one TensorBoard writer.
  steps = [(r['split'], r['step']) for r in metrics(two)]
  assert len(steps) == len(set(steps))
  assert len(glob.glob(f'{two}/tensorboard/**/events.out.tfevents.*', recursive=True)) == 1
  with open(os.path.join(two, 'config.json')) as f:
    assert json.load(f)['distributed']['enabled'] is True
  with open(os.path.join(two, 'process_1.log')) as f:
    assert 'train done: step 24/24' in f.read()  # process 1 trained alongside


def test_eval_on_one_process_restores_a_two_process_checkpoint(archive, two_processes):
  two, _, _ = two_processes
  out = subprocess.run([sys.executable, 'run.py', *TINY, f'--workdir={two}',
                        f'--config.data.archive={archive}', '--mode=eval',
                        '--config.data.eval_split=val'], cwd=ROOT, capture_output=True,
                       text=True, timeout=TIMEOUT, env=_env(JAX_NUM_CPU_DEVICES=1))
  assert out.returncode == 0, out.stderr[-3000:]
  record = json.loads(out.stdout.strip().splitlines()[-2])
  val = [r for r in metrics(two) if r['split'] == 'val' and r['step'] == STEPS][0]
  assert record['step'] == STEPS and record['num_examples'] == 32
  assert record['top1'] == val['top1'] and abs(record['loss'] - val['loss']) < 1e-5


def _start(command, log_path, **env):
  log = open(log_path, 'w')
  return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                          env=_env(**env)), log


def _pids(launch_log):
  with open(launch_log) as f:
    return {int(i): int(p) for i, p in re.findall(r'launch: process (\d+) is pid (\d+)', f.read())}


def test_preemption_of_one_process_stops_both_at_one_step_and_resumes_exactly(
    archive, two_processes, tmp_path):
  """SIGTERM to process 1 only: JAX's preemption service agrees a step, both checkpoint it and
  exit 0; the same launch then finishes with the uninterrupted run's params, bit for bit."""
  workdir, log_path = str(tmp_path / 'preempted'), str(tmp_path / 'launch.log')
  proc, log = _start(launch_command(workdir, archive), log_path)
  try:
    wait_for(lambda: len(_pids(log_path)) == 2, 60, 'the processes')
    wait_for(lambda: any(s >= 2 for s in logged_steps(workdir)), TIMEOUT, 'step 2')
    os.kill(_pids(log_path)[1], signal.SIGTERM)
    assert proc.wait(timeout=TIMEOUT) == 0
  finally:
    log.close()
  with open(log_path) as f:
    output = f.read()
  with open(os.path.join(workdir, 'process_1.log')) as f:
    output_1 = f.read()
  stopped = re.findall(r'Stopped by a preemption notice.* at step (\d+)', output)
  assert stopped and stopped == re.findall(r'Stopped by a preemption notice.* at step (\d+)',
                                           output_1), 'both processes stop at one step'
  stop_step = int(stopped[0])
  assert stop_step < STEPS, 'stopped before the end (else the test proves nothing)'
  assert checkpoint_steps(workdir)[-1] == stop_step
  launch(workdir, archive)  # the same launch resumes
  assert f'Resumed from checkpoint step {stop_step}' in open(f'{workdir}/process_1.log').read()
  assert max_difference(params_at(workdir)[1], params_at(two_processes[0])[1]) == 0


def test_both_processes_killed_resume_exactly(archive, two_processes, tmp_path):
  """SIGKILL to both processes (no checkpoint of their own): the rerun resumes from the newest
  periodic checkpoint, written by both, to the uninterrupted run's params, bit for bit."""
  workdir, log_path = str(tmp_path / 'killed'), str(tmp_path / 'launch.log')
  proc, log = _start(launch_command(workdir, archive), log_path)
  try:
    wait_for(lambda: len(_pids(log_path)) == 2, 60, 'the processes')
    wait_for(lambda: any(s >= 4 for s in checkpoint_steps(workdir)), TIMEOUT, 'checkpoint 4')
    for pid in _pids(log_path).values():
      os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
  finally:
    log.close()
  killed_at = max(logged_steps(workdir), default=0)
  assert killed_at < STEPS, 'killed before the end (else the test proves nothing)'
  launch(workdir, archive)
  resumed = re.findall(r'Resumed from checkpoint step (\d+)',
                       open(f'{workdir}/process_1.log').read())
  assert resumed and 4 <= int(resumed[-1]) < STEPS
  assert max_difference(params_at(workdir)[1], params_at(two_processes[0])[1]) == 0


def test_a_dead_process_stops_the_other_within_the_heartbeat_timeout(archive, tmp_path):
  workdir, log_path = str(tmp_path / 'dead'), str(tmp_path / 'launch.log')
  command = launch_command(workdir, archive, '--config.total_steps=100000',
                           '--config.distributed.heartbeat_timeout_seconds=5',
                           launch_flags=['--grace_seconds=100'])
  proc, log = _start(command, log_path)
  try:
    wait_for(lambda: len(_pids(log_path)) == 2, 60, 'the processes')
    wait_for(lambda: any(s >= 2 for s in logged_steps(workdir)), TIMEOUT, 'step 2')
    os.kill(_pids(log_path)[1], signal.SIGKILL)
    start = time.time()
    code = proc.wait(timeout=100)
    seconds = time.time() - start
  finally:
    log.close()
  output = open(log_path).read()
  assert code != 0
  assert seconds < 60, f'process 0 took {seconds:.0f} s to stop'
  assert 'another task died' in output  # JAX's message on process 0
  assert 'killing process' not in output  # it stopped by itself, not by the launcher


def test_a_process_with_another_config_is_named_at_start_up(archive, tmp_path):
  """Started by hand through the environment variables; process 1 has another batch size."""
  port = str(__import__('vit_jax.launch', fromlist=['x']).free_port())
  workdir = str(tmp_path / 'mismatch')
  procs = []
  for index, batch in ((0, 16), (1, 32)):
    command = [sys.executable, 'run.py', *TINY, f'--workdir={workdir}',
               f'--config.data.archive={archive}', '--config.distributed.enabled=True',
               f'--config.batch_size={batch}']
    procs.append(subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(JAX_NUM_CPU_DEVICES=4, **{distributed.ENV_COORDINATOR: f'localhost:{port}',
                                           distributed.ENV_NUM_PROCESSES: 2,
                                           distributed.ENV_PROCESS_ID: index})))
  outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 2, err[-2000:]
    assert 'process 1: batch_size=32 (process 0: 16)' in err
  assert not checkpoint_steps(workdir)


def test_a_preempted_run_exits_within_seconds(archive, tmp_path):
  """One process, SIGTERM after 20 s of training: the checkpoint is written and the process is
  gone seconds later (it used to wait up to a minute on tf.data's autotuning thread)."""
  workdir = str(tmp_path / 'preempted')
  proc, log = _start([sys.executable, 'run.py', *TINY, f'--workdir={workdir}',
                      f'--config.data.archive={archive}', '--config.total_steps=1000000'],
                     str(tmp_path / 'run.log'), JAX_NUM_CPU_DEVICES=1)
  try:
    wait_for(lambda: any(s >= 2 for s in logged_steps(workdir)), TIMEOUT, 'step 2')
    time.sleep(20)
    proc.send_signal(signal.SIGTERM)
    start = time.time()
    code = proc.wait(timeout=120)
    seconds = time.time() - start
  finally:
    log.close()
  output = open(tmp_path / 'run.log').read()
  stopped = int(re.findall(r'Stopped by signal SIGTERM at step (\d+)', output)[0])
  print(f'\nexit {seconds:.1f} s after SIGTERM at step {stopped}')
  assert code == 0 and checkpoint_steps(workdir)[-1] == stopped
  assert seconds < 10
