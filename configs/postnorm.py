"""The original Transformer / BERT placement: x = LN(x + f(x)), no final LayerNorm.

Otherwise identical to `configs/baseline.py`. Post-LN is known to need warmup to train stably;
the baseline's 10% warmup is kept. No final LayerNorm because the last block already ends with
one (the default of `model.final_norm=None` for this placement).

Command:
  python run.py --config=configs/postnorm.py --workdir=runs/postnorm

Expected: not measured yet (no full run in this project). Runtime: as `configs/baseline.py`.
"""

from configs import common


def get_config():
  return common.get_seed000_config(norm_placement='post')
