"""The norm-placement study on a GPU: pre / post / addnorm / sandwich × 3 seeds, one report.

A ViT-Lite-sized model for 32px CIFAR-100 (patch 4 → 64 tokens + class token; 6 layers of
width 256, 4 heads, MLP 512), 100 epochs of crop + flip + RandAugment(2, 9), label smoothing 0.1,
AdamW lr 1e-3 wd 0.05, 5% warmup then cosine, gradient clipping at 1, batch 256. Only the norm
placement and the seed change between runs, so differences between placements are the
placement's. Validation = 10% held out of train (test split untouched unless
`sweep.eval_test=True`).

  python -m vit_jax.sweep --config=configs/study.py --workdir=runs/study
  python -m vit_jax.sweep --config=configs/study.py --workdir=runs/study --dry_run  # commands

Expected: not measured yet. Runtime: 12 runs of ~4.5 M images (17,580 steps) each; not measured
on a GPU in this project (on 2 CPU cores, many hours a run: use configs/study_cpu.py there).
Extra axes, e.g. depth × learning rate:
  --config.sweep.extra_axes='model.num_layers=6,12;learning_rate=1e-3,3e-4'
"""

from configs import common


def get_config():
  config = common.get_config()
  data = config.data
  data.image_size = 32
  data.crop_padding = 4
  data.flip = True
  data.randaugment_layers = 2
  data.randaugment_magnitude = 9

  model = config.model
  model.norm_placement = 'pre'       # set per run by the sweep
  model.patch_size = 4
  model.hidden_size = 256
  model.num_layers = 6
  model.num_heads = 4
  model.mlp_dim = 512
  model.classifier = 'token'
  model.posemb = 'learn'
  model.stochastic_depth_rate = 0.1

  config.batch_size = 256
  config.eval_batch_size = 1024
  config.num_epochs = 100.0
  config.learning_rate = 1e-3
  config.weight_decay = 0.05
  config.warmup_fraction = 0.05
  config.grad_clip_norm = 1.0
  config.label_smoothing = 0.1
  config.log_every = 50
  config.eval_every = 0              # once per epoch
  config.checkpoint_every = 1000

  config.sweep = common.get_sweep_config()
  return config

