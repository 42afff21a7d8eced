"""The runs of a study folder: each run's config, metrics and state, grouped into conditions.

Why separate: `vit_jax.report` (the tables and figures) and `vit_jax.sweep` (which runs are done,
what to launch) both read run folders the same way; this module is that one reading. A run
folder is what `run.py` writes (config.json, metrics.jsonl) plus the sweep's bookkeeping
(sweep_run.json before launch, DONE or FAILED after). Runs are grouped by the config fields that
differ between them (the norm placement and any extra sweep axes; never the seed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vit_jax import norms

METRICS_FILE = 'metrics.jsonl'
CONFIG_FILE = 'config.json'
SWEEP_FILE = 'sweep.json'            # the sweep's plan, written by vit_jax.sweep
RUN_INFO_FILE = 'sweep_run.json'     # per run: placement, seed, axes (written before launch)
DONE_FILE = 'DONE'                   # per run: written by vit_jax.sweep after a finished run
FAILED_FILE = 'FAILED'               # per run: the tail of the log of a failed run
DIAGNOSTICS_FILE = 'diagnostics.jsonl'  # per run: vit_jax/diagnostics.py's records (diagnostics.FILE)
DIVERGED_FILE = 'diverged.json'      # per run: written by the trainer (train.DIVERGED_FILE)
DIVERGED_EXIT = 3                    # run.py's exit code for a diverged run (divergence.EXIT_CODE)
INSPECT_DIR = 'inspect'              # per run: vit_jax.figures's figures and inspect.json
PLACEMENT_FIELD = 'model.norm_placement'
SEED_FIELD = 'seed'
# Config fields that never define a condition: the seed is what is replicated; `sweep.*` only
# describes the grid.
IGNORED_FIELD_PREFIXES = ('seed', 'sweep.')
PRESET_ORDER = tuple(norms.NORM_PRESETS)  # rows in this order
# train_wall_time: an interval between two train lines longer than this many times the run's
# median is a pause, and counts as a median interval.
PAUSE_FACTOR = 3.0


# ============================================================================ reading runs


def safe_name(text: str) -> str:
  """A folder name for a placement or axis value: 'attn:in,mlp:in+out' -> 'attn-in_mlp-in+out'."""
  out = str(text).strip().replace(':', '-').replace(',', '_').replace('/', '-').replace(' ', '')
  return out.replace('=', '-') or 'empty'


def json_lines(path: str) -> Iterable[dict]:
  """The JSON objects of a .jsonl file; blank and torn lines (a killed writer) are skipped."""
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(record, dict):
        yield record


def read_metrics(path: str) -> dict[str, list[dict]]:
  """{split: records sorted by step}; for a step logged twice (a resumed run) the last line wins.

  A torn last line (the run was killed while writing) is skipped.
  """
  last: dict[tuple[str, int], dict] = {}
  order: dict[str, list[dict]] = {}
  for record in json_lines(path):
    if 'split' in record and 'step' in record:
      last[(record['split'], int(record['step']))] = record
  for (split, _), record in sorted(last.items(), key=lambda kv: (kv[0][0], kv[0][1])):
    order.setdefault(split, []).append(record)
  return order


def read_diagnostics(path: str) -> list[dict]:
  """diagnostics.jsonl's records in (step, layer) order; for a (step, layer) written twice (a
  resumed run measures the steps after its checkpoint again) the last line wins. A torn last
  line is skipped."""
  last = {(r['step'], r['layer']): r for r in json_lines(path)}
  return [last[k] for k in sorted(last)]


def train_wall_time(path: str, pause_factor: float = PAUSE_FACTOR) -> float:
  """Seconds of training (validation included) summed over every process that appended to
  metrics.jsonl, with pauses taken out.

  Each process restarts its `wall_time` clock, so a drop marks a resume: a segment counts from
  its process start. An interval between two train lines longer than `pause_factor` times the
  run's median seconds per step counts at the median: a process stopped (SIGSTOP) or starved
  for minutes would otherwise count its pause as training, while a shared core or a validation
  pass, which slow an interval by less than that, still count in full.
  """
  records = [r for r in json_lines(path) if r.get('split') == 'train' and 'wall_time' in r]
  gaps = []    # (steps, seconds) between consecutive lines of one process
  starts = []  # seconds from each process start to its first line
  for before, after in zip([None] + records, records):
    if before is None or after['wall_time'] < before['wall_time']:
      starts.append(float(after['wall_time']))
    elif after['step'] > before['step']:
      gaps.append((after['step'] - before['step'], after['wall_time'] - before['wall_time']))
  if not gaps:
    return sum(starts)
  per_step = statistics.median(seconds / steps for steps, seconds in gaps)
  return sum(starts) + sum(seconds if seconds <= pause_factor * per_step * steps
                           else per_step * steps for steps, seconds in gaps)


def flatten(tree: Mapping, prefix: str = '') -> dict[str, Any]:
  """{'model': {'patch_size': 4}} -> {'model.patch_size': 4}; lists become tuples (hashable)."""
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      flat.update(flatten(value, name + '.'))
    else:
      flat[name] = tuple(value) if isinstance(value, list) else value
  return flat


def total_steps(config: Mapping[str, Any], metrics: Mapping[str, list[dict]]) -> int | None:
  """The run's configured length: `total_steps`, or `num_epochs` of batches.

  For an epoch-based config the training-set size is recovered from a train line
  (`epoch` = step * batch_size / num_train), so no data has to be loaded.
  """
  if config.get('total_steps', 0) > 0:
    return int(config['total_steps'])
  for record in metrics.get('train', []):
    if record.get('epoch'):
      num_train = round(record['step'] * config['batch_size'] / record['epoch'])
      return max(1, math.ceil(config['num_epochs'] * num_train / config['batch_size']))
  return None


def read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


@dataclasses.dataclass
class Run:
  """One run folder: its config, its metrics and whether it finished."""
  workdir: str                         # path relative to the study folder
  config: dict[str, Any]               # flattened config.json ({} before the run started)
  metrics: dict[str, list[dict]]
  total_steps: int | None
  status: str            # 'finished' | 'diverged' | 'incomplete' | 'failed' | 'not started'
  note: str = ''
  train_seconds: float = 0.0
  diverged_step: int | None = None     # the step whose loss diverged (status 'diverged')

  @property
  def placement(self) -> str:
    return str(self.config.get(PLACEMENT_FIELD, '?'))

  @property
  def seed(self) -> int:
    return int(self.config.get(SEED_FIELD, -1))

  @property
  def last_step(self) -> int:
    train = self.metrics.get('train', [])
    return int(train[-1]['step']) if train else 0


def read_run(study_dir: str, workdir: str) -> Run:
  """Reads one run folder; never raises for a run that has not started or has failed."""
  path = os.path.join(study_dir, workdir)
  config_json = read_json(os.path.join(path, CONFIG_FILE))
  metrics_path = os.path.join(path, METRICS_FILE)
  metrics = read_metrics(metrics_path) if os.path.exists(metrics_path) else {}
  info = read_json(os.path.join(path, RUN_INFO_FILE)) or {}
  if config_json is None:  # the sweep's record of what it launched stands in for the config
    config = {PLACEMENT_FIELD: info.get('placement', '?'), SEED_FIELD: info.get('seed', -1),
              **info.get('axes', {})}
    steps = None
  else:
    config = flatten(config_json)
    steps = total_steps(config, metrics)
  run = Run(workdir=workdir, config=config, metrics=metrics, total_steps=steps,
            status='not started', train_seconds=train_wall_time(metrics_path)
            if os.path.exists(metrics_path) else 0.0)
  failed_path = os.path.join(path, FAILED_FILE)
  val = metrics.get('val', [])
  # Training evaluates at its last step when it has a val split: without that line the run was
  # killed between its last train line and its final evaluation.
  final_eval_done = not val or val[-1]['step'] >= (steps or 0)
  diverged = read_json(os.path.join(path, DIVERGED_FILE))
  if diverged is not None:  # a result: the loss diverged at that step (train.check_divergence)
    run.status, run.diverged_step = 'diverged', int(diverged['step'])
    run.note = f'diverged at step {diverged["step"]} (loss {diverged["loss"]})'
  elif steps is not None and run.last_step >= steps and final_eval_done:
    run.status = 'finished'
  elif os.path.exists(failed_path):
    run.status = 'failed'
    with open(failed_path) as f:
      lines = [l.strip() for l in f if l.strip()]
    errors = [l for l in lines if l.lower().startswith(('error', 'floatingpointerror'))]
    run.note = (errors or lines or [''])[-1][:200]
  elif metrics:
    run.status = 'incomplete'
    run.note = f'at step {run.last_step}' + (f' of {steps}' if steps else '')
  return run


def find_runs(study_dir: str) -> list[Run]:
  """Every folder under `study_dir` holding config.json, metrics.jsonl or sweep_run.json."""
  if not os.path.isdir(study_dir):
    raise FileNotFoundError(f'Study folder {study_dir} does not exist; run the sweep first: '
                            f'python -m vit_jax.sweep --config=configs/study.py '
                            f'--workdir={study_dir}')
  found = []
  for root, dirs, files in os.walk(study_dir):
    dirs[:] = sorted(d for d in dirs if d not in ('checkpoints', 'tensorboard', INSPECT_DIR)
                     and not d.startswith('.'))
    if {CONFIG_FILE, METRICS_FILE, RUN_INFO_FILE} & set(files):
      found.append(read_run(study_dir, os.path.relpath(root, study_dir)))
  return found


# ============================================================================ per-run numbers


def run_metrics(run: Run) -> dict[str, float]:
  """The numbers of one run that the tables aggregate (accuracies as fractions)."""
  val, test = run.metrics.get('val', []), run.metrics.get('test', [])
  nan = math.nan
  out = {
      'final_val_top1': val[-1]['top1'] if val else nan,
      'final_val_top5': val[-1]['top5'] if val else nan,
      'best_val_top1': max(r['top1'] for r in val) if val else nan,
      'best_val_top5': max(r['top5'] for r in val) if val else nan,
      'final_val_loss': val[-1]['loss'] if val else nan,
      'test_top1': test[-1]['top1'] if test else nan,
      'test_top5': test[-1]['top5'] if test else nan,
      'steps': float(run.last_step),
      'train_minutes': run.train_seconds / 60,
  }
  return {k: float(v) for k, v in out.items()}


# ============================================================================ grouping



def varying_fields(runs: Iterable[Run]) -> list[str]:
  """Config fields whose value differs between the runs that have them, the seed and sweep.*
  excepted."""
  runs = list(runs)
  fields = sorted(set().union(*(r.config for r in runs))) if runs else []
  out = []
  for field in fields:
    if field.startswith(IGNORED_FIELD_PREFIXES):
      continue
    # A field that some runs lack came with a newer config schema (a new field at its default
    # in the runs that have it): it splits runs only if the runs that have it disagree.
    values = {json.dumps(r.config[field], sort_keys=True, default=str)
              for r in runs if field in r.config}
    if len(values) > 1:
      out.append(field)
  if PLACEMENT_FIELD in out:  # the placement first: it names the rows
    out.remove(PLACEMENT_FIELD)
    out.insert(0, PLACEMENT_FIELD)
  return out


def placement_rank(placement: str) -> tuple:
  return (PRESET_ORDER.index(placement) if placement in PRESET_ORDER else len(PRESET_ORDER),
          placement)


@dataclasses.dataclass
class Group:
  """The seeds of one condition (placement + extra axis values)."""
  label: str
  key: tuple
  runs: list[Run]

  def values(self, metric: str) -> dict[int, float]:
    return {r.seed: run_metrics(r)[metric] for r in self.runs}


def group_runs(runs: Sequence[Run], fields: Sequence[str]) -> list[Group]:
  """Groups finished runs by the values of `fields`; rows in preset order, then by value."""
  groups: dict[tuple, Group] = {}
  for run in runs:
    key = tuple(run.config.get(f) for f in fields)
    if key not in groups:
      parts = []
      for field, value in zip(fields, key):
        parts.append(str(value) if field == PLACEMENT_FIELD else f'{field}={value}')
      groups[key] = Group(label=', '.join(parts) or run.placement, key=key, runs=[])
    groups[key].runs.append(run)
  for g in groups.values():
    g.runs.sort(key=lambda r: r.seed)

  def order(g: Group):
    rest = tuple(str(v) for v in g.key)
    if fields and fields[0] == PLACEMENT_FIELD:
      return (placement_rank(str(g.key[0])), rest)
    return ((0, ''), rest)

  return sorted(groups.values(), key=order)
