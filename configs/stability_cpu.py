"""Stability of four norm placements over learning rate x warmup, on 2 CPU cores (short budget).

configs/study_cpu.py's tiny ViT (32px CIFAR-100, patch 8, 4 layers of width 64, 4 heads, MLP 128,
crop + flip, AdamW wd 0.05, batch 128) for 300 steps, one seed, pre / post / sandwich / deepnorm,
each over peak learning rate {3e-4, 1e-3, 3e-3, 1e-2} x warmup {0, 5%} of the steps (32 runs). A
run diverges when its loss becomes non-finite or exceeds 3 x its initial value ln(100): it stops,
counts as a result, and the report gives each placement's largest stable learning rate and the
heatmap of final val top-1 (vit_jax/report_dynamics.py). Before the runs, the sweep measures
each placement's gradient norm per layer at initialization at depths 4, 8, 16, 32
(vit_jax/init_analysis.py); every run logs diagnostics.jsonl every 50 steps.

  python -m vit_jax.sweep --config=configs/stability_cpu.py --workdir=runs/stability_cpu \
      --config.data.archive=../shared/data/cifar-100-binary-train.tar.gz

Expected / runtime: not measured yet (about a minute per run on 2 CPU cores).
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
  config.total_steps = 300
  config.learning_rate = 1e-3        # set per run by the sweep's extra axis
  config.weight_decay = 0.05
  config.warmup_steps = 0            # warmup_fraction is swept
  config.divergence_factor = 3.0
  config.diagnostics_every = 50
  config.log_every = 25
  config.eval_every = 150
  config.checkpoint_every = 300

  config.sweep = common.get_sweep_config()
  config.sweep.norm_placements = ('pre', 'post', 'sandwich', 'deepnorm')
  config.sweep.seeds = (0,)
  config.sweep.extra_axes = 'learning_rate=3e-4,1e-3,3e-3,1e-2;warmup_fraction=0,0.05'
  config.sweep.inspect = 'none'
  config.sweep.init_depths = '4,8,16,32'
  return config
