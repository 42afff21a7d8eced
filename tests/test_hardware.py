"""Tests for vit_jax/hardware.py: what each 'auto' hardware field becomes per backend."""

import pytest

from configs import common
from vit_jax import hardware


def _model(**fields):
  model = common.get_config().model.to_dict()
  model.update(fields)
  return model


def test_auto_kernels_and_malloc():
  assert hardware.kernels('auto', 'cpu') == 'cpu'
  assert hardware.kernels('auto', 'gpu') == 'reference'
  assert hardware.kernels('reference', 'cpu') == 'reference'  # an explicit value wins
  assert hardware.host_malloc('auto') == 'default'
  assert hardware.host_malloc('one_heap') == 'one_heap'


@pytest.mark.parametrize('placement,backend,head_dim,want', [
    ('pre', 'cpu', 192, 'folded'),        # head_dim >= hidden: fewer FLOPs folded
    ('pre', 'cpu', 64, 'xla'),            # narrower heads: folding costs FLOPs
    ('pre', 'gpu', 192, 'xla'),           # a CPU kernel only
    ('qknorm', 'cpu', 192, 'xla'),        # a norm on q and k: nothing to fold
    ('subln', 'cpu', 192, 'xla'),         # a norm before the output projection
    ('normformer', 'cpu', 192, 'xla'),    # per-head scales
    ('deepnorm', 'cpu', 192, 'folded'),   # norms outside the attention fold as usual
])
def test_auto_attention(placement, backend, head_dim, want):
  model = _model(norm_placement=placement, head_dim=head_dim, hidden_size=192, num_heads=3)
  assert hardware.model_settings(model, backend)['attention_impl'] == want


def test_resolve_keeps_explicit_values_and_fills_auto():
  config = common.get_config()
  config.model.kernels = 'reference'
  resolved = hardware.resolve(config, 'cpu')
  assert resolved.model.kernels == 'reference' and resolved.concurrent_microbatches == 1
  assert resolved.model.attention_impl in ('xla', 'folded') and resolved.host_malloc == 'default'
  assert config.model.attention_impl == 'auto'  # the given config is not changed
