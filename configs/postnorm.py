"""The original Transformer / BERT placement: x = LN(x + f(x)), no final LayerNorm.

Otherwise identical to `configs/baseline.py`. Post-LN is known to need warmup to train stably;
the baseline's 10% warmup is kept.

Command:
  python run.py --config=configs/postnorm.py --workdir=runs/postnorm

Runtime: as `configs/baseline.py`.
"""

from configs import common


def get_config():
  return common.get_seed000_config(norm_placement='post')
