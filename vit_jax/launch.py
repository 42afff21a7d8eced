"""Starts N cooperating processes of one run.py command on this machine: one multi-process JAX job.

  python -m vit_jax.launch --processes=2 --cpu_devices_per_process=4 -- \\
      run.py --config=configs/cpu_quick.py --workdir=runs/two_processes

For testing several hosts on one machine (CPU devices, gloo collectives), and for one node with
several GPUs run as one process per GPU group (`--gpus_per_process`). Each process gets
JAX_COORDINATOR_ADDRESS (this machine, a free port), JAX_NUM_PROCESSES and JAX_PROCESS_ID, and
`--config.distributed.enabled=True` is added to its arguments. Process 0 prints to this
terminal; process i > 0 to LOG_DIR/process_<i>.log (LOG_DIR: --process_logs, else the command's
--workdir).

Ctrl-C or SIGTERM here reaches every process as a SIGTERM: they agree a step, checkpoint it and
exit, and the same launch resumes. If a process fails, the others exit on their own once their
heartbeats notice (config.distributed.heartbeat_timeout_seconds); any still running after
--grace_seconds are killed. The exit code is the first failing process's, else 0.

On a real cluster no launcher is needed: start the same run.py command on every host with
--config.distributed.enabled=True (docs/training.md, "Several hosts").
"""

import os
import signal
import socket
import subprocess
import sys
import time

from absl import app
from absl import flags

from vit_jax import distributed

flags.DEFINE_integer('processes', 2, 'How many processes to start.')
flags.DEFINE_integer('cpu_devices_per_process', 0, 'CPU devices of each process '
                     '(JAX_NUM_CPU_DEVICES); 0 = leave JAX\'s default.')
flags.DEFINE_integer('gpus_per_process', 0, 'GPUs of each process: process i gets GPUs '
                     '[i*k, (i+1)*k) (JAX_LOCAL_DEVICE_IDS); 0 = JAX\'s default.')
flags.DEFINE_integer('port', 0, 'Coordinator port on this machine; 0 = a free one.')
flags.DEFINE_string('process_logs', '', 'Folder for process_<i>.log of processes i > 0; '
                    '"" = the command\'s --workdir.')
flags.DEFINE_float('grace_seconds', 120.0, 'After a process fails, how long the others get to '
                   'exit on their own before they are killed.')

ENABLE_FLAG = '--config.distributed.enabled=True'


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def process_command(command: list[str]) -> list[str]:
  """`command` as process i runs it: a script gets this Python, and distributed is enabled."""
  if command[0].endswith('.py'):
    command = [sys.executable, *command]
  return command if ENABLE_FLAG in command else [*command, ENABLE_FLAG]


def process_env(index: int, processes: int, port: int, cpu_devices: int, gpus: int,
                base: dict[str, str]) -> dict[str, str]:
  env = dict(base)
  env[distributed.ENV_COORDINATOR] = f'localhost:{port}'
  env[distributed.ENV_NUM_PROCESSES] = str(processes)
  env[distributed.ENV_PROCESS_ID] = str(index)
  if cpu_devices:
    env['JAX_NUM_CPU_DEVICES'] = str(cpu_devices)
  if gpus:
    env['JAX_LOCAL_DEVICE_IDS'] = ','.join(str(index * gpus + g) for g in range(gpus))
  return env


def log_dir_of(command: list[str], log_dir: str) -> str:
  if log_dir:
    return log_dir
  for arg in command:
    if arg.startswith('--workdir='):
      return arg.split('=', 1)[1]
  return '.'


def launch(command: list[str], processes: int, *, cpu_devices: int = 0, gpus: int = 0,
           port: int = 0, log_dir: str = '', grace_seconds: float = 120.0) -> int:
  """Runs `processes` copies of `command` as one job and waits for all; returns the exit code."""
  port = port or free_port()
  log_dir = log_dir_of(command, log_dir)
  os.makedirs(log_dir, exist_ok=True)
  full = process_command(command)
  print(f'launch: {processes} processes of: {" ".join(full)}\n'
        f'launch: coordinator localhost:{port}; processes 1..{processes - 1} log to '
        f'{log_dir}/process_<i>.log', flush=True)
  children, logs = [], []
  for i in range(processes):
    out = None
    if i > 0:
      out = open(os.path.join(log_dir, f'process_{i}.log'), 'a')
      logs.append(out)
    env = process_env(i, processes, port, cpu_devices, gpus, os.environ)
    # Own process groups: a Ctrl-C here is forwarded once, as the SIGTERM the job agrees on.
    children.append(subprocess.Popen(full, env=env, stdout=out, stderr=out,
                                     start_new_session=True))
    print(f'launch: process {i} is pid {children[-1].pid}', flush=True)

  def forward(signum, frame):
    del frame
    print(f'launch: {signal.Signals(signum).name}: asking every process to checkpoint and stop',
          flush=True)
    for child in children:
      if child.poll() is None:
        child.send_signal(signal.SIGTERM)

  previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
  try:
    first_failure, failed_at = None, None
    while any(child.poll() is None for child in children):
      time.sleep(0.2)
      for i, child in enumerate(children):
        if child.returncode not in (None, 0) and first_failure is None:
          first_failure, failed_at = i, time.time()
          print(f'launch: process {i} exited with code {child.returncode}; waiting up to '
                f'{grace_seconds:.0f} s for the others', flush=True)
      if failed_at is not None and time.time() - failed_at > grace_seconds:
        for i, child in enumerate(children):
          if child.poll() is None:
            print(f'launch: killing process {i}', flush=True)
            child.kill()
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
    for out in logs:
      out.close()
  codes = [child.returncode for child in children]
  print(f'launch: exit codes {codes}', flush=True)
  return codes[first_failure] if first_failure is not None else next((c for c in codes if c), 0)


def main(argv):
  command = argv[1:]
  if not command:
    raise app.UsageError('Give the command after --, e.g. `python -m vit_jax.launch '
                         '--processes=2 -- run.py --config=... --workdir=...`.')
  if flags.FLAGS.processes < 1:
    raise app.UsageError(f'--processes={flags.FLAGS.processes} must be >= 1.')
  sys.exit(launch(command, flags.FLAGS.processes,
                  cpu_devices=flags.FLAGS.cpu_devices_per_process,
                  gpus=flags.FLAGS.gpus_per_process, port=flags.FLAGS.port,
                  log_dir=flags.FLAGS.process_logs, grace_seconds=flags.FLAGS.grace_seconds))


if __name__ == '__main__':
  app.run(main)
