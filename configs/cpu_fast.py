"""The fast CPU recipe: the best CIFAR-100 validation top-1 in <= 60 minutes on 2 CPU cores.

A plain pre-LN ViT on 32px CIFAR-100 (no upsampling, no convolutional stem): patch 8 (4x4 = 16
tokens), 6 layers of width 256, 4 heads of width 64, MLP 512, global-average-pool head. Random
crop (pad 4) + flip, label smoothing 0.1, AdamW lr 1e-3 wd 0.05, gradient clipping 1.0, 5%
warmup then cosine to 0 over 4,000 steps of batch 256 (~23 epochs of the 45,000 training images).

Why this shape: on 2 cores the budget is ~1M images, so the model is sized for throughput. Patch
8 instead of the usual patch 4 cuts the tokens 4x (65 -> 17 before pooling); width 256 and head
width 64 keep the matmuls large enough for XLA:CPU to reach ~55% of the measured matmul peak
(benchmarks/train_step.py: 338 img/s for this model vs 192 img/s for a 128-wide patch-4 model,
which would see half as many images). No RandAugment/mixup: at ~20 epochs they cost more accuracy
(and pipeline CPU) than they save in overfitting.

Command (offline, on the shared train split; 10% held out as validation):
  python run.py --config=configs/cpu_fast.py --workdir=runs/cpu_fast \
      --config.data.archive=../shared/data/cifar-100-binary-train.tar.gz

Measured 2026-11-29 on the idle 2-core VM (AMD EPYC, AVX-512), the command above, seed 0:
~335 img/s; 4,000 steps in 51 minutes (training + 16 validations), then done.

  minutes (wall)    3.3    6.8   13.1   16.2   25.5   31.9   38.2   44.6   51.0 (end)
  step              250    500   1000   1250   2000   2500   3000   3500   4000
  val top-1 (%)    10.8   15.1   23.9   26.9   34.4   38.0   40.3   41.5   41.6
  val top-5 (%)    32.5   40.3   51.9   56.5   65.6   70.0   72.0   73.5   73.7

So val top-1 ~25.8% at 15 min, ~36.6% at 30, ~41.5% at 45, 41.6% at the end (51 min; nothing
ran in the last 9 minutes of the budget). Below the 45% goal: train top-1 (with augmentation)
ends at ~52%, and the curve is flat over the last 500 steps at the bottom of the cosine. Only
this one recipe has been run for the full budget so far (the shape was chosen by measured
throughput, benchmarks/train_step.py); the next things to try are ~4,700 steps to use the whole
hour, a wider/deeper model with RandAugment, and a higher learning rate.
"""

from configs import common


def get_config():
  config = common.get_config()
  data = config.data
  data.image_size = 32
  data.crop_padding = 4
  data.flip = True

  model = config.model
  model.norm_placement = 'pre'
  model.patch_size = 8
  model.hidden_size = 256
  model.num_layers = 6
  model.num_heads = 4
  model.mlp_dim = 512
  model.classifier = 'gap'
  model.posemb = 'learn'

  config.batch_size = 256
  config.eval_batch_size = 1000
  config.total_steps = 4000
  config.learning_rate = 1e-3
  config.weight_decay = 0.05
  config.warmup_fraction = 0.05
  config.grad_clip_norm = 1.0
  config.label_smoothing = 0.1
  config.log_every = 50
  config.eval_every = 250
  config.checkpoint_every = 1000
  return config
