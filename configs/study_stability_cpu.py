"""The normalization study's stability grid on 2 CPU cores: 7 schemes x 4 learning rates x 2 warmups.

configs/study_norms_cpu.py's model and recipe (common.get_norm_study_config) at a short budget:
500 steps of batch 128 (1.4 epochs), one seed, peak learning rate {3e-4, 1e-3, 3e-3, 1e-2} x
warmup {0, 5%} of the steps, for pre, post, sandwich (Peri-LN), deepnorm, mixln, respost (Swin V2)
and dyt (no norm statistics at all): 56 runs. A run *diverges* when its loss becomes non-finite
or exceeds 3 x its initial value ln(100) (it stops; a result, not a crash); it *stalls* when it
ends with a val loss less than 0.1 nats (report_dynamics.STALL_NATS) below where it started
(ln 100, or its first logged training loss if lower). The report gives each
scheme's largest stable learning rate per warmup and the heatmap of final val top-1.

  python -m vit_jax.sweep --config=configs/study_stability_cpu.py \
      --workdir=runs/study_stability_cpu \
      --config.data.archive=../shared/data/cifar-100-binary-train.tar.gz

Expected / runtime: ~2 minutes a run on an idle 2-core VM (75 s of steps, start-up, 2
validations), ~1.8 hours for the grid; results and measured time in docs/results/README.md.
"""

from configs import common

SCHEMES = ('pre', 'post', 'sandwich', 'deepnorm', 'mixln', 'respost', 'dyt')


def get_config():
  config = common.get_norm_study_config(total_steps=500)
  config.learning_rate = 1e-3        # set per run by the sweep's extra axis
  config.divergence_factor = 3.0
  config.eval_every = 250
  config.sweep.norm_placements = SCHEMES
  config.sweep.seeds = (0,)
  config.sweep.extra_axes = 'learning_rate=3e-4,1e-3,3e-3,1e-2;warmup_fraction=0,0.05'
  config.sweep.inspect = 'none'
  return config
