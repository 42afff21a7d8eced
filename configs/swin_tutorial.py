"""Seed 001's comparison model: Swin-T fine-tuned from ImageNet weights on upsampled CIFAR-100.

Swin-T (patch 4, window 7, depths 2-2-6-2, heads 3-6-12-24, 28.3 M parameters with a 1000-class
head; here a fresh 100-class head) on 224px CIFAR-100 (32px upsampled), flip, AdamW lr 1e-4 wd
0.05, batch 128, 10 epochs, 5% warmup then cosine, pre-LN (Swin V1), LayerNorm eps 1e-5 as in
the released weights. Seed 001 reached 52.1% test top-1 (top-5 81.2%) with tfswin's
SwinTransformerTiny224 from ImageNet weights.

Weights: the released `swin_tiny_patch4_window7_224.pth` (official repository) or timm's
`model.safetensors` for swin_tiny_patch4_window7_224 (vit_jax/swin_weights.py reads both):
  python run.py --config=configs/swin_tutorial.py --workdir=runs/swin_tutorial \
      --config.init_from=/path/to/swin_tiny_patch4_window7_224.pth

Expected: not measured (no network for the weights, no GPU here; on 2 CPU cores a 224px Swin-T
step is far too slow for 10 epochs). Without init_from it trains from scratch.
"""

from configs import common


def get_config():
  config = common.get_config()
  config.data.image_size = 224
  config.data.flip = True

  model = config.model
  model.variant = 'swin_t'
  model.norm_placement = 'pre'
  model.layer_norm_epsilon = 1e-5
  model.stochastic_depth_rate = 0.1

  config.batch_size = 128
  config.num_epochs = 10.0
  config.learning_rate = 1e-4
  config.weight_decay = 0.05
  config.warmup_fraction = 0.05
  config.grad_clip_norm = 5.0
  config.label_smoothing = 0.1
  config.checkpoint_every = 1000
  return config
