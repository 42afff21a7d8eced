"""A run's logs: WORKDIR/metrics.jsonl, WORKDIR/diagnostics.jsonl and TensorBoard.

One JSON object per line, appended (a resumed run appends after the lines of the run it resumes;
readers keep the last line of a repeated step: `study_runs.read_metrics`, `study_runs.read_diagnostics`).
Only process 0 writes; on the other hosts every method is a no-op. The schemas are in
docs/training.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax

from vit_jax import diagnostics

METRICS_FILE = 'metrics.jsonl'


class RunLog:
  """Appends to the run's JSONL files and mirrors every number to TensorBoard."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self.workdir = workdir
    self._tb = None
    if self.enabled:
      from clu import metric_writers  # pylint: disable=g-import-not-at-top
      self._tb = metric_writers.create_default_writer(
          os.path.join(workdir, 'tensorboard'), just_logging=False, asynchronous=False)

  def _append(self, name: str, rows: list[dict]) -> None:
    with open(os.path.join(self.workdir, name), 'a') as f:
      f.writelines(json.dumps(r) + '\n' for r in rows)

  def write(self, record: dict) -> None:
    """One metrics.jsonl line: `step`, `split` and numbers (TensorBoard: `<split>/<name>`)."""
    if not self.enabled:
      return
    self._append(METRICS_FILE, [record])
    self._tb.write_scalars(int(record['step']), {
        f"{record['split']}/{k}": v for k, v in record.items()
        if k not in ('step', 'split') and isinstance(v, (int, float))})

  def write_diagnostics(self, step: int, values: Mapping[str, Any]) -> None:
    """`diagnostics.diagnostics_step`'s host arrays: one diagnostics.jsonl line per layer."""
    if not self.enabled:
      return
    rows = diagnostics.records(step, values)
    self._append(diagnostics.FILE, rows)
    self._tb.write_scalars(int(step), {f'diagnostics/{k}/layer_{r["layer"]}': r[k]
                                       for r in rows for k in diagnostics.QUANTITIES if k in r})

  def close(self) -> None:
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()
