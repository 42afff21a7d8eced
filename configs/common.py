"""Defaults shared by every experiment: each hyper-parameter has its one default here.

Experiment configs (`configs/addnorm.py`, ...) start from `get_config()` and override
what differs. Every field can be overridden on the command line, e.g.
`--config.model.num_layers=6 --config.data.archive=/path/cifar-100-python.tar.gz`.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_model_config() -> ml_collections.ConfigDict:
  """Fields of `vit_jax.models.VisionTransformer` (splatted into it by name)."""
  model = ml_collections.ConfigDict()
  model.name = 'vit'                 # 'vit' (vit_jax/models.py) | 'swin' (vit_jax/swin.py)
  model.variant = ''                 # e.g. 'B/16' or 'swin_t': fills the sizes from the paper
  model.patch_size = 4
  model.hidden_size = 192
  model.num_layers = 6
  model.num_heads = 3
  model.mlp_dim = 768                # int, or a tuple of hidden widths
  model.mlp_activate_output = False  # Keras seed applies GELU on the MLP output too
  model.head_dim = placeholder(int)  # per-head q/k/v width; None = hidden_size // num_heads
  model.norm_placement = 'pre'       # a preset of vit_jax/norms.py (pre, post, respost, deepnorm, mixln, ...) or a spec
  model.norm_type = 'layernorm'      # layernorm | rmsnorm | dyt | none: every site the spec does not type
  model.final_norm = placeholder(bool)  # None = the spec's encoder:final; True / False override
  model.layer_norm_epsilon = 1e-6
  model.classifier = 'token'         # 'token' | 'gap' | 'flatten'
  model.posemb = 'learn'             # 'learn' | 'sincos2d'
  model.dropout_rate = 0.0
  model.attention_dropout_rate = 0.0
  model.stochastic_depth_rate = 0.0
  model.head_hidden_sizes = ()       # MLP head widths before the classifier (seed: (2048, 1024))
  model.head_dropout_rate = 0.0
  model.representation_size = placeholder(int)  # vit_jax pre-logits width; None = none
  model.head_bias_init = 0.0
  model.dtype = 'float32'            # compute dtype: 'float32' | 'bfloat16'
  model.param_dtype = 'float32'
  # Hardware settings: 'auto' = the platform overlay's value for the backend (vit_jax/hardware.py).
  model.attention_impl = 'auto'      # 'auto' | 'xla' | 'cudnn' (GPU only) | 'folded' (head_dim >= hidden_size)
  model.kernels = 'auto'             # 'auto' | 'reference' (plain Flax) | 'cpu' (vit_jax/cpu_kernels.py)
  model.remat = False                # rematerialise each block: less memory, more compute
  model.scan = False                 # nn.scan over blocks: faster compiles for deep models
  model.resnet_layers = ()           # hybrid ResNet stem: units per stage, () = pure ViT; R50+ViT-B/16: (3, 4, 9) with patch_size 1
  model.resnet_width = 1             # hybrid: width multiplier (64 * width root channels)
  # Swin only (model.name='swin'; it also reads patch_size, hidden_size = the first stage's
  # channels, the norm fields, layer_norm_epsilon, stochastic_depth_rate, dtype, param_dtype):
  model.stage_depths = (2, 2, 6, 2)  # blocks per stage (Swin-T)
  model.stage_heads = (3, 6, 12, 24)  # attention heads per stage
  model.window_size = 7              # attention window, in tokens (a stage's map smaller than it: one window)
  model.mlp_ratio = 4.0              # MLP hidden width / channels
  return model


def get_data_config() -> ml_collections.ConfigDict:
  """Fields read by `vit_jax.data` (checked by `vit_jax.validation`)."""
  data = ml_collections.ConfigDict()
  data.dataset = 'cifar100'          # 'cifar100' | 'cifar10' | any TFDS image classification set
  data.archive = ''                  # local official CIFAR archive (.tar.gz or folder); '' = TFDS
  data.tfds_data_dir = ''            # TFDS data_dir; '' = TFDS default (~/tensorflow_datasets)
  data.tfds_download = True          # download + prepare a missing TFDS dataset (needs network)
  data.strict_counts = True          # archives must hold the official number of records
  data.train_split = 'train'
  data.val_fraction = 0.1            # held out from train_split by a fixed permutation
  data.val_split_seed = 0
  data.eval_split = 'test'           # split for --mode=eval: 'val' | 'test' | 'train' | TFDS split string
  data.image_size = 32               # images are resized to this (the seeds upsample 32 -> 72 or 224)
  data.crop_padding = 0              # random crop after padding by this many pixels (0 = off)
  data.random_resized_crop = False   # Inception-style crop instead
  data.rrc_min_scale = 0.08
  data.flip = True                   # random horizontal flip
  data.rotation = 0.0                # max rotation, fraction of 2*pi (Keras RandomRotation factor)
  data.zoom = 0.0                    # Keras RandomZoom factor
  data.randaugment_layers = 0        # RandAugment N (0 = off)
  data.randaugment_magnitude = 10    # RandAugment M
  data.mixup_alpha = 0.0             # 0 = off
  data.cutmix_alpha = 0.0            # 0 = off
  data.class_balanced = False        # sample with weights 1 / class count
  data.cache = True
  data.prefetch = 2
  data.num_parallel_calls = -1       # -1 = tf.data AUTOTUNE
  return data


def get_config() -> ml_collections.ConfigDict:
  """The full default config: a small pre-LN ViT on CIFAR-100 at 32px."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = get_model_config()
  config.data = get_data_config()

  # Schedule length: `total_steps` > 0 wins over `num_epochs`.
  config.batch_size = 256
  config.eval_batch_size = 512
  config.num_epochs = 20.0
  config.total_steps = 0

  # Optimizer.
  config.optimizer = 'adamw'         # 'adamw' | 'sgd' (with momentum)
  config.learning_rate = 1e-3
  config.weight_decay = 1e-3         # decoupled; applied to kernels only (not biases, LN, pos-emb, cls)
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8
  config.momentum = 0.9              # for sgd
  config.lr_schedule = 'warmup_cosine'  # 'warmup_cosine' | 'warmup_linear' | 'constant'
  config.warmup_steps = 0
  config.warmup_fraction = 0.0       # fraction of total steps; warmup_steps > 0 wins over it
  config.end_lr_ratio = 0.0          # final lr = learning_rate * end_lr_ratio
  config.grad_clip_norm = 0.0        # 0 = no clipping
  config.grad_accum_steps = 1        # micro-batches per update (same update as the full batch)
  # Hardware settings (0 / 'auto' = the platform overlay's value, vit_jax/hardware.py):
  config.concurrent_microbatches = 0  # independent parts per micro-batch, run side by side (CPU cores)
  config.host_malloc = 'auto'        # run.py's glibc malloc: 'auto' | 'default' | 'huge_pages' | 'one_heap' (vit_jax/host.py)
  config.label_smoothing = 0.0
  config.ema_decay = 0.0             # 0 = no EMA of parameters; e.g. 0.9999
  config.trainable = ''              # regex of param paths to train ('' = all; 'head' = linear probe)

  # Initialization from an official-layout ViT .npz (vit_jax.pretrained); used only when the
  # workdir has no checkpoint to resume from.
  config.init_from = ''              # path to the .npz ('' = random init)
  config.init_head = 'fresh'         # 'fresh': new head for this dataset | 'load': the file's head

  # Loop.
  config.log_every = 50
  config.divergence_factor = 0.0     # stop as diverged when the loss > k x ln(classes), the initial loss; 0 = only a non-finite loss
  config.diagnostics_every = 100     # steps between diagnostics.jsonl records (vit_jax/diagnostics.py); 0 = off
  config.eval_every = 0              # steps; 0 = once per epoch (and at the end)
  config.checkpoint_every = 1000     # steps; a checkpoint is also written at the end
  config.keep_checkpoints = 3        # latest K kept, plus the best by val top-1
  config.async_checkpoints = True

  # Several processes (hosts, or groups of devices) as one run: vit_jax/distributed.py.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.enabled = False  # call jax.distributed.initialize() before anything else
  config.distributed.coordinator_address = ''  # 'host:port' of process 0; '' = $JAX_COORDINATOR_ADDRESS, else auto-detect (TPU, SLURM)
  config.distributed.num_processes = 0  # 0 = $JAX_NUM_PROCESSES, else auto-detect
  config.distributed.process_id = -1  # -1 = $JAX_PROCESS_ID, else auto-detect
  config.distributed.heartbeat_timeout_seconds = 100  # a process silent this long is dead: the others exit
  config.distributed.initialization_timeout_seconds = 300  # how long to wait for every process to join
  return config


