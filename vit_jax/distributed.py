"""Several processes as one JAX program: start-up through `jax.distributed`, and the checks that
keep the processes in step.

One run.py process per host (TPU VM, GPU node, or a group of this machine's devices) joins a
coordinator (process 0). From then on `jax.devices()` lists every process's devices, the mesh
spans them, each process feeds only its rows of every global batch (data.iterators.host_rows),
and XLA's collectives (gloo on CPU, NCCL on GPU, ICI on TPU) reduce the gradients. Only process
0 writes config.json, metrics.jsonl and TensorBoard; every process writes its part of each
checkpoint. A stop (SIGTERM) is agreed by all processes (preemption.StopRequest); a process that
dies is noticed by the others' heartbeats, and they exit (`heartbeat_timeout_seconds`).

Where the addresses come from, first found wins:
  1. `config.distributed.{coordinator_address, num_processes, process_id}`;
  2. the environment: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (what
     `python -m vit_jax.launch` sets);
  3. JAX's cluster auto-detection: Cloud TPU pod slices, SLURM, Open MPI, Kubernetes.
"""

import json
import os

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from vit_jax import study_runs  # flatten: config fields as dotted names

ENV_COORDINATOR = 'JAX_COORDINATOR_ADDRESS'  # jax.distributed reads it too
ENV_NUM_PROCESSES = 'JAX_NUM_PROCESSES'
ENV_PROCESS_ID = 'JAX_PROCESS_ID'
# Fields that may differ between the processes of one run.
PER_PROCESS_FIELDS = ('distributed.process_id',)


def env_int(name: str) -> int | None:
  """The integer in environment variable `name`; None when unset; ValueError when not one."""
  value = os.environ.get(name, '')
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'${name}={value!r} must be an integer (or unset).') from None


def settings(dist: ml_collections.ConfigDict) -> dict:
  """The arguments of jax.distributed.initialize: config first, then the environment; None
  leaves a value to JAX's cluster auto-detection."""
  num_processes = dist.num_processes or env_int(ENV_NUM_PROCESSES)
  process_id = dist.process_id if dist.process_id >= 0 else env_int(ENV_PROCESS_ID)
  return dict(coordinator_address=dist.coordinator_address or os.environ.get(ENV_COORDINATOR) or None,
              num_processes=num_processes, process_id=process_id,
              initialization_timeout=dist.initialization_timeout_seconds,
              heartbeat_timeout_seconds=dist.heartbeat_timeout_seconds)


def initialize(dist: ml_collections.ConfigDict) -> None:
  """Joins the other processes when `dist.enabled`; must run before anything uses a backend."""
  if dist.enabled:
    jax.distributed.initialize(**settings(dist))


def shutdown() -> None:
  """Leaves the job cleanly (a barrier with the other processes); a no-op with one process.
  Without it, process 0 exiting first takes the coordinator with it and the others abort."""
  jax.distributed.shutdown()


def _gather_strings(text: str) -> list[str]:
  """Every process's `text`, in process order (two small all-gathers: lengths, then bytes)."""
  blob = np.frombuffer(text.encode(), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.int32(blob.size))).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:blob.size] = blob
  rows = np.asarray(multihost_utils.process_allgather(padded))
  return [bytes(row[:n]).decode() for row, n in zip(rows, lengths)]


def config_differences(configs: list[dict]) -> list[str]:
  """'process 1: batch_size=64 (process 0: 128)' for each field where a process's flattened
  config differs from process 0's (fields in PER_PROCESS_FIELDS excepted)."""
  reference = configs[0]
  lines = []
  for index, other in enumerate(configs[1:], start=1):
    for field in sorted(set(reference) | set(other)):
      if field in PER_PROCESS_FIELDS:
        continue
      mine, theirs = reference.get(field, '<absent>'), other.get(field, '<absent>')
      if mine != theirs:
        lines.append(f'process {index}: {field}={theirs!r} (process 0: {mine!r})')
  return lines


def check_same_run(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """The fields where some process's config (or workdir) differs from process 0's, on every
  process alike; [] with one process. Run at start-up: a process with another batch size would
  otherwise feed a batch of the wrong shape, or hang in a collective the others never enter."""
  if jax.process_count() == 1:
    return []
  mine = {**study_runs.flatten(json.loads(config.to_json_best_effort())), 'workdir': workdir}
  gathered = _gather_strings(json.dumps(mine, sort_keys=True))
  return config_differences([json.loads(text) for text in gathered])
