"""Every user-facing config rule, checked in one pass before anything is compiled or downloaded.

Why one module: a run should fail in its first second, with every bad value listed at once,
rather than minutes later inside a compile, a download or the first batch. Each problem becomes
one line saying which field is wrong, what it holds and what would be right; all problems are
reported together so a user fixes them in one go. The sections follow the config: data, model,
training/optimizer, checkpoints/logging, host (devices, processes, malloc). The other modules
assume a validated config and check only their own invariants; what can only be known from the
data itself (a missing archive, an empty split) is raised by vit_jax/data as DatasetError.
"""

import os
import re
from collections.abc import Sequence

import ml_collections

from vit_jax import distributed
from vit_jax import hardware
from vit_jax import host
from vit_jax import models
from vit_jax import norms
from vit_jax import optim
from vit_jax import pretrained
from vit_jax import resnet
from vit_jax import swin
from vit_jax import variants
from vit_jax.data import cifar

DTYPES = ('float32', 'bfloat16', 'float16')


class ConfigError(ValueError):
  """A config with bad values; the message lists each one and how to fix it."""


# ----------------------------------------------------------------------------- data


def data_problems(data_config: ml_collections.ConfigDict) -> list[str]:
  """Problems with `config.data` values; [] when fine. No disk access."""
  c = data_config
  problems = []

  def bad(field, msg):
    problems.append(f'data.{field}={getattr(c, field)!r}: {msg}')

  if not isinstance(c.dataset, str) or not c.dataset:
    bad('dataset', "must be a dataset name: 'cifar100', 'cifar10' or a TFDS name")
  if c.archive and c.dataset not in cifar.DATASETS:
    bad('dataset', f'data.archive reads official CIFAR archives only; use one of '
        f'{cifar.DATASETS} or clear data.archive to load this dataset from TFDS')
  if not 0.0 <= c.val_fraction < 1.0:
    bad('val_fraction', 'must be in [0, 1) (fraction of train_split held out as val)')
  if c.eval_split == 'val' and c.val_fraction == 0:
    bad('eval_split', "'val' needs data.val_fraction > 0")
  if not isinstance(c.image_size, int) or c.image_size <= 0:
    bad('image_size', 'must be a positive int')
  if c.crop_padding < 0:
    bad('crop_padding', 'must be >= 0 (0 turns the padded random crop off)')
  if c.random_resized_crop and c.crop_padding:
    bad('crop_padding', 'cannot be combined with data.random_resized_crop=True; pick one crop')
  if not 0.0 < c.rrc_min_scale <= 1.0:
    bad('rrc_min_scale', 'must be in (0, 1] (smallest crop area as a fraction of the image)')
  if not 0.0 <= c.rotation <= 0.125:
    bad('rotation', 'must be in [0, 0.125]: max angle as a fraction of 2*pi (Keras '
        'RandomRotation factor), at most 45 degrees for the two-pass warp')
  if not 0.0 <= c.zoom < 1.0:
    bad('zoom', 'must be in [0, 1) (Keras RandomZoom factor)')
  if c.randaugment_layers < 0:
    bad('randaugment_layers', 'must be >= 0 (0 turns RandAugment off)')
  if not 0 <= c.randaugment_magnitude <= 30:
    bad('randaugment_magnitude', 'must be in [0, 30] (10 = the maximum of each op)')
  for field in ('mixup_alpha', 'cutmix_alpha'):
    if getattr(c, field) < 0:
      bad(field, 'must be >= 0 (0 turns it off)')
  if not (c.prefetch >= 0 or c.prefetch == -1):
    bad('prefetch', 'must be >= 0 batches, or -1 for AUTOTUNE')
  if not (c.num_parallel_calls >= 1 or c.num_parallel_calls == -1):
    bad('num_parallel_calls', 'must be >= 1, or -1 for AUTOTUNE')
  if not isinstance(c.train_split, str) or not c.train_split:
    bad('train_split', "must be a split name such as 'train' or 'train[:50%]'")
  return problems


# ----------------------------------------------------------------------------- model


def _widths(value) -> Sequence:
  return value if isinstance(value, (list, tuple)) else (value,)


