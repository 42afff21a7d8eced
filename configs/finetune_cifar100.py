"""Fine-tune an official pretrained ViT on CIFAR-100: the vit_jax recipe.

google-research/vision_transformer's CIFAR-100 fine-tuning: 384px inputs (CIFAR upsampled),
10,000 steps of batch 512, SGD momentum 0.9, lr 0.03 (their grid: 0.001-0.03), 500 warmup steps
then cosine to 0, global gradient clipping 1.0, no weight decay, no dropout, Inception crop
(area 5-100%) + flip, 2% of train held out. Fresh zero-initialized head; the i21k files'
`pre_logits` are dropped (representation_size=None); the position embeddings are resampled
from 14x14 (224/16) to 24x24 (384/16), the class token kept.

Get an official checkpoint first (docs/pretrained.md), e.g.
https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz, then:

  python run.py --config=configs/finetune_cifar100.py --workdir=runs/ft_b16 \
      --config.init_from=ViT-B_16.npz
  # another zoo model (its file must match): --config.model.variant=L/16 / S/32 / R50+B/16 ...
  # AdamW instead of SGD:   --config.optimizer=adamw --config.learning_rate=1e-4
  # linear probe (everything but the head frozen):
  #   --config.trainable='^(head|pre_logits)/' --config.learning_rate=0.1
  # quick look at 224px (14x14 grid, no resampling): --config.data.image_size=224

Expected: ViT paper: ViT-B/16 pretrained on ImageNet-21k -> CIFAR-100 ~92% top-1 (L/16 93.25%,
Table 2). Not measurable here (no network, no GPU): only a few CPU steps were run, on a
random-valued file in the official layout (benchmarks/finetune_b16_smoke.py). The official
models saw inputs scaled to [-1, 1]; our pipeline standardizes with the dataset mean/std, a
shift that full fine-tuning absorbs but a linear probe feels more.

Runtime (estimate, not measured): 5.1M images at 384px, ~49 GMACs forward per image for B/16,
~1.5e18 FLOPs in all: roughly 1-4 hours on one A100/H100-class GPU in bfloat16
(--config.model.dtype=bfloat16) at 30-40% utilization, several times longer in float32; not
feasible on CPU. grad_accum_steps=8 (micro-batches of 64, as vit_jax) keeps the activations of
one micro-batch within a 16-40 GB accelerator.
"""

from configs import common


def get_config():
  config = common.get_config()
  config.init_from = ''              # the official .npz (required: --config.init_from=PATH)
  config.init_head = 'fresh'

  model = config.model
  model.variant = 'B/16'             # sets hidden/layers/heads/MLP/patch; must match the file
  model.norm_placement = 'pre'       # the official models' placement
  model.classifier = 'token'
  model.representation_size = None   # drop the i21k files' pre_logits, as vit_jax fine-tuning
  model.dropout_rate = 0.0
  model.attention_dropout_rate = 0.0

  data = config.data
  data.image_size = 384
  data.random_resized_crop = True    # vit_jax: Inception crop, area 5-100%, then resize
  data.rrc_min_scale = 0.05
  data.crop_padding = 0
  data.flip = True
  data.val_fraction = 0.02           # vit_jax trains on train[:98%]

  config.batch_size = 512
  config.grad_accum_steps = 8
  config.eval_batch_size = 512
  config.total_steps = 10_000
  config.optimizer = 'sgd'
  config.momentum = 0.9
  config.learning_rate = 0.03
  config.weight_decay = 0.0
  config.lr_schedule = 'warmup_cosine'
  config.warmup_steps = 500
  config.end_lr_ratio = 0.0
  config.grad_clip_norm = 1.0
  config.label_smoothing = 0.0

  config.log_every = 50
  config.eval_every = 500
  config.checkpoint_every = 1000
  return config
