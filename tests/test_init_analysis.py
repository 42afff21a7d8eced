"""Tests for vit_jax/init_analysis.py: the per-layer gradient norms are those of jax.grad on the
unscanned model, and the command line writes its table, figure and numbers from an archive."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cifar_fixtures
from configs import common
from vit_jax import attention
from vit_jax import init_analysis
from vit_jax import models
from vit_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  config = common.get_config()
  config.model.update(patch_size=4, hidden_size=16, num_heads=2, mlp_dim=32, dropout_rate=0.3)
  return config


# A block's attention sublayer: its norms, the attention (its q/k norms inside) and LayerScale.
ATTENTION_SUBLAYER = ('LayerNorm_0', 'LayerNorm_attn_out', 'LayerNorm_attn_res',
                      attention.NAME, 'layerscale_attn')


def _batches():
  rng = np.random.default_rng(0)
  return [{'image': rng.normal(size=(6, 8, 8, 3)).astype(np.float32),
           'label': rng.integers(0, 10, size=6).astype(np.int32)} for _ in range(2)]


# Every kind of block and stem/head the chain rule must get right: depth-varying blocks (Mix-LN),
# depth-dependent scalars (DeepNorm), a pair of streams (ResiDual), per-layer inputs (LN-scaling),
# the block input reused (B2T), norms on the patches, the pooled features and inside attention.
@pytest.mark.parametrize('placement,depth', [
    ('pre,mixln=0.5', 4), ('post', 3), ('deepnorm', 3), ('resi_dual', 3), ('ln_scaling', 3),
    ('b2t', 2), ('dual_patchnorm', 2), ('fc_norm', 2), ('normformer', 2), ('sandwich', 1)])
def test_layer_norms_are_jax_grad_of_the_whole_model(placement, depth):
  batches = _batches()
  config = _config()
  got = init_analysis.layer_grad_norms(config, placement, depth, batches, 10)

  # jax.grad of the whole (unscanned) model at the same parameters, averaged over the batches.
  plain = models.create_model(dict(config.model, norm_placement=placement, num_layers=depth,
                                   dropout_rate=0.0), 10)
  loss = lambda p, b: jnp.mean(train.cross_entropy(plain.apply({'params': p}, b['image']),
                                                   b['label']))
  grads = jax.tree.map(lambda *g: sum(g) / 2,
                       *[jax.grad(loss)(got['params'], b) for b in batches])
  assert sorted(k for k in grads['Transformer'] if k.startswith('encoderblock_')) == [
      f'encoderblock_{i}' for i in range(depth)]
  norm = lambda tree: np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(tree)))
  for i in range(depth):
    block = grads['Transformer'][f'encoderblock_{i}']
    np.testing.assert_allclose(got['total'][i], norm(block), rtol=1e-4)
    attn = [v for k, v in block.items() if k in ATTENTION_SUBLAYER]
    np.testing.assert_allclose(got['attn'][i], norm(attn), rtol=1e-4)
  assert min(got['total']) > 0  # the head is not zero: the body has gradients
  # The head is drawn (lecun normal), the rest is the model's own init from config.seed.
  assert np.std(np.asarray(got['params']['head']['kernel'])) > 0


def test_a_schemes_blocks_compile_once_whatever_the_depth():
  config, batches, compiled = _config(), _batches(), {}
  init_analysis._block_backward.clear_cache()  # pylint: disable=protected-access
  before = init_analysis._block_backward._cache_size()  # pylint: disable=protected-access
  for depth in (2, 3, 5):
    init_analysis.layer_grad_norms(config, 'pre', depth, batches, 10, compiled)
  assert init_analysis._block_backward._cache_size() == before + 1  # pylint: disable=protected-access
  assert len(compiled) == 1  # one embedding + head for the three depths
  # DeepNorm's blocks depend on the depth (alpha, beta): one each.
  for depth in (2, 3):
    init_analysis.layer_grad_norms(config, 'deepnorm', depth, batches, 10, compiled)
  assert init_analysis._block_backward._cache_size() == before + 3  # pylint: disable=protected-access


def test_command_line_writes_table_figure_and_numbers(tmp_path):
  archive = cifar_fixtures.write_cifar100_binary(
      str(tmp_path), {'train': cifar_fixtures.make_examples(200, 100)})
  out = tmp_path / 'init'
  proc = subprocess.run(
      [sys.executable, '-m', 'vit_jax.init_analysis', '--config=configs/cpu_quick.py',
       f'--out={out}', '--placements=pre;post,mixln=0.5', '--depths=1,3', '--batches=1',
       '--batch_size=8', f'--config.data.archive={archive}', '--config.data.strict_counts=False',
       '--config.model.hidden_size=16', '--config.model.mlp_dim=32'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '| pre | 3 |' in proc.stdout and '| post,mixln=0.5 | 1 |' in proc.stdout
  result = json.loads((out / 'init_grad_norms.json').read_text())
  assert [len(result['results']['pre'][d]['total']) for d in ('1', '3')] == [1, 3]
  assert (out / 'init_grad_norms.png').stat().st_size > 10_000
  again = subprocess.run([sys.executable, '-m', 'vit_jax.init_analysis',
                          f'--print_table={out / "init_grad_norms.json"}'],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert again.returncode == 0 and again.stdout.strip() in proc.stdout  # the same table
  bad = subprocess.run(
      [sys.executable, '-m', 'vit_jax.init_analysis', '--config=configs/cpu_quick.py',
       f'--out={out}', '--placements=prenorm', f'--config.data.archive={archive}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and "unknown preset 'prenorm'" in bad.stderr