def _swin_problems(model: ml_collections.ConfigDict, image_size: int) -> list[str]:
  """vit_jax/swin.py's fields (the ViT-only ones are ignored)."""
  p = []
  depths, heads = tuple(model.stage_depths), tuple(model.stage_heads)
  if not depths or any(int(d) <= 0 for d in depths):
    p.append(f'model.stage_depths={depths} must hold a positive block count per stage.')
    return p
  if len(heads) != len(depths) or any(int(h) <= 0 for h in heads):
    p.append(f'model.stage_heads={heads} must hold a positive head count per stage of '
             f'model.stage_depths={depths}.')
  else:
    for i, h in enumerate(heads):
      width = model.hidden_size * 2 ** i
      if width % h:
        p.append(f'stage {i} has {width} channels (model.hidden_size={model.hidden_size} x '
                 f'2^{i}), not divisible by its {h} heads (model.stage_heads).')
  p += [f'data.image_size / model.patch_size / model.window_size: {q}'
        for q in swin.size_problems(image_size, model.patch_size, model.window_size, len(depths))]
  if model.norm_type not in norms.NORM_TYPES:
    p.append(f'model.norm_type={model.norm_type!r}: expected one of {", ".join(norms.NORM_TYPES)}.')
  else:
    try:
      missing = swin.unsupported(norms.parse_spec(model.norm_placement, sum(depths),
                                                  model.norm_type))
      if missing:
        p.append(f'model.norm_placement={model.norm_placement!r} uses {"; ".join(missing)}, '
                 'which the Swin does not implement (ViT only). Swin takes the placements of '
                 'norms around its sublayers: pre (Swin V1), respost (Swin V2), post, sandwich, '
                 'addnorm, mixln, layerscale, none, with any norm_type.')
    except ValueError as e:
      p.append(f'model.norm_placement: {e}')
  if model.mlp_ratio <= 0:
    p.append(f'model.mlp_ratio={model.mlp_ratio} must be > 0.')
  if not 0.0 <= model.stochastic_depth_rate < 1.0:
    p.append(f'model.stochastic_depth_rate={model.stochastic_depth_rate} must be in [0, 1).')
  if model.layer_norm_epsilon <= 0:
    p.append(f'model.layer_norm_epsilon={model.layer_norm_epsilon} must be > 0.')
  if model.scan and not p:
    try:
      spec = norms.parse_spec(model.norm_placement, sum(depths), model.norm_type)
      p += [f'model.scan=True: {q}; set model.scan=False.' for q in swin.scan_layout_problems(
          depths, image_size, model.patch_size, model.window_size, spec)]
    except ValueError:
      pass  # reported above
  for name in ('dtype', 'param_dtype'):
    if model[name] not in DTYPES:
      p.append(f'model.{name}={model[name]!r}: expected one of {DTYPES}.')
  return p


