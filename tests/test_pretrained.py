"""Tests for vit_jax/pretrained.py and the hybrid ResNet stem in vit_jax/models.py.

The official files cannot be downloaded here: `npz_fixtures` writes random-valued files with the
names and shapes of the released ones, from a table written out by hand (not from our model).
Most tests need no compile (params from `jax.eval_shape` + numpy); those that run a model use
small ones. The B/16 fine-tuning proof is benchmarks/finetune_b16_smoke.py (too slow here).
"""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

import npz_fixtures
from configs import common
from configs import finetune_cifar100
from vit_jax import checkpoint
from vit_jax import models
from vit_jax import norms
from vit_jax import npz_layout
from vit_jax import optim
from vit_jax import pretrained
from vit_jax import resnet
from vit_jax import train
from vit_jax import validation
from vit_jax import variants

POSEMB = 'Transformer/posembed_input/pos_embedding'
# A small model in the official layout: Ti width, 2 layers (fast to write and to run).
SMALL = (192, 2, 3, 768)


def abstract_params(model, image_size):
  x = jnp.zeros((1, image_size, image_size, 3))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x))['params']


def random_params(model, image_size, seed=0):
  """Noise-filled params of `model` without compiling its init."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: (rng.standard_normal(s.shape) * 0.05).astype(s.dtype),
      abstract_params(model, image_size))


def flat_shapes(tree):
  return {k: tuple(v.shape) for k, v in npz_layout.flatten(
      jax.tree.map(lambda s: np.zeros(s.shape, np.int8), tree)).items()}


@pytest.fixture(scope='module')
def ti16_file(tmp_path_factory):
  """An ImageNet-21k Ti/16 file (224px, pre-logits 192, 21843 classes), random values."""
  path = str(tmp_path_factory.mktemp('npz') / 'ViT-Ti_16.npz')
  arrays = npz_fixtures.write_official_npz(
      path, npz_fixtures.official_shapes('Ti', 16, representation_size=192))
  return path, arrays


@pytest.fixture(scope='module')
def small_file(tmp_path_factory):
  """The same layout with 2 layers (faster models for the error cases)."""
  path = str(tmp_path_factory.mktemp('npz') / 'small.npz')
  arrays = npz_fixtures.write_official_npz(
      path, npz_fixtures.official_shapes(SMALL, 16, representation_size=192))
  return path, arrays


# ----------------------------------------------------------------------------- layout & zoo


@pytest.mark.parametrize('variant, official', [
    ('Ti/16', dict(size='Ti', patch=16)),
    ('B/16', dict(size='B', patch=16, representation_size=768)),
    ('R50+B/16', dict(size='B', patch=1, resnet_layers=(3, 4, 9))),
])
def test_model_names_and_shapes_are_the_official_layout(variant, official):
  model = models.create_model(
      {'variant': variant, 'representation_size': official.get('representation_size')}, 21843)
  ours = flat_shapes(abstract_params(model, 224))
  theirs = {k: v[-1:] if '/gn' in k or k.startswith('gn_') else v  # GN stored [1,1,1,C]
            for k, v in npz_fixtures.official_shapes(**official).items()}
  assert ours == theirs


def test_model_zoo_variants():
  expected = {'Ti/16': (192, 12, 3, 768, 16), 'S/16': (384, 12, 6, 1536, 16),
              'S/32': (384, 12, 6, 1536, 32), 'B/16': (768, 12, 12, 3072, 16),
              'B/32': (768, 12, 12, 3072, 32), 'L/16': (1024, 24, 16, 4096, 16),
              'L/32': (1024, 24, 16, 4096, 32), 'H/14': (1280, 32, 16, 5120, 14)}
  for variant, sizes in expected.items():
    m = models.create_model({'variant': variant, 'resnet_layers': (3,)}, 10)
    assert (m.hidden_size, m.num_layers, m.num_heads, m.mlp_dim, m.patch_size) == sizes, variant
    assert m.resnet_layers == ()  # '<size>/<patch>' is a pure ViT
  for spelled in ('ViT-B_16', 'B_16'):
    assert variants.parse_variant(spelled) == variants.parse_variant('B/16')
  hybrid = models.create_model({'variant': 'R50+B/16'}, 10)
  assert (hybrid.resnet_layers, hybrid.patch_size, hybrid.hidden_size) == ((3, 4, 9), 1, 768)
  assert variants.parse_variant('R50+ViT-L_32')['resnet_layers'] == (3, 4, 6, 3)
  assert variants.parse_variant('R26_S_32')['resnet_layers'] == (2, 2, 2, 2)
  with pytest.raises(ValueError, match='R50\\+<size>/16'):
    variants.parse_variant('R50+B/8')
  with pytest.raises(ValueError, match="'Q/16'"):
    variants.parse_variant('Q/16')


# ----------------------------------------------------------------------------- loading


def test_load_i21k_file_into_cifar_model(ti16_file):
  """224px i21k file -> 32px CIFAR-100 model: posemb 14x14 -> 2x2, pre_logits dropped, new head."""
  path, arrays = ti16_file
  model = models.create_model({'variant': 'Ti/16'}, 100)
  init = random_params(model, 32)
  params = pretrained.load_pretrained(path, init)
  flat, flat_init = npz_layout.flatten(params), npz_layout.flatten(init)
  assert flat.keys() == flat_init.keys()
  for name, value in flat.items():
    assert value.shape == flat_init[name].shape and value.dtype == flat_init[name].dtype, name
    if name.startswith('head/'):
      np.testing.assert_array_equal(value, flat_init[name])  # fresh head
    elif name != POSEMB:
      np.testing.assert_array_equal(value, arrays[name])
  pe, old = flat[POSEMB], arrays[POSEMB]
  np.testing.assert_array_equal(pe[:, 0], old[:, 0])  # class-token row kept
  grid = old[0, 1:].reshape(14, 14, -1)
  np.testing.assert_allclose(pe[0, 1:].reshape(2, 2, -1),
                             grid[[0, 0, -1, -1], [0, -1, 0, -1]].reshape(2, 2, -1), atol=1e-6)


def test_loaded_file_computes_the_same_with_either_kernels(ti16_file):
  """The official names are the model's under both `model.kernels` settings: the file loads into
  each, and the plain-Flax and the CPU-kernel models then compute the same logits."""
  path, _ = ti16_file
  images = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype(np.float32)
  logits = {}
  for k in ('reference', 'cpu'):
    model = models.create_model({'variant': 'Ti/16', 'kernels': k}, 100)
    params = pretrained.load_pretrained(path, random_params(model, 32))
    logits[k] = jax.jit(model.apply)({'params': params}, images)
  np.testing.assert_allclose(logits['cpu'], logits['reference'], atol=1e-4, rtol=1e-4)
  assert np.abs(logits['reference']).max() > 1e-3  # a non-trivial head


def test_load_keeps_pre_logits_and_head_when_asked(tmp_path, ti16_file):
  """representation_size=192 keeps the file's pre_logits; init_head='load' its head; prefixed
  ('opt/target/') names and a 384px model (24x24 grid) work."""
  _, arrays = ti16_file
  path = str(tmp_path / 'prefixed.npz')
  np.savez(path, **{'opt/target/' + k: v for k, v in arrays.items()})
  model = models.create_model({'variant': 'Ti/16', 'representation_size': 192}, 21843)
  init = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_params(model, 384))
  flat = npz_layout.flatten(pretrained.load_pretrained(path, init, init_head='load'))
  for name in ('pre_logits/kernel', 'head/kernel', 'head/bias', 'cls'):
    np.testing.assert_array_equal(flat[name], arrays[name])
  assert flat[POSEMB].shape == (1, 1 + 24 * 24, 192)


def test_posemb_resampling_preserves_a_smooth_embedding():
  """A linear field over the grid is reproduced exactly (zoom maps corners to corners); a smooth
  one to interpolation accuracy; the class-token row is untouched."""
  g, d = 14, 8
  y, x = np.mgrid[:g, :g] / (g - 1)  # [0, 1] over the grid
  w = np.random.default_rng(0).normal(size=(3, d))
  linear = w[0] + x[..., None] * w[1] + y[..., None] * w[2]  # [g, g, d]
  cls = np.random.default_rng(1).normal(size=(1, 1, d))
  pe = np.concatenate([cls, linear.reshape(1, g * g, d)], axis=1).astype(np.float32)
  for new in (2, 7, 24):
    out = pretrained.resample_posemb(pe, (new, new), num_prefix=1)
    assert out.shape == (1, 1 + new * new, d)
    np.testing.assert_array_equal(out[:, :1], pe[:, :1])
    ny, nx = np.mgrid[:new, :new] / (new - 1)
    want = w[0] + nx[..., None] * w[1] + ny[..., None] * w[2]
    np.testing.assert_allclose(out[0, 1:].reshape(new, new, d), want, atol=1e-5)

  smooth = np.sin(2 * x + 1)[..., None] * np.cos(3 * y)[..., None] * np.ones(d)
  pe = smooth.reshape(1, g * g, d).astype(np.float32)
  out = pretrained.resample_posemb(pe, (24, 24), num_prefix=0)  # 224/16 -> 384/16
  ny, nx = np.mgrid[:24, :24] / 23
  want = np.sin(2 * nx + 1)[..., None] * np.cos(3 * ny)[..., None] * np.ones(d)
  np.testing.assert_allclose(out[0].reshape(24, 24, d), want, atol=0.02)
  # 'bilinear' (jax.image.resize, pixel centres): same field, smooth in the interior.
  out = pretrained.resample_posemb(pe, (24, 24), num_prefix=0, method='bilinear')
  c = (np.arange(24) + 0.5) * g / 24 - 0.5  # source coordinate of each new pixel centre
  ny, nx = np.meshgrid(np.clip(c, 0, g - 1), np.clip(c, 0, g - 1), indexing='ij')
  ref = scipy.ndimage.map_coordinates(smooth[..., 0], [ny, nx], order=1)
  np.testing.assert_allclose(out[0].reshape(24, 24, d)[..., 0], ref, atol=1e-5)


def test_mismatches_raise_an_error_listing_the_names(ti16_file, small_file, caplog):
  def init(**model_config):
    model = models.create_model(model_config, 100)
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_params(model, 32))

  with pytest.raises(npz_layout.PretrainedError) as e:  # wrong size
    pretrained.load_pretrained(ti16_file[0], init(variant='S/16'))
  msg = str(e.value)
  assert 'embedding/kernel: file (16, 16, 3, 192) vs model (16, 16, 3, 384)' in msg
  assert 'Transformer/encoderblock_{0..11}/MlpBlock_3/Dense_0/kernel' in msg
  assert '--config.model.variant=Ti/16' in msg

  path, _ = small_file  # Ti width, 2 layers, i21k head
  small = dict(hidden_size=192, num_heads=3, mlp_dim=768, patch_size=16, num_layers=2)
  with pytest.raises(npz_layout.PretrainedError,
                     match=r'in the file, not in the model \(16\):\n\s+Transformer/encoderblock_'
                           r'1/LayerNorm_0/bias'):
    pretrained.load_pretrained(path, init(**{**small, 'num_layers': 1}))
  with pytest.raises(npz_layout.PretrainedError, match=r'head/kernel: file \(192, 21843\) vs '
                                                       r'model \(192, 100\)'):
    pretrained.load_pretrained(path, init(**small, representation_size=192), init_head='load')
  with pytest.raises(npz_layout.PretrainedError, match='no parameter of the model is in the file'):
    pretrained.load_pretrained({'foo/kernel': np.zeros(3)}, init(**small))

  # Extra model params (addnorm's MLP-output LN, the seed head MLP) keep their init, at INFO.
  caplog.set_level(logging.INFO, logger='vit_jax.pretrained')
  extra = init(**small, norm_placement='addnorm', head_hidden_sizes=(32,))
  flat = npz_layout.flatten(pretrained.load_pretrained(path, extra))
  assert 'Transformer/encoderblock_{0..1}/LayerNorm_mlp_out/scale' in caplog.text
  assert 'head_mlp_0/kernel' in caplog.text
  np.testing.assert_array_equal(flat['head_mlp_0/kernel'], 0)
  # A post-LN model: the file's pre-LN norms are reported (WARNING), not an error.
  pretrained.load_pretrained(path, init(**small, norm_placement='post'))
  assert ('10 norm parameters of the file are not loaded' in caplog.text and
          'Transformer/encoderblock_{0..1}/LayerNorm_0/bias' in caplog.text)


@pytest.mark.parametrize('placement,scan', [(p, False) for p in norms.NORM_PRESETS] +
                         [('pre,mixln=0.5', True), ('resi_dual', True)])
def test_pre_ln_file_loads_into_every_scheme(small_file, caplog, placement, scan):
  """An official (pre-LN) file fills every parameter the scheme shares with it by name and
  shape; the scheme's own (other norm sites, DyT's alpha, LayerScale, ...) keep their fresh
  init and are logged; the pre-LN norms a scheme lacks are reported, not loaded."""
  path, arrays = small_file
  config = dict(hidden_size=192, num_heads=3, mlp_dim=768, patch_size=16, num_layers=2,
                representation_size=192, norm_placement=placement, scan=scan)
  init = jax.tree.map(lambda s: np.full(s.shape, 7, s.dtype),
                      abstract_params(models.create_model(config, 10), 224))
  caplog.set_level(logging.INFO, logger='vit_jax.pretrained')
  flat = npz_layout.unstack_scanned(npz_layout.flatten(pretrained.load_pretrained(path, init)))[0]
  source = npz_layout.canonicalize(arrays)
  fresh = sorted(n for n in flat if n not in source and not n.startswith('head/'))
  for name, value in flat.items():
    if name in source and not name.startswith('head/'):
      np.testing.assert_array_equal(value, source[name], err_msg=name)
    else:
      assert (value == 7).all(), name  # its init, untouched
  assert 'embedding/kernel' in flat and 'Transformer/encoderblock_1/MlpBlock_3/Dense_1/kernel' in flat
  if fresh:
    assert f'{len(fresh)} model parameters have no counterpart in the file' in caplog.text
  unused = [n for n in source if n not in flat and not n.startswith(('head/', 'pre_logits/'))]
  assert all('Norm' in n.split('/')[-2] or n.split('/')[-2] == 'encoder_norm' for n in unused)
  if unused:  # the file's norms that this scheme does not have: reported, not an error
    assert f'{len(unused)} norm parameters of the file are not loaded' in caplog.text


# ----------------------------------------------------------------------------- export round trip


@pytest.mark.parametrize('model_config', [
    dict(representation_size=16, norm_placement='addnorm'),
    dict(scan=True),
    dict(resnet_layers=(1,), patch_size=2),
], ids=['vit', 'scan', 'hybrid'])
def test_export_load_round_trip_gives_identical_logits(tmp_path, model_config):
  config = {**dict(patch_size=4, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64),
            **model_config}
  model = models.create_model(config, 7)
  params = random_params(model, 32)
  path = str(tmp_path / 'model.npz')
  names = pretrained.export_npz(params, path)
  with np.load(path) as f:
    assert sorted(f.files) == names
    assert all(f[n].dtype == np.float32 for n in f.files)
    if model.scan:
      assert 'Transformer/encoderblock_1/LayerNorm_0/scale' in f.files  # per-layer, as official
    if model.resnet_layers:
      assert f['gn_root/scale'].shape == (1, 1, 1, 64)
  zeros = jax.tree.map(np.zeros_like, params)
  loaded = pretrained.load_pretrained(path, zeros, init_head='load')
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  apply = jax.jit(model.apply)
  logits = apply({'params': params}, images)
  np.testing.assert_array_equal(apply({'params': loaded}, images), logits)
  if model.resnet_layers:
    # Weight standardization: an affine change of a StdConv kernel changes nothing.
    shifted = jax.tree.map(lambda x: x, params)
    shifted['conv_root']['kernel'] = params['conv_root']['kernel'] * 3.0 + 0.5
    np.testing.assert_allclose(apply({'params': shifted}, images), logits, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize('scan', [False, True], ids=['loop', 'scan'])
def test_export_writes_the_official_names_and_shapes(tmp_path, scan):
  """The raw file, read with np.load (no loader renaming on the way in), has exactly the names
  and shapes of an official pre-LN checkpoint of the same size (npz_fixtures' table)."""
  hidden, layers, heads, mlp = SMALL
  model = models.create_model(dict(patch_size=16, hidden_size=hidden, num_layers=layers,
                                   num_heads=heads, mlp_dim=mlp, representation_size=hidden,
                                   scan=scan), 10)
  path = str(tmp_path / 'export.npz')
  pretrained.export_npz(random_params(model, 64), path)
  official = npz_fixtures.official_shapes(SMALL, 16, image=64, num_classes=10,
                                          representation_size=hidden)
  with np.load(path) as f:
    assert sorted(f.files) == sorted(official)
    assert {n: f[n].shape for n in f.files} == official


def test_export_cli_from_a_run(tmp_path, capsys):
  """`python -m vit_jax.pretrained --workdir=... --out=...` writes the run's params."""
  config = common.get_config()
  config.model.update(patch_size=4, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32,
                      norm_placement='addnorm')
  model = models.create_model(config.model, 10)
  params = random_params(model, 8)
  state = train.TrainState(step=np.int32(3), params=params, opt_state={'count': np.int32(3)},
                           rng=np.zeros(2, np.uint32), ema_params=None)
  workdir = str(tmp_path / 'run')
  manager = checkpoint.create_manager(workdir, async_save=False)
  checkpoint.save(manager, 3, state, {checkpoint.BEST_METRIC: 0.5})
  manager.close()
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort())

  out = str(tmp_path / 'exported.npz')
  assert pretrained.main(['--workdir', workdir, '--out', out, '--checkpoint', 'best']) == 0
  assert 'wrote' in capsys.readouterr().out
  flat = npz_layout.read_npz(out)
  for name, value in npz_layout.flatten(params).items():
    np.testing.assert_array_equal(flat[name], value)
  assert pretrained.compatibility_problems(config.model.to_dict()) == [
      "norm_placement='addnorm' (official ViTs are pre-LN with LayerNorm)"]
  assert pretrained.main(['--workdir', workdir, '--out', out, '--ema']) == 2  # no EMA saved
  assert pretrained.main(['--inspect', out]) == 0
  assert 'Transformer/encoderblock_0/LayerNorm_mlp_out/scale  (16,)' in capsys.readouterr().out


