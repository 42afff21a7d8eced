"""Stopping a run cleanly on SIGTERM / SIGINT (preemption, Ctrl-C), at a step every process
agrees on: the loop then checkpoints that step and exits, and rerunning the command resumes it.
"""

import logging
import os
import signal

import jax
from jax.experimental import multihost_utils

logger = logging.getLogger(__name__)


class StopRequest:
  """A SIGTERM/SIGINT, turned into a stop at a step boundary that every process agrees on.

  One process: the handler records the signal and the loop checkpoints and exits at the next
  step. Several processes must stop at the same step, or the ones still stepping wait forever in
  a collective: there JAX's preemption service (started by jax.distributed.initialize) catches a
  SIGTERM on any process and agrees the step through the coordinator, without a device
  collective; a SIGINT (Ctrl-C) is handed to it as a SIGTERM to this process.
  """

  def __init__(self):
    self.signal = None
    self._previous = {}
    self._several_processes = jax.process_count() > 1

  @property
  def reason(self) -> str:
    if self._several_processes:
      return 'a preemption notice (SIGTERM to a process) agreed by all processes'
    return 'signal ' + signal.Signals(self.signal).name if self.signal else 'signal'

  def requested(self, step: int) -> bool:
    """Whether to checkpoint and stop after `step`; the same answer on every process."""
    if self._several_processes:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.signal is not None

  def __enter__(self):
    signals = (signal.SIGINT,) if self._several_processes else (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. inside a notebook worker): no handler
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    logger.warning('Received %s: will checkpoint and stop after this step.',
                   signal.Signals(signum).name)
    self.signal = signum
    if self._several_processes:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