def get_seed000_config(norm_placement: str) -> ml_collections.ConfigDict:
  """Seed 000's recipe (see configs/baseline.py); only the norm placement varies."""
  config = get_config()
  config.data.image_size = 224
  config.data.flip = True
  config.data.rotation = 0.02
  config.data.zoom = 0.2

  model = config.model
  model.norm_placement = norm_placement
  model.patch_size = 32
  model.hidden_size = 64
  model.num_layers = 12
  model.num_heads = 4
  model.head_dim = 64
  model.mlp_dim = 128
  model.mlp_activate_output = True
  model.dropout_rate = 0.1
  model.attention_dropout_rate = 0.1
  model.classifier = 'flatten'
  model.head_hidden_sizes = (2048, 1024)
  model.head_dropout_rate = 0.5

  config.batch_size = 256
  config.num_epochs = 20.0
  config.learning_rate = 1e-3
  config.weight_decay = 1e-3
  config.warmup_fraction = 0.1
  config.eval_every = 0
  config.checkpoint_every = 500
  return config


def get_sweep_config() -> ml_collections.ConfigDict:
  """The study grid (read by vit_jax.sweep; training ignores it). See vit_jax/sweep.py for syntax."""
  sweep = ml_collections.ConfigDict()
  sweep.norm_placements = ('pre', 'post', 'addnorm', 'sandwich')  # presets or 'attn:..,mlp:..'
  sweep.seeds = (0, 1, 2)
  sweep.extra_axes = ''              # 'field=v1,v2;field2=w1,w2'
  sweep.eval_test = False            # also run.py --mode=eval on the test split after training
  sweep.inspect = 'first_seed'       # 'none' | 'first_seed' | 'all': runs that get figures
  sweep.report = True                # python -m vit_jax.report at the end
  sweep.baseline = ''                # e.g. 'pre': the report tests each placement against it, not every pair
  sweep.init_depths = ''             # e.g. '6,12,24': python -m vit_jax.init_analysis first, into <study>/init
  return sweep


