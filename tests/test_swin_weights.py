"""Tests for vit_jax/swin_weights.py against timm's Swin-T: random timm weights saved as a
state_dict (.safetensors and .pth, timm's and the official key layout) give timm's logits here;
a new window size resizes the bias tables; a new class count takes a fresh head; weights that do
not fit are listed."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from vit_jax import models
from vit_jax import swin_weights
from vit_jax import variants
from vit_jax.npz_layout import PretrainedError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import peers  # pylint: disable=g-import-not-at-top,wrong-import-position  (timm's torchvision stub)


@pytest.fixture(scope='module')
def timm_swin():
  """(timm's swin_tiny_patch4_window7_224 with random non-trivial weights, its state_dict as
  numpy, two images, timm's logits)."""
  peers._install_torchvision_stub()  # pylint: disable=protected-access
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = timm.create_model('swin_tiny_patch4_window7_224', pretrained=False).eval()
  with torch.no_grad():
    for p in model.parameters():  # norms and biases away from 1 / 0, tables away from ~0
      p.add_(0.02 * torch.randn_like(p))
  images = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
  with torch.no_grad():
    logits = model(torch.from_numpy(images)).numpy()
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  return model, state, images.transpose(0, 2, 3, 1), logits


def _swin_t(num_classes=1000, **overrides):
  config = common.get_config().model
  config.update(variants.parse_variant('swin_t'))  # the variant's fields, then the overrides
  config.update(layer_norm_epsilon=1e-5, **overrides)
  model = models.create_model(config, num_classes)
  size = 256 if overrides.get('window_size') == 8 else 224
  init = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, size, size, 3)))['params']
  return model, init


def _relative_error(got, want):
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def test_timm_state_dict_gives_timm_logits(timm_swin, tmp_path):
  torch_model, state, images, want = timm_swin
  model, init = _swin_t()
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  safetensors = str(tmp_path / 'swin_t.safetensors')
  save_file(state, safetensors)
  pth = str(tmp_path / 'swin_t.pth')
  torch.save(torch_model.state_dict(), pth)
  for path in (safetensors, pth):
    params = swin_weights.load_swin(path, model, init, init_head='load')
    got = np.asarray(model.apply({'params': params}, jnp.asarray(images)))
    assert _relative_error(got, want) <= 1e-4, path


def _official_layout(state):
  """timm's keys as the official repository saves them: merging at the end of the previous
  stage, `head`, the buffers, all under 'model'."""
  out = {}
  for key, value in state.items():
    if key.startswith('layers.') and '.downsample.' in key:
      stage = int(key.split('.')[1])
      key = key.replace(f'layers.{stage}.', f'layers.{stage - 1}.', 1)
    out[key.replace('head.fc.', 'head.')] = value
  out['layers.0.blocks.0.attn.relative_position_index'] = np.zeros((49, 49), np.float32)
  out['layers.0.blocks.1.attn_mask'] = np.zeros((64, 49, 49), np.float32)
  return out


def test_official_layout_loads_the_same(timm_swin, tmp_path):
  _, state, images, want = timm_swin
  model, init = _swin_t()
  import torch  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'swin_tiny_patch4_window7_224.pth')
  torch.save({'model': {k: torch.from_numpy(v) for k, v in _official_layout(state).items()}}, path)
  params = swin_weights.load_swin(path, model, init, init_head='load')
  got = np.asarray(model.apply({'params': params}, jnp.asarray(images)))
  assert _relative_error(got, want) <= 1e-4


def test_fresh_head_for_a_new_number_of_classes(timm_swin):
  _, state, _, _ = timm_swin
  model, init = _swin_t(num_classes=100)
  params = swin_weights.load_swin(state, model, init)  # init_head='fresh'
  np.testing.assert_array_equal(params['head']['kernel'], init['head']['kernel'])
  np.testing.assert_allclose(params['layers_2_blocks_5']['mlp']['fc1']['kernel'],
                             state['layers.2.blocks.5.mlp.fc1.weight'].T)