# ----------------------------------------------------------------------------- hybrid


def test_hybrid_feature_map_and_names():
  model = models.create_model(dict(patch_size=2, hidden_size=32, num_layers=1, num_heads=2,
                                   mlp_dim=64, resnet_layers=(1, 1)), 5)
  shapes = flat_shapes(abstract_params(model, 32))
  assert shapes['embedding/kernel'] == (2, 2, 512, 32)  # stage 2: 4 * 128 channels
  assert shapes[POSEMB] == (1, 1 + 2 * 2, 32)  # 32px / stride 8 / patch 2
  assert shapes['block2/unit1/conv_proj/kernel'] == (1, 1, 256, 512)
  assert resnet.resnet_stride((1, 1)) == 8 and resnet.resnet_stride((3, 4, 9)) == 16
  with pytest.raises(ValueError, match='feature map 4x4 .* not divisible by patch_size=3'):
    abstract_params(model.clone(patch_size=3), 32)


# ----------------------------------------------------------------------------- fine-tuning


def test_finetune_config_and_linear_probe():
  config = finetune_cifar100.get_config()
  validation.validate_config(config, num_devices=8)
  assert (config.data.image_size, config.total_steps, config.batch_size) == (384, 10_000, 512)
  assert (config.optimizer, config.learning_rate, config.grad_clip_norm) == ('sgd', 0.03, 1.0)
  model = models.create_model(config.model, 100)
  params = abstract_params(model, 384)
  assert flat_shapes(params)[POSEMB] == (1, 1 + 24 * 24, 768)
  mask = npz_layout.flatten(optim.trainable_mask(params, '^(head|pre_logits)/'))
  assert sorted(k for k, v in mask.items() if v) == ['head/bias', 'head/kernel']


