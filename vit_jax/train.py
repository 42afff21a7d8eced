"""Training and evaluation: TrainState, the jitted data-parallel steps, and the loop.

This file glues the others: `models` (the network), `data` (host batches),
`optim` (the optax chain) and `checkpoint` (orbax). Parallelism is one `jax.jit` over a
1-D `jax.sharding.Mesh` named `data`: parameters are replicated, batches are sharded along
their leading axis, and XLA inserts the gradient all-reduce. The same code runs on one CPU,
8 forced CPU devices, a GPU, a TPU slice and several hosts (`config.distributed`, vit_jax/distributed.py).
"""

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vit_jax import checkpoint
from vit_jax import data
from vit_jax import diagnostics
from vit_jax import distributed
from vit_jax import divergence
from vit_jax import hardware
from vit_jax import logs
from vit_jax import models
from vit_jax import optim
from vit_jax import preemption
from vit_jax import pretrained
from vit_jax import swin
from vit_jax import swin_weights
from vit_jax import validation

DATA_AXIS = 'data'
logger = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; checkpointed whole, so resume is exact."""
  step: jax.Array          # [] int32: optimizer steps taken (= global batches consumed)
  params: Any
  opt_state: Any
  rng: jax.Array           # base key; the step's key is fold_in(rng, step)
  ema_params: Any          # EMA of params when config.ema_decay > 0, else None


# ----------------------------------------------------------------------------- mesh & sharding


def create_mesh(devices: list | None = None) -> Mesh:
  """A 1-D data-parallel mesh over every device of every host."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def device_batches(host_batches: Iterator[dict], mesh: Mesh, prefetch: int = 2) -> Iterator[dict]:
  """Turns host-local numpy batches into global arrays sharded on the mesh, `prefetch` ahead.

  Transfers are asynchronous, so keeping a couple in flight overlaps them with the step.
  """
  sharding = batch_sharded(mesh)
  queue = []

  def put(batch):
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

  for batch in host_batches:
    queue.append(put(batch))
    if len(queue) > prefetch:
      yield queue.pop(0)
  yield from queue


# ----------------------------------------------------------------------------- losses & metrics


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy; `labels` are int [batch] or soft float [batch, classes]."""
  num_classes = logits.shape[-1]
  targets = labels if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
  if label_smoothing > 0:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)  # [batch]


def topk_correct(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-example top-1 and top-5 hits (float 0/1); soft labels count their argmax class."""
  label_ids = labels if labels.ndim == 1 else jnp.argmax(labels, axis=-1)
  top1 = (jnp.argmax(logits, axis=-1) == label_ids).astype(jnp.float32)
  k = min(5, logits.shape[-1])
  _, top_ids = jax.lax.top_k(logits, k)  # [batch, k]
  top5 = jnp.any(top_ids == label_ids[:, None], axis=-1).astype(jnp.float32)
  return top1, top5


# ----------------------------------------------------------------------------- steps


