"""Every bad config value stops before compile with a message naming the field and the fix."""

import glob
import importlib
import os

import pytest

import cifar_fixtures as fx
from configs import common
from vit_jax import study_runs
from vit_jax import validation

# (dotted field, bad value, text the message must contain)
BAD_VALUES = [
    ('model.patch_size', 0, 'model.patch_size=0 must be a positive'),
    ('model.patch_size', 5, 'not divisible by model.patch_size=5'),
    ('model.hidden_size', -8, 'model.hidden_size=-8 must be a positive'),
    ('model.hidden_size', 190, 'not divisible by model.num_heads=3'),
    ('model.num_layers', 0, 'model.num_layers=0 must be a positive'),
    ('model.num_heads', 0, 'model.num_heads=0 must be a positive'),
    ('model.head_dim', -1, 'model.head_dim=-1 must be positive'),
    ('model.mlp_dim', 0, 'model.mlp_dim=0 must be a positive'),
    ('model.norm_placement', 'middle', "'middle'"),
    ('model.norm_placement', 'attn:in,mlp:sideways', 'sideways'),
    ('model.norm_placement', 'attn:in', 'mlp'),
    ('model.norm_placement', 'pre,alpha=deepnorm', 'every layer needs attn:res and mlp:res'),
    ('model.norm_placement', 'pre,mixln=2', 'mixln=2 must be a fraction in [0, 1]'),
    ('model.norm_placement', 'pre,attn_qk=rmsnorm', "site 'attn_qk', which this spec does not have"),
    ('model.norm_type', 'batchnorm', "model.norm_type='batchnorm': expected one of layernorm"),
    ('model.classifier', 'cls', "model.classifier='cls': expected one of"),
    ('model.posemb', 'rope', "model.posemb='rope': expected one of"),
    ('model.dropout_rate', 1.5, 'model.dropout_rate=1.5 must be in [0, 1)'),
    ('model.attention_dropout_rate', -0.1, 'model.attention_dropout_rate=-0.1 must be in [0, 1)'),
    ('model.stochastic_depth_rate', 1.0, 'model.stochastic_depth_rate=1.0 must be in [0, 1)'),
    ('model.head_dropout_rate', 2.0, 'model.head_dropout_rate=2.0 must be in [0, 1)'),
    ('model.head_hidden_sizes', (128, 0), 'model.head_hidden_sizes=(128, 0) must hold positive'),
    ('model.representation_size', -5, 'model.representation_size=-5 must be positive'),
    ('model.layer_norm_epsilon', 0.0, 'model.layer_norm_epsilon=0.0 must be > 0'),
    ('model.dtype', 'float8', "model.dtype='float8': expected one of"),
    ('model.param_dtype', 'int8', "model.param_dtype='int8': expected one of"),
    ('model.attention_impl', 'flash', "model.attention_impl='flash': expected one of"),
    ('model.kernels', 'gpu', "model.kernels='gpu': expected one of ('auto', 'reference', 'cpu')"),
    ('model.variant', 'Z/99', "model.variant='Z/99' is unknown"),
    ('batch_size', 0, 'batch_size=0 must be positive'),
    ('diagnostics_every', -1, 'diagnostics_every=-1 must be >= 0'),
    ('batch_size', 250, 'batch_size=250 must split into grad_accum_steps=4'),
    ('concurrent_microbatches', -1, 'concurrent_microbatches=-1 must be >= 1 (0 = auto'),
    ('host_malloc', 'one-heap',
     "host_malloc='one-heap' is not one of auto, default, huge_pages, one_heap"),
    ('eval_batch_size', -1, 'eval_batch_size=-1 must be a positive multiple'),
    ('num_epochs', 0.0, 'num_epochs=0.0 must be positive'),
    ('total_steps', -10, 'total_steps=-10 must be >= 0'),
    ('learning_rate', 0.0, 'learning_rate=0.0 must be positive'),
    ('learning_rate', -1e-3, 'learning_rate=-0.001 must be positive'),
    ('weight_decay', -0.1, 'weight_decay=-0.1 must be >= 0'),
    ('optimizer', 'lamb', "optimizer='lamb': expected one of"),
    ('lr_schedule', 'step', "lr_schedule='step': expected one of"),
    ('warmup_steps', -1, 'warmup_steps=-1 must be >= 0'),
    ('warmup_fraction', 1.5, 'warmup_fraction=1.5 must be in [0, 1)'),
    ('end_lr_ratio', 2.0, 'end_lr_ratio=2.0 must be in [0, 1]'),
    ('adam_b1', 1.0, 'adam_b1=1.0 must be in [0, 1)'),
    ('adam_b2', -0.5, 'adam_b2=-0.5 must be in [0, 1)'),
    ('adam_eps', 0.0, 'adam_eps=0.0 must be positive'),
    ('momentum', 1.2, 'momentum=1.2 must be in [0, 1)'),
    ('grad_clip_norm', -1.0, 'grad_clip_norm=-1.0 must be >= 0'),
    ('grad_accum_steps', 0, 'grad_accum_steps=0 must be >= 1'),
    ('label_smoothing', 1.0, 'label_smoothing=1.0 must be in [0, 1)'),
    ('ema_decay', 1.0, 'ema_decay=1.0 must be in [0, 1)'),
    ('trainable', 'head(', "trainable='head(' is not a valid regular expression"),
    ('log_every', 0, 'log_every=0 must be positive'),
    ('eval_every', -1, 'eval_every=-1 must be >= 0'),
    ('checkpoint_every', 0, 'checkpoint_every=0 must be positive'),
    ('keep_checkpoints', 0, 'keep_checkpoints=0 must be positive'),
    ('seed', -1, 'seed=-1 must be >= 0'),
    ('model.resnet_layers', (3, 0), 'model.resnet_layers=(3, 0) must hold positive unit counts'),
    ('model.resnet_width', 0, 'model.resnet_width=0 must be a positive integer'),
    ('init_from', '/no/such/file.npz', "init_from='/no/such/file.npz' is not a file"),
    ('init_head', 'reuse', "init_head='reuse': expected one of"),
]


