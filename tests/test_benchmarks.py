"""The preset-table scripts: benchmarks/norm_presets.py writes what benchmarks/norm_table.py
prints, and the table's numbers come only from the files it is given."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'benchmarks'))
import norm_presets  # pylint: disable=g-import-not-at-top,wrong-import-position
import norm_table  # pylint: disable=g-import-not-at-top,wrong-import-position


def _run(folder, placement, top1, steps=1200):
  os.makedirs(folder)
  with open(os.path.join(folder, 'config.json'), 'w') as f:
    json.dump({'model': {'norm_placement': placement}, 'seed': 0, 'total_steps': steps}, f)
  with open(os.path.join(folder, 'metrics.jsonl'), 'w') as f:
    for step in (600, steps):
      f.write(json.dumps({'step': step, 'split': 'train', 'loss': 3.0, 'top1': 0.1, 'top5': 0.3,
                          'lr': 1e-3, 'img_per_sec': 800.0, 'time': float(step)}) + '\n')
      f.write(json.dumps({'step': step, 'split': 'val', 'loss': 3.1, 'top1': top1 * step / steps,
                          'top5': 0.4, 'num_examples': 5000}) + '\n')


def test_table_reads_the_files_it_is_given(tmp_path, capsys):
  smoke = tmp_path / 'smoke'
  _run(str(smoke / 'pre' / 'seed_0'), 'pre', 0.2041)
  _run(str(smoke / 'dyt' / 'seed_0'), 'dyt', 0.1875)
  speed = tmp_path / 'speed.json'
  speed.write_text(json.dumps(dict(
      config='cpu_fast', cpu='Test CPU', date='2026-12-06', command='python x', load_average_end='0',
      presets={'pre': dict(parameters=1000, img_per_sec=[10, 12, 11], wall_ratio=[1, 1, 1],
                           cpu_ratio=[1, 1, 1]),
               'dyt': dict(parameters=1012, img_per_sec=[9, 9, 9], wall_ratio=[0.9, 0.8, 0.85],
                           cpu_ratio=[0.95, 0.93, 0.97])})))
  doc = tmp_path / 'doc.md'
  doc.write_text(f'intro\n{norm_table.BEGIN}\nold\n{norm_table.END}\noutro\n')
  assert norm_table.main(['--speed', str(speed), '--smoke', str(smoke), '--write', str(doc)]) == 0
  text = doc.read_text()
  assert text.startswith('intro\n') and text.endswith('outro\n') and 'old' not in text
  rows = {line.split('|')[1].strip(): line for line in text.splitlines() if line.startswith('| `')}
  assert '| 1,012 | 0.95 / 0.85 | 18.75 |' in rows['`dyt`']
  assert '| 1,000 | 1.00 / 1.00 | 20.41 |' in rows['`pre`']
  assert rows['`post`'].endswith('| - | - | - |')  # no number where no file has one
  assert 'Test CPU' in text and '2 finished runs of 1200 steps' in text


def test_presets_benchmark_writes_ratios_to_pre(tmp_path, capsys):
  out = tmp_path / 'speed.json'
  assert norm_presets.main(['--config', 'cpu_quick', '--presets', 'dyt', '--rounds', '1',
                            '--steps', '1', '--warmup', '0', '--out', str(out)]) == 0
  result = json.loads(out.read_text())
  assert list(result['presets']) == ['pre', 'dyt']  # pre is always measured: the baseline
  assert result['presets']['pre']['wall_ratio'] == [1.0]
  # DyT adds one alpha per norm site: 2 per layer of cpu_quick's 4, and the final norm.
  assert result['presets']['dyt']['parameters'] == result['presets']['pre']['parameters'] + 2 * 4 + 1
  assert result['presets']['dyt']['cpu_ratio'][0] > 0
  with pytest.raises(SystemExit):
    norm_presets.main(['--presets', 'prenorm'])


# ----------------------------------------------------------------------------- the minimal step


def test_minimal_step_computes_our_step_s_loss_and_leaves_our_params_alone():
  """The yardstick of benchmarks/train_step.py's ours/minimal ratio computes the same function:
  on the same model, params and batch, its first loss is our step's first loss."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import reference_step  # pylint: disable=g-import-not-at-top
  import train_step  # pylint: disable=g-import-not-at-top
  config = train_step.load_config('cpu_quick')
  config.model.update(hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64)
  ours = train_step.compile_ours(config, 16)
  before = jax.tree.map(np.asarray, ours.state.params)
  minimal, state, _ = reference_step.compile_reference(ours.model, ours.state.params, ours.batch)
  params, opt_state, loss = minimal(*state, ours.batch['image'], ours.batch['label'])
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, ours.state.params))
  _, metrics = ours.step(ours.state, ours.batch)
  np.testing.assert_allclose(float(loss), float(metrics['loss']), rtol=1e-6)
  assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(before)))
  times, _ = reference_step.run_reference(minimal, (params, opt_state), ours.batch, steps=2, warmup=1)
  assert len(times) == 2 and all(t > 0 for t in times)


def test_profile_groups_ops_by_their_jax_source():
  import step_profile  # pylint: disable=g-import-not-at-top
  hlo = ('  %fusion.3 = f32[8]{0} fusion(%p), kind=kLoop, metadata={op_name="jit(train_step)/'
         'transpose(jvp(VisionTransformer))/Transformer/encoderblock_0/MlpBlock_3/dot_general" '
         'source_file="x.py"}\n'
         '  ROOT %top_k.1 = f32[8]{0} custom-call(%q), metadata={op_name="jit(train_step)/top_k"}\n'
         '  %copy.2 = f32[8]{0} copy(%p)\n')
  sources = step_profile.op_sources(hlo)
  assert set(sources) == {'fusion.3', 'top_k.1'}
  assert step_profile.group_of(sources['fusion.3']) == \
      'model backward: Transformer/encoderblock_0/dot_general'
  assert step_profile.group_of(sources['top_k.1']) == 'outside the model: top_k'
  assert step_profile.group_of(sources.get('copy.2', '')) == '(no metadata: copies, buffers)'
