"""Tests for vit_jax/init_analysis.py: the per-layer gradient norms are those of jax.grad on the
unscanned model, and the command line writes its table, figure and numbers from an archive."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import cifar_fixtures
from configs import common
from vit_jax import init_analysis
from vit_jax import models
from vit_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  config = common.get_config()
  config.model.update(patch_size=4, hidden_size=16, num_heads=2, mlp_dim=32, dropout_rate=0.3)
  return config


def test_layer_norms_are_jax_grad_of_the_unscanned_model():
  rng = np.random.default_rng(0)
  batches = [{'image': rng.normal(size=(6, 8, 8, 3)).astype(np.float32),
              'label': rng.integers(0, 10, size=6).astype(np.int32)}
             for _ in range(2)]
  config = _config()
  got = init_analysis.layer_grad_norms(config, 'pre,mixln=0.5', 4, batches, 10)

  # The same initial params, unscanned (two scanned segments: post-LN layers 0-1, pre-LN 2-3).
  fields = dict(config.model, norm_placement='pre,mixln=0.5', num_layers=4, scan=True)
  scanned = models.create_model(fields, 10)
  params = jax.jit(scanned.init)(jax.random.key(config.seed), batches[0]['image'])['params']
  params['head']['kernel'] = jax.nn.initializers.lecun_normal()(
      jax.random.key(config.seed + 1), params['head']['kernel'].shape)
  params = models.unstack_block_params(params, [(0, 2), (2, 4)])
  plain = models.create_model({**fields, 'scan': False}, 10)
  loss = lambda p, b: jnp.mean(train.cross_entropy(plain.apply({'params': p}, b['image']),
                                                   b['label']))
  grads = jax.tree.map(lambda *g: sum(g) / 2, *[jax.grad(loss)(params, b) for b in batches])
  for i in range(4):
    block = grads['Transformer'][f'encoderblock_{i}']
    total = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(block)))
    np.testing.assert_allclose(got['total'][i], total, rtol=1e-4)
    attn = [block[k] for k in block if k in ('LayerNorm_0', 'LayerNorm_attn_res',
                                              'MultiHeadDotProductAttention_1')]
    np.testing.assert_allclose(got['attn'][i], np.sqrt(sum(np.sum(np.square(x))
                                                           for x in jax.tree.leaves(attn))),
                               rtol=1e-4)
  assert min(got['total']) > 0  # the head is not zero: the body has gradients


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
