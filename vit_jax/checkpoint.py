"""Checkpoints with orbax: periodic saves, keep-latest-K plus best, resume, safe restore.

The saved item is the whole `TrainState` pytree (params, optimizer state, step, RNG, EMA), so
resuming continues bit for bit; the data position is the step (the input pipeline is a pure
function of it). Checkpoints live in `WORKDIR/checkpoints/<step>/`.
"""

import json
import logging
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

BEST_METRIC = 'val_top1'
logger = logging.getLogger(__name__)
# The JSON files of a step that orbax parses when a CheckpointManager opens.
_JSON_READ_ON_OPEN = ('_CHECKPOINT_METADATA', os.path.join('metrics', 'metrics'))


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: the message says which and why."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def unreadable_dir(workdir: str) -> str:
  """Where a training run moves the checkpoints it could not read, kept for inspection."""
  return os.path.join(os.path.abspath(workdir), 'checkpoints_unreadable')


class _SkipUnreadableSteps:
  """orbax's standard step naming, minus steps whose commit metadata cannot be parsed.

  orbax parses every step's commit metadata and metrics when a manager opens; one corrupted file would
  make the whole workdir unusable. Such a step is reported and ignored here, so resume and eval
  fall back to the previous checkpoint; `restore(..., set_aside_unreadable=True)` then moves its
  folder out of the way, so that the run can write that step again.
  """

  def __init__(self):
    self._inner = ocp.step.standard_name_format()

  def __getattr__(self, name):
    return getattr(self._inner, name)

  def find_all(self, base_path):
    for metadata in self._inner.find_all(base_path):
      try:
        for name in _JSON_READ_ON_OPEN:
          path = os.path.join(str(metadata.path), name)
          if os.path.exists(path):
            with open(path) as f:
              json.load(f)
      except (OSError, ValueError) as e:
        logger.warning('Checkpoint step %d in %s is unreadable (%s); ignoring it.',
                       metadata.step, base_path, e)
        continue
      yield metadata


def create_manager(workdir: str, *, keep: int = 3, async_save: bool = True,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A manager keeping the latest `keep` checkpoints plus the best by validation top-1."""
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep),
      checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy,
      best_fn=lambda m: m[BEST_METRIC], best_mode='max',
      enable_async_checkpointing=async_save,
      read_only=read_only,
      create=not read_only,
      step_name_format=_SkipUnreadableSteps(),
  )
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         metrics: dict[str, float] | None = None) -> None:
  """Starts an (async) save of `state` at `step`; `metrics` ranks it for keep-best.

  A step already listed is readable (restore sets unreadable ones aside), so it is not written
  twice: a run resumed at its last step, or stopped by a signal on a checkpoint step.
  """
  if step in manager.all_steps():
    return
  manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)


def _key_name(entry: Any) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _leaf_shapes(tree: Any) -> dict[str, tuple]:
  """{'params/Transformer/encoder_norm/scale': shape}; dataclass fields, dict keys and tuple
  indices all become path parts, so stored metadata and the live pytree compare equal."""
  return {'/'.join(_key_name(e) for e in path): tuple(np.shape(leaf) if not hasattr(leaf, 'shape')
                                                      else leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _shape_mismatches(stored: Any, target: Any) -> list[str]:
  """Leaves whose stored shape differs from the target's, or that exist on one side only."""
  stored_shapes, target_shapes = _leaf_shapes(stored), _leaf_shapes(target)
  problems = []
  names = set(stored_shapes) | set(target_shapes)
  for name in sorted(names, key=lambda n: (not n.startswith('params/'), n)):  # params first
    if name not in target_shapes:
      problems.append(f'{name}: in the checkpoint, not in the model')
    elif name not in stored_shapes:
      problems.append(f'{name}: in the model, not in the checkpoint')
    elif stored_shapes[name] != target_shapes[name]:
      problems.append(f'{name}: checkpoint {stored_shapes[name]} vs model {target_shapes[name]}')
  return problems


def _restore_step(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> Any:
  stored = manager.item_metadata(step)
  if stored is not None:
    tree = getattr(stored, 'tree', stored)
    problems = _shape_mismatches(tree, abstract_state)
    if problems:
      listed = '\n  '.join(problems[:20])
      raise CheckpointError(
          f'Checkpoint step {step} in {manager.directory} does not fit the configured model '
          f'({len(problems)} mismatches):\n  {listed}\nDid the config change since it was '
          'written? Use the same --config values, or a fresh --workdir.')
  return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))