def test_official_file_loads_into_the_train_state_and_fine_tunes(tmp_path):
  """The train.py integration (init_from, sharded params, EMA) on a small R+ViT file in the
  official layout (GroupNorm [1,1,1,C], i21k head, 64px grid), 8 devices, 3 steps of the
  fine-tuning recipe's optimizer: the hybrid stem trains too."""
  path = str(tmp_path / 'small_hybrid.npz')
  npz_fixtures.write_official_npz(path, npz_fixtures.official_shapes(
      (64, 1, 2, 128), 2, image=64, num_classes=1000, resnet_layers=(1,)))
  config = finetune_cifar100.get_config()
  config.model.update(variant='', hidden_size=64, num_layers=1, num_heads=2, mlp_dim=128,
                      patch_size=2, resnet_layers=(1,))
  config.update(batch_size=16, grad_accum_steps=1, total_steps=3, warmup_steps=1,
                ema_decay=0.9, init_from=path)
  image_shape = (32, 32, 3)
  model = models.create_model(config.model, 10)
  mesh = train.create_mesh()
  tx = optim.create_optimizer(config, abstract_params(model, 32), config.total_steps)
  # A freshly initialized TrainState, built without compiling the model's init (slow on CPU).
  init_params = random_params(model, 32)
  state = jax.device_put(
      train.TrainState(step=np.int32(0), params=init_params, opt_state=tx.init(init_params),
                       rng=np.zeros(2, np.uint32), ema_params=init_params),
      train.replicated(mesh))
  state_sharding = jax.tree.map(lambda x: x.sharding, state)

  # --- the lines train.py runs when no checkpoint was restored and config.init_from is set:
  params = pretrained.load_pretrained(config.init_from, jax.device_get(state.params),
                                      init_head=config.init_head,
                                      shardings=state_sharding.params)
  state = state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params))
  # ---
  file = npz_layout.read_npz(path)
  np.testing.assert_array_equal(state.params['gn_root']['scale'], file['gn_root/scale'])
  np.testing.assert_array_equal(state.ema_params['embedding']['kernel'], file['embedding/kernel'])
  assert state.params['conv_root']['kernel'].sharding == state_sharding.params['conv_root']['kernel']
  # 64px file: 64 / 4 (stem) / 2 (patch) = 8x8 grid; the 32px model: 4x4, resampled.
  assert state.params['Transformer']['posembed_input']['pos_embedding'].shape == (1, 17, 64)
  step = train.jit_train_step(model, tx, config, mesh, state_sharding)
  rng = np.random.default_rng(0)
  losses = []
  for _ in range(3):
    batch = {'image': rng.normal(size=(16, *image_shape)).astype(np.float32),
             'label': rng.integers(0, 10, size=16).astype(np.int32)}
    state, metrics = step(state, next(train.device_batches(iter([batch]), mesh)))
    losses.append(float(metrics['loss']))
  assert np.all(np.isfinite(losses)) and int(state.step) == 3
  trained = npz_layout.flatten(jax.device_get(state.params))
  for name in ('conv_root/kernel', 'block1/unit1/conv2/kernel', 'embedding/kernel'):
    assert not np.array_equal(trained[name], file[name]), name  # the stem trains too