def _model_problems(model_config: ml_collections.ConfigDict, image_size: int) -> list[str]:
  p = []
  model = ml_collections.ConfigDict(model_config.to_dict())
  if model.variant:
    try:
      model.update(variants.parse_variant(model.variant))  # checks the sizes the model will use
    except ValueError as e:
      p.append(f'model.variant={model.variant!r} is unknown: {e}')
      return p
  if model.name not in models.MODEL_NAMES:
    return [f'model.name={model.name!r}: expected one of {models.MODEL_NAMES}.']
  if model.name == 'swin':
    return _swin_problems(model, image_size)
  for name in ('patch_size', 'hidden_size', 'num_layers', 'num_heads'):
    if model[name] <= 0:
      p.append(f'model.{name}={model[name]} must be a positive integer.')
  if any(int(n) <= 0 for n in model.resnet_layers):
    p.append(f'model.resnet_layers={tuple(model.resnet_layers)} must hold positive unit counts '
             '(or be () for a pure ViT).')
  elif model.resnet_width <= 0:
    p.append(f'model.resnet_width={model.resnet_width} must be a positive integer.')
  elif model.patch_size > 0:
    # A hybrid's patches are taken on the ResNet feature map, `stride` times smaller.
    stride = resnet.resnet_stride(model.resnet_layers) if model.resnet_layers else 1
    if image_size % (model.patch_size * stride):
      what = (f'model.patch_size={model.patch_size}' if stride == 1 else
              f'model.patch_size={model.patch_size} x the ResNet stem stride {stride}')
      size = model.patch_size * stride
      p.append(f'data.image_size={image_size} is not divisible by {what}; choose an image size '
               f'that is a multiple of {size} (e.g. {max(1, image_size // size) * size}).')
  if model.head_dim is not None and model.head_dim <= 0:
    p.append(f'model.head_dim={model.head_dim} must be positive (or None = hidden_size // '
             'num_heads).')
  elif (model.head_dim is None and model.num_heads > 0 and model.hidden_size > 0 and
        model.hidden_size % model.num_heads):
    p.append(f'model.hidden_size={model.hidden_size} is not divisible by model.num_heads='
             f'{model.num_heads}; change one, or set model.head_dim explicitly.')
  if not _widths(model.mlp_dim) or any(w <= 0 for w in _widths(model.mlp_dim)):
    p.append(f'model.mlp_dim={model.mlp_dim} must be a positive width or a tuple of them.')
  if model.norm_type not in norms.NORM_TYPES:
    p.append(f'model.norm_type={model.norm_type!r}: expected one of {", ".join(norms.NORM_TYPES)}.')
  else:
    try:
      spec = norms.parse_spec(model.norm_placement, max(1, model.num_layers), model.norm_type)
      if model.attention_impl == 'folded' and spec.inside_attention:
        p.append(f'model.attention_impl=folded folds q and k away, so it cannot hold the QK-norm, '
                 f'Sub-LN or head scale of model.norm_placement={model.norm_placement!r}; use '
                 'model.attention_impl=xla (or auto).')
    except ValueError as e:
      p.append(f'model.norm_placement: {e}')
  if model.classifier not in models.CLASSIFIERS:
    p.append(f'model.classifier={model.classifier!r}: expected one of {models.CLASSIFIERS}.')
  if model.posemb not in models.POSEMBS:
    p.append(f'model.posemb={model.posemb!r}: expected one of {models.POSEMBS}.')
  for name in ('dropout_rate', 'attention_dropout_rate', 'stochastic_depth_rate',
               'head_dropout_rate'):
    if not 0.0 <= model[name] < 1.0:
      p.append(f'model.{name}={model[name]} must be in [0, 1).')
  if any(w <= 0 for w in model.head_hidden_sizes):
    p.append(f'model.head_hidden_sizes={tuple(model.head_hidden_sizes)} must hold positive widths.')
  if model.representation_size is not None and model.representation_size <= 0:
    p.append(f'model.representation_size={model.representation_size} must be positive (or None).')
  if model.layer_norm_epsilon <= 0:
    p.append(f'model.layer_norm_epsilon={model.layer_norm_epsilon} must be > 0.')
  for name in ('dtype', 'param_dtype'):
    if model[name] not in DTYPES:
      p.append(f'model.{name}={model[name]!r}: expected one of {DTYPES}.')
  if model.attention_impl not in (hardware.AUTO, *models.ATTENTION_IMPLS):
    p.append(f'model.attention_impl={model.attention_impl!r}: expected one of '
             f'{(hardware.AUTO, *models.ATTENTION_IMPLS)}.')
  if model.kernels not in models.KERNELS:
    p.append(f'model.kernels={model.kernels!r}: expected one of {models.KERNELS}.')
  return p