def set_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves the folder of `step` to WORKDIR/checkpoints_unreadable/, where nothing reads it.

  The files are kept for inspection; a second bad copy of the same step gets a numbered name.
  Returns the new path.
  """
  source = os.path.join(str(manager.directory), str(step))
  target_dir = unreadable_dir(os.path.dirname(str(manager.directory)))
  os.makedirs(target_dir, exist_ok=True)
  target, n = os.path.join(target_dir, str(step)), 1
  while os.path.exists(target):
    target, n = os.path.join(target_dir, f'{step}.{n}'), n + 1
  shutil.move(source, target)
  return target


def _unlisted_step_folders(manager: ocp.CheckpointManager) -> list[int]:
  """Step folders (digits only; orbax's temporary folders have a suffix) that the manager does
  not list, because `_SkipUnreadableSteps` found their metadata unreadable."""
  listed = set(manager.all_steps())
  root = str(manager.directory)
  names = os.listdir(root) if os.path.isdir(root) else []
  return sorted(int(n) for n in names
                if n.isdigit() and int(n) not in listed and os.path.isdir(os.path.join(root, n)))


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None, *,
            set_aside_unreadable: bool = False) -> tuple[Any, int] | None:
  """Restores `step`, or the newest readable checkpoint; None when there is none.

  An unreadable newest checkpoint (half-written, corrupted) is reported and the next older one
  is tried. With `set_aside_unreadable` (a training run, which owns the workdir) every unreadable
  step is moved to WORKDIR/checkpoints_unreadable/ (`set_aside`), so that the resumed run writes
  that step again instead of keeping the bad copy; evaluation, which may run beside training,
  leaves the files where they are. A checkpoint that does not fit the model raises
  CheckpointError.
  """
  manager.reload()

  # With several processes only process 0 moves folders (they share the workdir); the others
  # find the same steps unreadable and skip them alike.
  move = set_aside_unreadable and jax.process_index() == 0

  def report_unreadable(bad_step: int, why: str) -> None:
    if move:
      moved = set_aside(manager, bad_step)
      logger.warning('Checkpoint step %d in %s is unreadable (%s); moved it to %s for inspection '
                     'and trying the previous one. The run writes step %d again when it gets '
                     'there.', bad_step, manager.directory, why, moved, bad_step)
    else:
      logger.warning('Checkpoint step %d in %s is unreadable (%s); trying the previous one.',
                     bad_step, manager.directory, why)

  if set_aside_unreadable:
    for bad_step in _unlisted_step_folders(manager):
      report_unreadable(bad_step, 'its metadata cannot be parsed')
  if step is not None:
    if step not in manager.all_steps():
      raise CheckpointError(f'No checkpoint for step {step} in {manager.directory}; '
                            f'available steps: {sorted(manager.all_steps())}.')
    return _restore_step(manager, step, abstract_state), step
  result = None
  for candidate in sorted(manager.all_steps(), reverse=True):
    try:
      result = _restore_step(manager, candidate, abstract_state), candidate
      break
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # orbax's messages carry the whole TensorStore spec; its first sentence says what failed.
      reason = str(e).split('. See full', 1)[0].splitlines()[0][:300] if str(e) else ''
      report_unreadable(candidate, f'{type(e).__name__}: {reason}')
  if set_aside_unreadable:
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('vit_jax.checkpoint.restore: unreadable steps moved')
    manager.reload()  # forget the steps moved away, so that `save` writes them again
  return result


def load(workdir: str, checkpoint_spec: str = '', abstract_state: Any = None) -> tuple[Any, int]:
  """Restores a checkpoint of `workdir` read-only: the path for evaluation, inspection, export.

  `checkpoint_spec`: '' or 'latest' (the newest readable), 'best' (by val top-1), a step number,
  or the path WORKDIR/checkpoints/<step> (then `workdir` is ignored). `abstract_state`: the
  TrainState's shapes and shardings (a model's checkpoint is then checked against it); None
  restores the stored tree as it is, onto this process's first device (an export, which needs no
  model). Safe to run while another process trains in the same workdir: nothing is moved.
  Returns (state, step); raises CheckpointError when there is no usable checkpoint.
  """
  if checkpoint_spec and os.sep in checkpoint_spec:
    workdir, checkpoint_spec = split_checkpoint_path(checkpoint_spec)
  if not os.path.isdir(checkpoint_dir(workdir)):
    raise CheckpointError(f'No checkpoints in {checkpoint_dir(workdir)}. Train first with '
                          f'`python run.py --config=... --workdir={workdir}`.')
  manager = create_manager(workdir, read_only=True, async_save=False)
  try:
    step = resolve_step(manager, checkpoint_spec)
    if abstract_state is None:
      step = manager.latest_step() if step is None else step
      if step is None or step not in manager.all_steps():
        raise CheckpointError(f'No checkpoint {checkpoint_spec or "(latest)"} in '
                              f'{manager.directory}; available steps: {sorted(manager.all_steps())}.')
      stored = manager.item_metadata(step)
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      abstract_state = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                                    getattr(stored, 'tree', stored))
    restored = restore(manager, abstract_state, step)
  finally:
    manager.close()
  if restored is None:
    raise CheckpointError(f'No readable checkpoint in {checkpoint_dir(workdir)}. Train first with '
                          f'`python run.py --config=... --workdir={workdir}`.')
  return restored


def resolve_step(manager: ocp.CheckpointManager, spec: str) -> int | None:
  """'' = newest, 'best' = best by val top-1, 'latest', or a step number."""
  manager.reload()
  if spec in ('', 'latest'):
    return None
  if spec == 'best':
    best = manager.best_step()
    if best is None:
      raise CheckpointError(f'No checkpoint in {manager.directory} has validation metrics.')
    return best
  try:
    return int(spec)
  except ValueError:
    raise CheckpointError(f'--checkpoint={spec!r}: expected "best", "latest", a step number '
                          'or the path of a step folder.') from None


def split_checkpoint_path(path: str) -> tuple[str, str]:
  """'.../WORKDIR/checkpoints/1500' -> (WORKDIR, '1500'), so --checkpoint may be a path."""
  path = os.path.abspath(path.rstrip('/'))
  parent, name = os.path.split(path)
  if os.path.basename(parent) == 'checkpoints' and name.isdigit():
    return os.path.dirname(parent), name
  raise CheckpointError(f'--checkpoint={path!r} is not a step folder WORKDIR/checkpoints/<step>.')