def _set(config, dotted, value):
  *parents, leaf = dotted.split('.')
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


@pytest.mark.parametrize('field,value,expected', BAD_VALUES,
                         ids=[f'{f}={v}' for f, v, _ in BAD_VALUES])
def test_bad_value_is_reported(field, value, expected):
  config = common.get_config()
  if field == 'batch_size' and value == 250:
    config.grad_accum_steps = 4
  _set(config, field, value)
  with pytest.raises(validation.ConfigError) as e:
    validation.validate_config(config, num_devices=1)
  assert expected in str(e.value), str(e.value)


def test_at_least_thirty_bad_values_are_covered():
  assert len(BAD_VALUES) >= 30


def test_folded_attention_cannot_hold_norms_inside_the_attention():
  config = common.get_config()
  config.model.update(attention_impl='folded', norm_placement='normformer')
  with pytest.raises(validation.ConfigError, match='folds q and k away.*attention_impl=xla'):
    validation.validate_config(config, num_devices=1)
  config.model.attention_impl = 'auto'  # auto leaves it unfolded for such a spec
  validation.validate_config(config, num_devices=1)


SHIPPED_CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', '*.py'))
    if not p.endswith('__init__.py'))


def test_every_config_file_is_checked():
  assert {'common', 'cpu_fast', 'cpu_quick', 'study', 'study_cpu'} <= set(SHIPPED_CONFIGS)


@pytest.mark.parametrize('name', SHIPPED_CONFIGS)
def test_shipped_configs_are_valid(name):
  module = importlib.import_module(f'configs.{name}')
  validation.validate_config(module.get_config(), num_devices=8)