def create_train_state(model: models.VisionTransformer, tx: optax.GradientTransformation,
                       rng: jax.Array, image_shape: tuple[int, int, int],
                       use_ema: bool) -> TrainState:
  """Initial state (call under jit to place it directly on the devices)."""
  init_rng, state_rng = jax.random.split(rng)
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  params = model.init({'params': init_rng}, dummy, train=False)['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=state_rng, ema_params=params if use_ema else None)


def abstract_params(model: models.VisionTransformer, image_shape: tuple[int, int, int]) -> Any:
  """The model's parameter shapes and dtypes for `image_shape` inputs, without allocating them
  (what the optimizer and checkpoint restore need before any state exists)."""
  return jax.eval_shape(lambda: model.init({'params': jax.random.key(0)},
                                           jnp.zeros((1, *image_shape)), train=False)['params'])


def init_train_state(model: models.VisionTransformer, tx: optax.GradientTransformation,
                     config: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
                     sharding: Any, seed: int) -> TrainState:
  """A fresh TrainState created under jit straight into `sharding` (one sharding or a tree)."""
  init = jax.jit(functools.partial(create_train_state, model, tx, image_shape=image_shape,
                                   use_ema=config.ema_decay > 0), out_shardings=sharding)
  return init(jax.random.key_data(jax.random.key(seed)))


def split_batch(x: jax.Array, parts: int) -> jax.Array:
  """[batch, ...] -> [parts, batch / parts, ...]; example j * parts + i goes to part i, so each
  device keeps its own examples in every part (no resharding)."""
  return jnp.swapaxes(x.reshape(x.shape[0] // parts, parts, *x.shape[1:]), 0, 1)


def make_loss_fn(model: models.VisionTransformer, label_smoothing: float) -> Callable:
  """The train step's loss: (params, images, labels, dropout_rng) -> (mean loss, logits)."""

  def loss_fn(params, images, labels, dropout_rng):
    logits = model.apply({'params': params}, images, train=True, rngs={'dropout': dropout_rng})
    return jnp.mean(cross_entropy(logits, labels, label_smoothing)), logits

  return loss_fn


def train_step(state: TrainState, batch: dict, *, model: models.VisionTransformer,
               tx: optax.GradientTransformation, grad_accum_steps: int,
               concurrent_microbatches: int, label_smoothing: float,
               ema_decay: float) -> tuple[TrainState, dict]:
  """One optimizer update on the global batch (split into `grad_accum_steps` micro-batches).

  Each micro-batch is computed as `concurrent_microbatches` equal parts whose forward and
  backward passes do not depend on each other (a Python loop, not a scan), so XLA:CPU's executor
  runs them side by side on different cores; the mean of their equal-size means is the
  micro-batch's gradient.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  grad_fn = jax.value_and_grad(make_loss_fn(model, label_smoothing), has_aux=True)

  def one_part(images, labels, dropout_rng):  # -> (grads, loss, top1, top5), means
    (loss, logits), grads = grad_fn(state.params, images, labels, dropout_rng)
    top1, top5 = topk_correct(logits, labels)
    return grads, loss, jnp.mean(top1), jnp.mean(top5)

  def grads_and_metrics(images, labels, dropout_rng):  # one micro-batch
    n = concurrent_microbatches
    if n == 1:
      return one_part(images, labels, dropout_rng)
    parts = [one_part(part_images, part_labels, jax.random.fold_in(dropout_rng, i))
             for i, (part_images, part_labels)
             in enumerate(zip(split_batch(images, n), split_batch(labels, n)))]
    return jax.tree.map(lambda *xs: sum(xs) / n, *parts)

  if grad_accum_steps == 1:
    grads, loss, top1, top5 = grads_and_metrics(batch['image'], batch['label'], rng)
  else:
    micro = jax.tree.map(lambda x: split_batch(x, grad_accum_steps), batch)

    def accumulate(carry, xs):
      micro_batch, index = xs
      out = grads_and_metrics(micro_batch['image'], micro_batch['label'],
                              jax.random.fold_in(rng, index))
      return jax.tree.map(jnp.add, carry, out), None

    zeros = (jax.tree.map(jnp.zeros_like, state.params), 0.0, 0.0, 0.0)
    sums, _ = jax.lax.scan(accumulate, zeros, (micro, jnp.arange(grad_accum_steps)))
    grads, loss, top1, top5 = jax.tree.map(lambda x: x / grad_accum_steps, sums)

  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema_params = state.ema_params
  if ema_params is not None:
    ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema_params, params)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            ema_params=ema_params)
  metrics = {'loss': loss, 'top1': top1, 'top5': top5, 'grad_norm': optax.tree.norm(grads)}
  return new_state, metrics


def eval_step(params: Any, batch: dict, *, model: models.VisionTransformer) -> dict:
  """Sums over the real (mask == 1) examples of one batch; padding contributes nothing."""
  logits = model.apply({'params': params}, batch['image'], train=False)
  mask = batch['mask']
  top1, top5 = topk_correct(logits, batch['label'])
  return {'loss': jnp.sum(cross_entropy(logits, batch['label']) * mask),
          'top1': jnp.sum(top1 * mask), 'top5': jnp.sum(top5 * mask),
          'num_examples': jnp.sum(mask)}


def jit_train_step(model, tx, config: ml_collections.ConfigDict, mesh: Mesh,
                   state_sharding: Any) -> Callable:
  """The train step compiled for the mesh; the incoming state's buffers are donated."""
  config = hardware.resolve(config)
  step = functools.partial(train_step, model=model, tx=tx,
                           grad_accum_steps=config.grad_accum_steps,
                           concurrent_microbatches=config.concurrent_microbatches,
                           label_smoothing=config.label_smoothing, ema_decay=config.ema_decay)
  return jax.jit(step, in_shardings=(state_sharding, batch_sharded(mesh)),
                 out_shardings=(state_sharding, replicated(mesh)), donate_argnums=0)


def jit_eval_step(model, mesh: Mesh) -> Callable:
  return jax.jit(functools.partial(eval_step, model=model),
                 in_shardings=(replicated(mesh), batch_sharded(mesh)),
                 out_shardings=replicated(mesh))


def evaluate(eval_fn: Callable, params: Any, batches: Iterator[dict]) -> dict[str, float]:
  """Mean loss / top-1 / top-5 over every real example; `num_examples` is the exact count."""
  totals = None
  for batch in batches:
    sums = eval_fn(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError('The evaluation split is empty.')
  totals = jax.device_get(totals)
  n = float(totals['num_examples'])
  return {'loss': float(totals['loss']) / n, 'top1': float(totals['top1']) / n,
          'top5': float(totals['top5']) / n, 'num_examples': int(round(n))}


# ----------------------------------------------------------------------------- bookkeeping


def _format_eta(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def mean_metrics(host_metrics: list[dict]) -> dict[str, float]:
  """The mean of each per-step metric over the steps since the previous train line."""
  return {k: float(np.mean([m[k] for m in host_metrics])) for k in host_metrics[0]}


def evaluate_state(eval_fn: Callable, state: TrainState,
                   batches: Callable[[], Iterator[dict]]) -> dict:
  """Eval metrics of the params, plus `ema_loss`/`ema_top1`/`ema_top5` when the state has an EMA."""
  record = evaluate(eval_fn, state.params, batches())
  if state.ema_params is not None:
    ema = evaluate(eval_fn, state.ema_params, batches())
    record.update({f'ema_{k}': v for k, v in ema.items() if k != 'num_examples'})
  return record


# ----------------------------------------------------------------------------- setup


def _setup(config: ml_collections.ConfigDict, workdir: str = ''):
  """The resolved config, the data and the model: everything that can fail before any compile.

  `jax.distributed.initialize` comes first: it must run before anything touches a JAX backend,
  which resolving the 'auto' hardware fields does. With several processes, each one's config
  (and workdir) must be process 0's.
  """
  validation.raise_problems(validation.distributed_problems(config.distributed))
  distributed.initialize(config.distributed)
  config = hardware.resolve(config)  # the hardware settings left at 'auto', for this backend
  differences = distributed.check_same_run(config, workdir)
  if differences:
    raise validation.ConfigError(
        'The processes of this run were started with different settings:\n  - ' +
        '\n  - '.join(differences) + '\nStart every process with the same command (only '
        'distributed.process_id may differ).')
  validation.validate_config(config, num_devices=jax.device_count(),
                             num_processes=jax.process_count())
  source = data.load_data(config.data)  # the one read of the data; passed to every iterator
  model = models.create_model(config.model, source.info.num_classes)
  return config, source, model


def abstract_train_state(model, tx, config, image_shape, mesh) -> TrainState:
  """Shapes and shardings of the TrainState (replicated on `mesh`), without allocating it."""
  create = functools.partial(create_train_state, model, tx, image_shape=image_shape,
                             use_ema=config.ema_decay > 0)
  shapes = jax.eval_shape(create, jax.random.key_data(jax.random.key(0)))
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated(mesh)), shapes)


def image_shape_of(config) -> tuple[int, int, int]:
  return (config.data.image_size, config.data.image_size, 3)


def _eval_batches(config, split: str, source, mesh) -> Callable[[], Iterator[dict]]:
  return lambda: device_batches(data.create_eval_iterator(
      config.data, split, global_batch_size=config.eval_batch_size, source=source), mesh)


# ----------------------------------------------------------------------------- train


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming from its newest checkpoint; returns final metrics."""
  # ---------------------------------------------------------------- setup
  config, source, model = _setup(config, workdir)
  info = source.info
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    if os.path.exists(os.path.join(workdir, divergence.FILE)):  # describes the latest attempt only
      os.remove(os.path.join(workdir, divergence.FILE))
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  mesh = create_mesh()
  num_train = info.split_sizes['train']
  total_steps = optim.get_total_steps(config, num_train)
  steps_per_epoch = num_train / config.batch_size
  eval_every = config.eval_every or max(1, int(round(steps_per_epoch)))
  schedule = optim.create_learning_rate_schedule(config, total_steps)
  image_shape = image_shape_of(config)
  tx = optim.create_optimizer(config, abstract_params(model, image_shape), total_steps)
  abstract = abstract_train_state(model, tx, config, image_shape, mesh)
  state_sharding = jax.tree.map(lambda s: s.sharding, abstract)

  # ---------------------------------------------------------------- restore or initialise
  manager = checkpoint.create_manager(workdir, keep=config.keep_checkpoints,
                                      async_save=config.async_checkpoints)
  restored = checkpoint.restore(manager, abstract, set_aside_unreadable=True)
  if restored is not None:
    state, start_step = restored
    logger.info('Resumed from checkpoint step %d in %s.', start_step, workdir)
  else:
    state, start_step = init_train_state(model, tx, config, image_shape, state_sharding,
                                         config.seed), 0
    if config.init_from:  # fine-tuning: a ViT .npz (pretrained) or Swin state_dict (swin_weights)
      load = (functools.partial(swin_weights.load_swin, model=model)
              if isinstance(model, swin.SwinTransformer) else pretrained.load_pretrained)
      params = load(config.init_from, init_params=jax.device_get(state.params),
                    init_head=config.init_head, shardings=state_sharding.params)
      # The EMA gets its own buffers: the train step donates the params.
      state = state.replace(params=params, ema_params=None if state.ema_params is None else
                            jax.tree.map(jnp.copy, params))
      logger.info('Initialized the params from %s (head: %s).', config.init_from,
                  config.init_head)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
  logger.info('Model: %s parameters; %d steps (%.2f epochs of %d examples); %d devices on %d '
              'hosts; global batch %d.', f'{n_params:,}', total_steps,
              total_steps / steps_per_epoch, num_train, jax.device_count(), jax.process_count(),
              config.batch_size)

  # ---------------------------------------------------------------- compile and stream
  step_fn = jit_train_step(model, tx, config, mesh, state_sharding)
  eval_fn = jit_eval_step(model, mesh)
  has_val = info.split_sizes.get('val', 0) > 0
  val_batches = _eval_batches(config, 'val', source, mesh)
  batches = device_batches(data.create_train_iterator(
      config.data, global_batch_size=config.batch_size, seed=config.seed, start_step=start_step,
      source=source), mesh)
  log = logs.RunLog(workdir)
  limit = divergence.limit(config, info.num_classes)
  diagnose = None
  if config.diagnostics_every:  # vit_jax/diagnostics.py; reads the state, never changes it
    diagnose = diagnostics.jit_diagnostics_step(
        model, tx, make_loss_fn(model, config.label_smoothing), config.grad_accum_steps,
        state_sharding, batch_sharded(mesh), replicated(mesh))

  # ---------------------------------------------------------------- loop
  step = start_step
  last_val = None
  on_device = []    # this step's and earlier steps' metrics, not yet copied to the host
  on_host = []      # copied, checked, waiting for the next train line
  t_start = window_start = time.time()
  window_step, window_eval_seconds = start_step, 0.0   # the current train line's window
  try:
    with preemption.StopRequest() as stop:
      while step < total_steps:
        batch = next(batches)
        if diagnose and step % config.diagnostics_every == 0:  # before the update it describes
          log.write_diagnostics(step, jax.device_get(diagnose(state, batch)))
        state, metrics = step_fn(state, batch)
        step += 1
        on_device.append(metrics)
        last = step == total_steps
        if diagnose and last:  # and the final state
          log.write_diagnostics(step, jax.device_get(diagnose(state, batch)))
        write_train_line = step % config.log_every == 0 or last
        run_eval = has_val and (step % eval_every == 0 or last)
        # Read once: a signal whose handler runs later in this step stops the loop at the next.
        stopping = stop.requested(step)
        save = step % config.checkpoint_every == 0 or last or stopping

        # ---------------------------------------------------------------- check and log
        # The only device -> host copy of the loop; a NaN stops it before any eval or save.
        if write_train_line or run_eval or save:
          fetched = jax.device_get(on_device)
          divergence.check(fetched, step - len(fetched) + 1, workdir, limit)
          on_host += fetched
          on_device = []
        if write_train_line:
          now = time.time()
          img_per_sec = ((step - window_step) * config.batch_size /
                         max(now - window_start - window_eval_seconds, 1e-9))  # evals excluded
          mean = mean_metrics(on_host)
          log.write({'step': step, 'split': 'train', **mean, 'lr': float(schedule(step - 1)),
                     'img_per_sec': img_per_sec, 'epoch': step / steps_per_epoch,
                     'wall_time': now - t_start})
          eta = (total_steps - step) * config.batch_size / max(img_per_sec, 1e-9)
          logger.info('[train] step %d/%d  epoch %.2f  loss %.4f  top-1 %.2f%%  %.0f img/s  ETA %s',
                      step, total_steps, step / steps_per_epoch, mean['loss'],
                      100 * mean['top1'], img_per_sec, _format_eta(eta))
          on_host = []
          window_start, window_step, window_eval_seconds = now, step, 0.0

        # ---------------------------------------------------------------- evaluate
        if run_eval:
          t_eval = time.time()
          last_val = {'step': step, 'split': 'val', **evaluate_state(eval_fn, state, val_batches),
                      'epoch': step / steps_per_epoch}
          log.write(last_val)
          logger.info('[val] step %d: loss %.4f  top-1 %.2f%%  top-5 %.2f%%  (%d examples)', step,
                      last_val['loss'], 100 * last_val['top1'], 100 * last_val['top5'],
                      last_val['num_examples'])
          window_eval_seconds += time.time() - t_eval

        # ---------------------------------------------------------------- checkpoint
        if save:
          val_rank = {checkpoint.BEST_METRIC: last_val['top1']} if run_eval else None
          checkpoint.save(manager, step, state, val_rank)
        if stopping:
          logger.warning('Stopped by %s at step %d; rerun the same command to resume.',
                         stop.reason, step)
          break
  finally:
    last_reference, batches = [batches], None  # its teardown can take a minute: off this thread
    data.release_in_background(last_reference)
    manager.wait_until_finished()
    manager.close()
    log.close()

  return {'step': step, 'total_steps': total_steps, 'val': last_val,
          'wall_time': time.time() - t_start}


# ----------------------------------------------------------------------------- evaluate


def restore_for_eval(config: ml_collections.ConfigDict, workdir: str, checkpoint_spec: str = '',
                     source: Any = None) -> tuple[TrainState, int, Any, Any, Mesh]:
  """The checkpoint `checkpoint_spec` of `workdir` (see `checkpoint.load`) restored into the
  configured model's TrainState on this host's mesh: (state, step, model, source, mesh).
  Used by --mode=eval and by the study's figures."""
  if source is None:
    config, source, model = _setup(config, workdir)
  else:  # the caller loaded the data of a validated config
    config = hardware.resolve(config)
    model = models.create_model(config.model, source.info.num_classes)
  mesh = create_mesh()
  image_shape = image_shape_of(config)
  tx = optim.create_optimizer(config, abstract_params(model, image_shape),
                              optim.get_total_steps(config, source.info.split_sizes['train']))
  state, step = checkpoint.load(workdir, checkpoint_spec,
                                abstract_train_state(model, tx, config, image_shape, mesh))
  return state, step, model, source, mesh


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        checkpoint_spec: str = '') -> dict:
  """Restores a checkpoint of `workdir` and evaluates it on `config.data.eval_split`.

  `checkpoint_spec`: '' or 'latest' (newest), 'best' (by val top-1), a step number, or the path
  WORKDIR/checkpoints/<step>. Safe to run while another process trains in the same workdir.
  """
  if checkpoint_spec and os.sep in checkpoint_spec:  # the record goes to that step's workdir
    workdir, checkpoint_spec = checkpoint.split_checkpoint_path(checkpoint_spec)
  state, step, model, source, mesh = restore_for_eval(config, workdir, checkpoint_spec)
  split = config.data.eval_split
  record = {'step': step, 'split': split,
            **evaluate_state(jit_eval_step(model, mesh), state,
                             _eval_batches(config, split, source, mesh))}
  if jax.process_index() == 0:
    log = logs.RunLog(workdir)
    log.write(record)
    log.close()
  return record
