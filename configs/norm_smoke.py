"""Every normalization preset once, at the cpu_quick budget: a smoke table, not the study.

configs/cpu_quick.py's model and recipe (32px CIFAR-100, patch 8, 4 pre-LN-sized layers of width
128, 4 heads, MLP 256, crop + flip, AdamW lr 1e-3 wd 0.05, 10% warmup then cosine over 1,200
steps of batch 128, ~3.4 epochs), one seed, every preset of vit_jax/norms.py. It shows that each
scheme trains on the real data and roughly where it lands after a short run; one seed of a short
run separates nothing below a point or two (configs/study.py, with seeds, is the experiment).

  python -m vit_jax.sweep --config=configs/norm_smoke.py --workdir=runs/norm_smoke \
      --config.data.archive=../shared/data/cifar-100-binary-train.tar.gz

Its small files then go to docs/results/norm_smoke/ and docs/norms.md's table is printed from
them (docs/norms.md, "The smoke table", gives both commands).
Expected / runtime: the table in docs/norms.md; ~4 minutes a run on 2 CPU cores.
"""

from configs import common

# vit_jax/norms.py's NORM_PRESETS, in its order (tests/test_sweep.py checks they agree).
PRESETS = ('pre', 'post', 'respost', 'addnorm', 'sandwich', 'attn_in_mlp_out', 'none',
           'deepnorm', 'mixln', 'ln_scaling', 'layerscale', 'qknorm', 'normformer', 'subln',
           'dual_patchnorm', 'pre_norm', 'fc_norm', 'b2t', 'resi_dual', 'rmsnorm', 'dyt')


def get_config():
  config = common.get_config()
  config.data.image_size = 32
  config.data.crop_padding = 4
  config.data.flip = True

  model = config.model
  model.norm_placement = 'pre'       # set per run by the sweep
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
  config.warmup_fraction = 0.1
  config.log_every = 50
  config.eval_every = 400
  config.checkpoint_every = 1200     # one checkpoint, at the end

  config.sweep = common.get_sweep_config()
  config.sweep.norm_placements = PRESETS
  config.sweep.seeds = (0,)
  config.sweep.inspect = 'none'      # no figures: the table needs only metrics.jsonl
  return config
