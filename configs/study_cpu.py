"""The whole norm-placement study on a 2-core CPU in under 30 minutes (a pipeline check).

4 placements × 3 seeds of a tiny ViT on 32px CIFAR-100: patch 8 (4×4 = 16 tokens + class
token), 4 layers of width 64, 4 heads, MLP 128; crop + flip, AdamW lr 1e-3 wd 0.05, 400 steps of
batch 128 (1.1 epochs of the 45,000 training images; 40 warmup steps, cosine), 4 validations on
the 5,000 held-out images. Then vit_jax.figures on seed 0 of each placement and the report.
Accuracies are far from converged (~10% top-1): this config checks the tooling end to end on the
real data and shows what the report looks like; configs/study.py is the real experiment.
Each run also pays start-up (imports, decoding the archive, compilation; seeds after the first
reuse the sweep's compilation cache). 400 steps keep the grid under 30 minutes on a shared,
loaded machine too.

  python -m vit_jax.sweep --config=configs/study_cpu.py --workdir=runs/study_cpu \
      --config.data.archive=../shared/data/cifar-100-binary-train.tar.gz

The archive holds only the train split, so `sweep.eval_test` stays False.
Expected / runtime (latest run, 2026-11-29, idle 2-core AMD EPYC VM): 8.8 minutes for the 12
runs, inspection and report; the report's table is in the README, "Results".
"""

from configs import common


def get_config():
  config = common.get_config()
  data = config.data
  data.image_size = 32
  data.crop_padding = 4
  data.flip = True

  model = config.model
  model.norm_placement = 'pre'       # set per run by the sweep
  model.patch_size = 8
  model.hidden_size = 64
  model.num_layers = 4
  model.num_heads = 4
  model.mlp_dim = 128
  model.classifier = 'token'

  config.batch_size = 128
  config.eval_batch_size = 1000
  config.total_steps = 400
  config.learning_rate = 1e-3
  config.weight_decay = 0.05
  config.warmup_steps = 40
  config.log_every = 20
  config.eval_every = 100
  config.checkpoint_every = 200

  config.sweep = common.get_sweep_config()  # eval_test False: the archive has no test split
  return config