def test_another_window_size_resizes_the_bias_tables(timm_swin):
  _, state, _, _ = timm_swin
  model, init = _swin_t(window_size=8)  # 256px: maps 64/32/16/8 tile by 8
  params = swin_weights.load_swin(state, model, init)
  table = params['layers_0_blocks_0']['attn']['relative_position_bias_table']
  assert table.shape == (15 * 15, 3)
  # The zero offset sits in the middle of both grids and keeps its value per head.
  np.testing.assert_allclose(table[7 * 15 + 7],
                             state['layers.0.blocks.0.attn.relative_position_bias_table'][6 * 13 + 6],
                             rtol=1e-5)
  logits = model.apply({'params': params}, jnp.zeros((1, 256, 256, 3)))
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_resize_keeps_a_constant_table_constant():
  table = np.full((13 * 13, 2), 0.5, np.float32)
  np.testing.assert_allclose(swin_weights.resize_bias_table(table, 4), 0.5, rtol=1e-6)
  np.testing.assert_array_equal(swin_weights.resize_bias_table(table, 7), table)


def test_weights_that_do_not_fit_are_listed(timm_swin):
  _, state, _, _ = timm_swin
  model, init = _swin_t()
  extra = {**state, 'layers.2.blocks.6.mlp.fc1.weight': np.zeros((1536, 384), np.float32)}
  with pytest.raises(PretrainedError, match=r'layers\.2\.blocks\.6\.mlp\.fc1\.weight'):
    swin_weights.load_swin(extra, model, init)
  wrong = {**state, 'layers.0.blocks.0.mlp.fc1.weight': np.zeros((10, 96), np.float32)}
  with pytest.raises(PretrainedError, match=r'layers_0_blocks_0/mlp/fc1/kernel: file \(96, 10\)'):
    swin_weights.load_swin(wrong, model, init)
  # Sandwich has two attention norms: the file's one norm1 has no single place.
  sandwich, sandwich_init = _swin_t(norm_placement='sandwich')
  with pytest.raises(PretrainedError, match='norm1'):
    swin_weights.load_swin(state, sandwich, sandwich_init)


def test_respost_takes_the_norms_after_the_sublayers(timm_swin):
  """Swin V2's placement: the file's norm1 / norm2 become attn:out / mlp:out."""
  _, state, _, _ = timm_swin
  model, init = _swin_t(norm_placement='respost')
  params = swin_weights.load_swin(state, model, init)
  np.testing.assert_allclose(params['layers_1_blocks_1']['LayerNorm_attn_out']['scale'],
                             state['layers.1.blocks.1.norm1.weight'])


def test_run_py_fine_tunes_from_a_state_dict(timm_swin, tmp_path):
  """init_from with a Swin: the trainer loads the file (here a 2-stage CIFAR-sized Swin)."""
  import cifar_fixtures  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  _, state, _, _ = timm_swin
  # Stages 0-1 of Swin-T, window 4 (the 7x7 tables get resized), on 32px images, patch 2.
  small = {k: v for k, v in state.items()
           if not k.startswith(('layers.2', 'layers.3', 'norm.', 'head'))}
  small['norm.weight'], small['norm.bias'] = state['layers.2.downsample.norm.weight'][:192], \
      state['layers.2.downsample.norm.bias'][:192]
  small['patch_embed.proj.weight'] = state['patch_embed.proj.weight'][:, :, :2, :2]
  path = str(tmp_path / 'small.safetensors')
  save_file(small, path)
  archive = cifar_fixtures.write_cifar100_binary(
      str(tmp_path), {'train': cifar_fixtures.make_examples(32, 100)})
  proc = subprocess.run(
      [sys.executable, 'run.py', '--config=configs/cpu_quick.py', f'--workdir={tmp_path / "run"}',
       f'--config.data.archive={archive}', '--config.data.strict_counts=False',
       '--config.model.name=swin', '--config.model.patch_size=2', '--config.model.hidden_size=96',
       '--config.model.stage_depths=2,2', '--config.model.stage_heads=3,6',
       '--config.model.window_size=4', '--config.model.layer_norm_epsilon=1e-5',
       f'--config.init_from={path}', '--config.total_steps=1', '--config.batch_size=8',
       '--config.eval_batch_size=8', '--config.eval_every=1', '--config.checkpoint_every=1'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # 4 blocks x 13 arrays, patch embedding and its norm 4, stage 1's merging 3, final norm 2;
  # the 2 head arrays stay fresh.
  assert "loaded 61 of the model's 63 parameter arrays (head: fresh)" in proc.stderr, \
      proc.stderr[-3000:]


def test_a_scanned_model_loads_the_same_weights(timm_swin):
  _, state, images, want = timm_swin
  model, init = _swin_t(scan=True)
  assert 'layers_2_blocks' in init and 'layers_2_blocks_0' not in init  # scanned layout
  params = swin_weights.load_swin(state, model, init, init_head='load')
  got = np.asarray(model.apply({'params': params}, jnp.asarray(images)))
  assert _relative_error(got, want) <= 1e-4
