"""When a run has diverged: the rule, the record it leaves, the exception that stops it.

A run diverged when its training loss is non-finite, or above `config.divergence_factor` x its
initial value. The loop checks every loss it copies to the host, before any evaluation or save,
so the last checkpoint is the last good one; WORKDIR/diverged.json records the step, run.py exits
with code 3, and vit_jax/sweep.py records the run as a result (a stability sweep expects some).
"""

from __future__ import annotations

import json
import math
import os

import jax
import ml_collections
import numpy as np

from vit_jax import checkpoint


FILE = 'diverged.json'  # read by study_runs (DIVERGED_FILE)
EXIT_CODE = 3           # run.py's exit code for a diverged run (study_runs.DIVERGED_EXIT)


class Diverged(FloatingPointError):
  """The training loss became non-finite or exceeded config.divergence_factor x ln(classes)."""


def limit(config: ml_collections.ConfigDict, num_classes: int) -> float:
  """k x the initial loss, k = config.divergence_factor (0: no limit but a finite loss). The
  initial loss is ln(num_classes): the zero-initialized head predicts the uniform distribution
  (and label smoothing does not change that loss)."""
  return config.divergence_factor * math.log(num_classes) if config.divergence_factor else math.inf


def check(host_metrics: list[dict], first_step: int, workdir: str, max_loss: float) -> None:
  """Stops on a non-finite training loss or one above `max_loss`, naming its step, before anything
  else is saved: WORKDIR/diverged.json records it, the last good checkpoint stays."""
  for i, m in enumerate(host_metrics):
    loss = float(m['loss'])
    if np.isfinite(loss) and loss <= max_loss:
      continue
    step = first_step + i
    what = (f'Non-finite training loss ({loss})' if not np.isfinite(loss) else
            f'Training loss {loss:.4g} above the divergence limit {max_loss:.4g} '
            '(config.divergence_factor x ln(classes))')
    if jax.process_index() == 0:
      with open(os.path.join(workdir, FILE), 'w') as f:
        json.dump({'step': step, 'loss': str(loss), 'limit': max_loss,
                   'reason': 'non-finite' if not np.isfinite(loss) else 'above limit'}, f)
    raise Diverged(
        f'{what} at step {step}: the run diverged. The last good checkpoint in '
        f'{checkpoint.checkpoint_dir(workdir)} is kept; lower the learning rate, add warmup or '
        'gradient clipping (--config.grad_clip_norm=1.0) and rerun.')
