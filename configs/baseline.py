"""Seed 000's baseline: a pre-LN ViT (LayerNorm before each sublayer, as in the ViT paper).

CIFAR-100 upsampled 32 -> 224, patch 32 (7x7 tokens), 12 layers, hidden 64, 4 heads with
key_dim 64 (the Keras `MultiHeadAttention(num_heads=4, key_dim=64)` layout), MLP 128 -> 64 with
GELU on both layers, flatten head [2048, 1024] with dropout 0.5, batch 256, 20 epochs, AdamW
lr 1e-3 wd 1e-3 with warmup-cosine, Keras-style augmentation (flip, rotation 0.02, zoom 0.2).
On CPU the platform overlay (vit_jax/hardware.py) computes the attention folded (fewer FLOPs,
same function, since head_dim >= width).

Command:
  python run.py --config=configs/baseline.py --workdir=runs/baseline
  # offline: add --config.data.archive=/path/to/cifar-100-python.tar.gz

Expected: seed 000 reported ~50% *training* accuracy after 20 epochs on a GPU; validation top-1
is not yet measured in this project. Runtime: ~3500 steps (20 epochs of 45,000 images); no full
run timed. Latest measured speed (2026-12-02, 2-core Intel Xeon VM, short run.py runs on the real
data, with --config.concurrent_microbatches=2 and --config.host_malloc=huge_pages, then the
defaults): 205-213 img/s. History: docs/benchmarks.md.
"""

from configs import common


def get_config():
  return common.get_seed000_config(norm_placement='pre')