def _training_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Schedule length, optimizer, learning-rate schedule, regularization, initialization."""
  p = []
  if config.batch_size <= 0:
    p.append(f'batch_size={config.batch_size} must be positive.')
  if config.total_steps < 0:
    p.append(f'total_steps={config.total_steps} must be >= 0 (0 = use num_epochs).')
  if config.total_steps == 0 and config.num_epochs <= 0:
    p.append(f'num_epochs={config.num_epochs} must be positive (or set total_steps).')
  if config.learning_rate <= 0:
    p.append(f'learning_rate={config.learning_rate} must be positive.')
  if config.weight_decay < 0:
    p.append(f'weight_decay={config.weight_decay} must be >= 0.')
  if config.optimizer not in optim.OPTIMIZERS:
    p.append(f'optimizer={config.optimizer!r}: expected one of {optim.OPTIMIZERS}.')
  if config.lr_schedule not in optim.LR_SCHEDULES:
    p.append(f'lr_schedule={config.lr_schedule!r}: expected one of {optim.LR_SCHEDULES}.')
  if config.warmup_steps < 0:
    p.append(f'warmup_steps={config.warmup_steps} must be >= 0.')
  if not 0.0 <= config.warmup_fraction < 1.0:
    p.append(f'warmup_fraction={config.warmup_fraction} must be in [0, 1).')
  if config.total_steps > 0 and config.warmup_steps >= config.total_steps:
    p.append(f'warmup_steps={config.warmup_steps} is not shorter than total_steps='
             f'{config.total_steps}; warmup must end before training does.')
  if not 0.0 <= config.end_lr_ratio <= 1.0:
    p.append(f'end_lr_ratio={config.end_lr_ratio} must be in [0, 1].')
  for name in ('adam_b1', 'adam_b2', 'momentum'):
    if not 0.0 <= config[name] < 1.0:
      p.append(f'{name}={config[name]} must be in [0, 1).')
  if config.adam_eps <= 0:
    p.append(f'adam_eps={config.adam_eps} must be positive.')
  if config.grad_clip_norm < 0:
    p.append(f'grad_clip_norm={config.grad_clip_norm} must be >= 0 (0 = off).')
  if config.grad_accum_steps < 1:
    p.append(f'grad_accum_steps={config.grad_accum_steps} must be >= 1.')
  if not 0.0 <= config.label_smoothing < 1.0:
    p.append(f'label_smoothing={config.label_smoothing} must be in [0, 1).')
  if not 0.0 <= config.ema_decay < 1.0:
    p.append(f'ema_decay={config.ema_decay} must be in [0, 1) (0 = off).')
  if config.trainable:
    try:
      re.compile(config.trainable)
    except re.error as e:
      p.append(f'trainable={config.trainable!r} is not a valid regular expression ({e}).')
  swin_model = config.model.name == 'swin' or config.model.variant.lower().startswith('swin')
  if config.init_from and not os.path.isfile(config.init_from):
    p.append(f'init_from={config.init_from!r} is not a file; give the path of ' +
             ('a Swin .pth / .safetensors (timm or official layout)' if swin_model else
              'an official-layout ViT .npz (see docs/pretrained.md)') + ', or "" for random init.')
  if config.init_from and swin_model and config.init_from.endswith('.npz'):
    p.append(f'init_from={config.init_from!r}: a Swin loads PyTorch-layout weights (.pth or '
             '.safetensors, vit_jax/swin_weights.py), not a ViT .npz.')
  if config.init_head not in pretrained.INIT_HEADS:
    p.append(f'init_head={config.init_head!r}: expected one of {pretrained.INIT_HEADS}.')
  if config.init_from and not swin_model and config.model.posemb != 'learn':
    p.append(f'init_from needs model.posemb="learn" (official checkpoints have learned position '
             f'embeddings), not {config.model.posemb!r}.')
  if config.seed < 0:
    p.append(f'seed={config.seed} must be >= 0.')
  return p


# ----------------------------------------------------------------------------- checkpoints


def _checkpoint_problems(config: ml_collections.ConfigDict) -> list[str]:
  p = []
  for name in ('log_every', 'checkpoint_every', 'keep_checkpoints'):
    if config[name] <= 0:
      p.append(f'{name}={config[name]} must be positive.')
  if config.eval_every < 0:
    p.append(f'eval_every={config.eval_every} must be >= 0 (0 = once per epoch).')
  if config.divergence_factor < 0 or 0 < config.divergence_factor <= 1:
    p.append(f'divergence_factor={config.divergence_factor} must be 0 (off) or > 1 (the loss '
             'starts at ln(classes)).')
  if config.diagnostics_every < 0:
    p.append(f'diagnostics_every={config.diagnostics_every} must be >= 0 (0 = no diagnostics).')
  return p


# ----------------------------------------------------------------------------- host


def _host_problems(config: ml_collections.ConfigDict, num_devices: int,
                   num_processes: int) -> list[str]:
  """How the batches split over devices, processes and concurrent parts; host malloc."""
  p = []
  if config.batch_size > 0:
    if config.batch_size % num_devices:
      p.append(f'batch_size={config.batch_size} is not divisible by the {num_devices} devices; '
               f'use a multiple of {num_devices}.')
    if config.batch_size % num_processes:
      p.append(f'batch_size={config.batch_size} is not divisible by the {num_processes} hosts.')
    parts = config.grad_accum_steps * max(1, config.concurrent_microbatches)  # 0 = auto = 1
    if parts >= 1 and (config.batch_size % parts or (config.batch_size // parts) % num_devices):
      p.append(f'batch_size={config.batch_size} must split into grad_accum_steps='
               f'{config.grad_accum_steps} x concurrent_microbatches='
               f'{config.concurrent_microbatches} parts that are each divisible by the '
               f'{num_devices} devices.')
    if (config.data.mixup_alpha > 0 or config.data.cutmix_alpha > 0) and (
        (config.batch_size // num_processes) % 2):
      p.append(f'batch_size={config.batch_size}: mixup/cutmix pair examples within each host\'s '
               'batch, which must be even.')
  if config.eval_batch_size <= 0 or config.eval_batch_size % num_devices:
    p.append(f'eval_batch_size={config.eval_batch_size} must be a positive multiple of the '
             f'{num_devices} devices.')
  if config.concurrent_microbatches < 0:
    p.append(f'concurrent_microbatches={config.concurrent_microbatches} must be >= 1 '
             '(0 = auto: the platform overlay, vit_jax/hardware.py).')
  if config.host_malloc not in (hardware.AUTO, *host.MALLOC_MODES):
    p.append(f'host_malloc={config.host_malloc!r} is not one of '
             f'{", ".join((hardware.AUTO, *host.MALLOC_MODES))} (vit_jax/host.py says what each does).')
  return p


def distributed_problems(dist: ml_collections.ConfigDict) -> list[str]:
  """`config.distributed`, checked on its own before jax.distributed.initialize (which would
  wait for the other processes for initialization_timeout_seconds before failing): the trainer
  raises these first (`raise_problems`), then `validate_config` the rest, which needs the
  device and process counts that only exist after it."""
  p = []
  set_fields = [f for f, unset in (('coordinator_address', ''), ('num_processes', 0),
                                   ('process_id', -1)) if dist[f] != unset]
  if set_fields and not dist.enabled:
    p.append(f'distributed.{set_fields[0]} is set but distributed.enabled=False; add '
             '--config.distributed.enabled=True to run as several processes.')
  if dist.num_processes < 0:
    p.append(f'distributed.num_processes={dist.num_processes} must be >= 1 (0 = from '
             '$JAX_NUM_PROCESSES or the cluster).')
  if dist.process_id < -1 or (dist.num_processes and dist.process_id >= dist.num_processes):
    p.append(f'distributed.process_id={dist.process_id} must be in [0, num_processes) (-1 = from '
             '$JAX_PROCESS_ID or the cluster).')
  if dist.coordinator_address and ':' not in dist.coordinator_address:
    p.append(f'distributed.coordinator_address={dist.coordinator_address!r} must be '
             '"host:port" (process 0\'s address and a free port).')
  for name in ('heartbeat_timeout_seconds', 'initialization_timeout_seconds'):
    if dist[name] <= 0:
      p.append(f'distributed.{name}={dist[name]} must be positive.')
  if dist.enabled:
    for name in (distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
      try:
        distributed.env_int(name)
      except ValueError as e:
        p.append(str(e))
  return p


# ----------------------------------------------------------------------------- the one pass


def validate_config(config: ml_collections.ConfigDict, num_devices: int = 1,
                    num_processes: int = 1) -> None:
  """Raises ConfigError listing every bad value of `config`; returns None when all is well."""
  problems = data_problems(config.data)
  problems += _model_problems(config.model, config.data.image_size)
  problems += _training_problems(config)
  problems += _checkpoint_problems(config)
  problems += _host_problems(config, num_devices, num_processes)
  raise_problems(problems)


def raise_problems(problems: Sequence[str]) -> None:
  """Raises ConfigError listing `problems`, one per line; returns when there are none."""
  if problems:
    raise ConfigError('Invalid config:\n  - ' + '\n  - '.join(problems))


def validate_workdir(workdir: str) -> None:
  """The workdir must be creatable and writable before training starts."""
  if not workdir:
    raise ConfigError('--workdir is required: the folder for checkpoints and metrics.jsonl.')
  path = os.path.abspath(workdir)
  probe = path
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise ConfigError(f'--workdir={workdir}: {probe} exists and is not a folder.')
  if not os.access(probe, os.W_OK | os.X_OK):
    raise ConfigError(f'--workdir={workdir}: {probe} is not writable; choose a folder you can '
                      'write to.')