def test_batch_not_divisible_by_devices():
  config = common.get_config()
  config.batch_size = 100
  with pytest.raises(validation.ConfigError, match='not divisible by the 8 devices'):
    validation.validate_config(config, num_devices=8)


def test_variant_sizes_are_checked():
  config = common.get_config()
  config.model.variant, config.data.image_size = 'H/14', 32  # 32 is not a multiple of 14
  with pytest.raises(validation.ConfigError, match='not divisible by model.patch_size=14'):
    validation.validate_config(config)


def test_hybrid_image_size_includes_stem_stride():
  config = common.get_config()
  config.model.update(resnet_layers=(3, 4, 9), patch_size=1)
  config.data.image_size = 40  # R50 stem stride is 16
  with pytest.raises(validation.ConfigError, match='ResNet stem stride 16'):
    validation.validate_config(config)


def test_warmup_longer_than_training():
  config = common.get_config()
  config.total_steps, config.warmup_steps = 100, 200
  with pytest.raises(validation.ConfigError, match='warmup must end before training'):
    validation.validate_config(config)


def test_all_problems_reported_together():
  config = common.get_config()
  config.learning_rate, config.model.classifier = -1.0, 'nope'
  with pytest.raises(validation.ConfigError) as e:
    validation.validate_config(config)
  assert 'learning_rate' in str(e.value) and 'model.classifier' in str(e.value)


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(validation.ConfigError, match='is not a folder'):
    validation.validate_workdir(str(blocker / 'run'))
  with pytest.raises(validation.ConfigError, match='--workdir is required'):
    validation.validate_workdir('')


def test_data_problems():
  assert validation.data_problems(fx.data_config()) == []
  bad = fx.data_config(val_fraction=1.0, crop_padding=2, random_resized_crop=True,
                       mixup_alpha=-1.0, image_size=0, num_parallel_calls=0, rotation=0.2)
  problems = '\n'.join(validation.data_problems(bad))
  for field in ('val_fraction', 'crop_padding', 'rotation', 'mixup_alpha', 'image_size',
                'num_parallel_calls'):
    assert f'data.{field}=' in problems
  assert validation.data_problems(fx.data_config(archive='x.tar.gz', dataset='mnist'))
  config = common.get_config()
  config.data = bad
  with pytest.raises(validation.ConfigError, match='Invalid config'):
    validation.validate_config(config)


def test_batch_layout_over_hosts():
  """The data package only asserts these (test_data_iterators); the user is told here."""
  config = common.get_config()
  config.batch_size = 30
  with pytest.raises(validation.ConfigError, match='not divisible by the 4 hosts'):
    validation.validate_config(config, num_devices=1, num_processes=4)
  config.batch_size, config.data.mixup_alpha = 12, 0.2  # 3 examples per host
  with pytest.raises(validation.ConfigError, match='must be even'):
    validation.validate_config(config, num_devices=4, num_processes=4)


def test_cpu_configs_that_compare_models_share_one_recipe():
  """cpu_fast, swin_cpu and the norm study compare models and schemes: only the model, the
  schedule's length and the logging cadence may differ between them (common.get_cpu_recipe_config)."""
  flat = study_runs.flatten
  names = ('cpu_fast', 'swin_cpu', 'study_norms_cpu')
  configs = [flat(importlib.import_module(f'configs.{n}').get_config().to_dict()) for n in names]
  allowed = ('model.', 'sweep.', 'total_steps', 'eval_every', 'checkpoint_every',
             'diagnostics_every')
  for other in configs[1:]:
    differing = {k for k in configs[0].keys() | other.keys() if configs[0].get(k) != other.get(k)}
    assert differing and all(k.startswith(allowed) for k in differing), differing
  recipe = flat(common.get_cpu_recipe_config().to_dict())
  assert all(c[k] == recipe[k] for c in configs for k in ('learning_rate', 'weight_decay',
             'batch_size', 'label_smoothing', 'grad_clip_norm', 'warmup_fraction', 'data.flip'))
