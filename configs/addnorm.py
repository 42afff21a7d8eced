"""The main job: seed 000's "add & norm" proposal.

Same model and recipe as `configs/baseline.py`, with `norm_placement='addnorm'`: attention
as pre-LN, and the MLP sublayer gets an extra LayerNorm on its output before the residual add,
x = x + LN(MLP(LN(x))). (The seed notebook's code actually had no LN *before* the MLP, only after
it: that variant is `--config.model.norm_placement=attn_in_mlp_out`.)

Command:
  python run.py --config=configs/addnorm.py --workdir=runs/addnorm
  python run.py --config=configs/addnorm.py --workdir=runs/addnorm --mode=eval

Expected: not measured yet (no full run in this project). Runtime: as `configs/baseline.py`
(~3500 steps; the same model and step cost).
"""

from configs import common


def get_config():
  return common.get_seed000_config(norm_placement='addnorm')
