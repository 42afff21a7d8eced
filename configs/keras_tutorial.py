"""Seed 001: the Keras "Image classification with Vision Transformer" recipe.

72px inputs (CIFAR upsampled), patch 6 (12x12 = 144 tokens), 4 layers, hidden 64, 4 heads with
key_dim 64, MLP 128 -> 64, flatten head [2048, 1024] dropout 0.5, pre-LN, batch 64, AdamW
lr 1e-3 wd 1e-4, 10% warmup then cosine, 40 epochs, flip + rotation 0.02 + zoom 0.2.
The attention is folded on CPU, as in `configs/baseline.py` (vit_jax/hardware.py).

Command:
  python run.py --config=configs/keras_tutorial.py --workdir=runs/keras_tutorial

Expected: seed 001 reported 43.2% test top-1 after 40 GPU epochs; not yet reproduced here.
Runtime: 28,125 steps; no full run timed. Latest measured speed (2026-12-02, 2-core Intel Xeon
VM, 250-step run.py runs on the real data, with --config.host_malloc=one_heap and
--config.concurrent_microbatches=2): 135-141 img/s. History: docs/benchmarks.md.
"""

from configs import common


def get_config():
  config = common.get_seed000_config(norm_placement='pre')
  config.data.image_size = 72
  config.model.patch_size = 6
  config.model.num_layers = 4
  config.batch_size = 64
  config.num_epochs = 40.0
  config.weight_decay = 1e-4
  config.warmup_fraction = 0.1
  config.checkpoint_every = 2000
  return config
