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