def get_cpu_recipe_config() -> ml_collections.ConfigDict:
  """configs/cpu_fast.py's recipe on 32px CIFAR-100, for any model: random crop (pad 4) + flip,
  label smoothing 0.1, AdamW lr 1e-3 wd 0.05, clipping 1.0, batch 128, 5% warmup then cosine.
  The CPU configs that compare models or schemes (cpu_fast, swin_cpu, the norm study) start
  here, so that only the model and the schedule's length differ between them."""
  config = get_config()
  config.data.image_size = 32
  config.data.crop_padding = 4
  config.data.flip = True
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.learning_rate = 1e-3
  config.weight_decay = 0.05
  config.warmup_fraction = 0.05
  config.grad_clip_norm = 1.0
  config.label_smoothing = 0.1
  config.log_every = 50
  return config


def get_norm_study_config(total_steps: int) -> ml_collections.ConfigDict:
  """The normalization study's model and recipe on 2 CPU cores (configs/study_norms_cpu.py,
  configs/study_stability_cpu.py): configs/cpu_fast.py's model with patch 8 (16 tokens; 6 layers
  of width 128, 2 heads of width 64, MLP 256, GAP head) and its recipe (get_cpu_recipe_config)
  over `total_steps`."""
  config = get_cpu_recipe_config()
  model = config.model
  model.norm_placement = 'pre'       # set per run by the sweep
  model.patch_size = 8
  model.hidden_size = 128
  model.num_layers = 6
  model.num_heads = 2
  model.mlp_dim = 256
  model.classifier = 'gap'
  model.posemb = 'learn'

  config.total_steps = total_steps
  config.diagnostics_every = 100
  config.eval_every = 500
  config.checkpoint_every = 500
  config.sweep = get_sweep_config()
  return config

