"""A small ViT that trains on 2 CPU cores in minutes: the smoke test on real data.

32px CIFAR-100 (no upsampling), patch 8 (4x4 = 16 tokens + class token), 4 pre-LN layers of
width 128, 4 heads, MLP 256, random crop (pad 4) + flip, batch 128, AdamW lr 1e-3 wd 0.05,
10% warmup then cosine over 1,200 steps (~3.4 epochs of the 45,000 training images). Patch 8
rather than 4: about a third of the step time on 2 cores, which buys more epochs in a 10-20
minute budget.

Command (offline, on the shared train split; 10% held out as validation):
  python run.py --config=configs/cpu_quick.py --workdir=runs/cpu_quick \
      --config.data.archive=../shared/data/cifar-100-binary-train.tar.gz
  python run.py --config=configs/cpu_quick.py --workdir=runs/cpu_quick --mode=eval \
      --config.data.archive=../shared/data/cifar-100-binary-train.tar.gz --config.data.eval_split=val

Expected / runtime (latest run, 2026-12-07, 2-core AMD EPYC Zen 4): val top-1 20.40% at step 1200
(chance: 1%), 125 s of training (idle cores); the eval command reports the
same 20.40% (loss 3.3108). Earlier runs: docs/benchmarks.md.
"""

from configs import common


def get_config():
  config = common.get_config()
  config.data.image_size = 32
  config.data.crop_padding = 4
  config.data.flip = True

  model = config.model
  model.norm_placement = 'pre'
  model.patch_size = 8
  model.hidden_size = 128
  model.num_layers = 4
  model.num_heads = 4
  model.mlp_dim = 256
  model.classifier = 'token'

  config.batch_size = 128
  config.eval_batch_size = 1024
  config.total_steps = 1200
  config.learning_rate = 1e-3
  config.weight_decay = 0.05
  config.warmup_fraction = 0.1       # scales with --config.total_steps for short runs
  config.log_every = 50
  config.eval_every = 400
  config.checkpoint_every = 400
  return config
