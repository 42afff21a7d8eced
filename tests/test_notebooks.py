"""The Colab notebooks run headless, end to end, on CPU with tiny parameters (issue 8).

Each notebook is executed cell by cell with nbclient in a fresh IPython kernel of this interpreter
(cwd = the repository root, the test's XLA_FLAGS: 8 CPU devices); any cell error fails the test.
Parameters are injected the way papermill does it: a cell tagged `injected-parameters` is
inserted right after the cell tagged `parameters` (replacing an earlier injected cell), so its
assignments override the defaults. The data is a tiny official-format CIFAR-100 archive written
by the test (train + test splits), never a download.

The committed notebooks must have their outputs stripped and must not use removed JAX APIs
(vit_jax's own notebooks broke when `jax.api` went away).
"""

import ast
import glob
import json
import os
import sys

import nbformat
import pytest

import cifar_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, 'notebooks', '*.ipynb')))
KERNEL_NAME = 'vit-jax-tests'
CELL_TIMEOUT = 300  # seconds per cell; a tiny run takes well under a minute even on 2 busy cores

# A 1-layer, width-16 ViT on 8x8 images: the whole train -> eval -> inspect path in seconds.
TINY_OVERRIDES = {
    'model.patch_size': 4,
    'model.hidden_size': 16,
    'model.num_layers': 1,
    'model.num_heads': 2,
    'model.head_dim': 8,
    'model.mlp_dim': 32,
    'model.head_hidden_sizes': (16,),
    'data.image_size': 8,
    'data.strict_counts': False,
    'data.val_fraction': 0.25,
    'data.rotation': 0.0,
    'data.zoom': 0.0,
    'batch_size': 16,
    'eval_batch_size': 16,
    'log_every': 2,
    'eval_every': 4,
    'checkpoint_every': 4,
    'warmup_fraction': 0.0,
}
# Code that must not come back (removed or deprecated JAX APIs).
FORBIDDEN = ('jax.api', 'jax.tree_map', 'tree_multimap', 'jax.tools.colab_tpu',
             'jax.experimental.maps')


def _tags(cell):
  return cell.get('metadata', {}).get('tags', [])


def _read(name):
  return nbformat.read(os.path.join(ROOT, 'notebooks', name), as_version=4)


def _parameter_names(nb):
  cells = [c for c in nb.cells if 'parameters' in _tags(c)]
  assert len(cells) == 1, 'exactly one cell must be tagged "parameters"'
  names = set()
  for node in ast.parse(cells[0].source).body:
    if isinstance(node, ast.Assign):
      names.update(t.id for t in node.targets if isinstance(t, ast.Name))
  return names


def inject_parameters(nb, parameters: dict):
  """Papermill semantics: a new cell after the `parameters` cell assigns `parameters`."""
  unknown = set(parameters) - _parameter_names(nb)
  assert not unknown, f'not parameters of the notebook: {sorted(unknown)}'
  nb.cells = [c for c in nb.cells if 'injected-parameters' not in _tags(c)]
  index = next(i for i, c in enumerate(nb.cells) if 'parameters' in _tags(c))
  source = '# Parameters injected by tests/test_notebooks.py\n' + ''.join(
      f'{name} = {value!r}\n' for name, value in parameters.items())
  cell = nbformat.v4.new_code_cell(source, metadata={'tags': ['injected-parameters']})
  cell['id'] = 'injected-parameters'
  nb.cells.insert(index + 1, cell)
  return nb


@pytest.fixture(scope='module')
def kernel_name(tmp_path_factory):
  """A kernel spec that runs *this* interpreter (whatever `python3` spec is installed, if any)."""
  root = tmp_path_factory.mktemp('jupyter')
  spec_dir = root / 'kernels' / KERNEL_NAME
  spec_dir.mkdir(parents=True)
  (spec_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'Python 3 (tests)', 'language': 'python'}))
  previous = os.environ.get('JUPYTER_PATH')
  os.environ['JUPYTER_PATH'] = os.pathsep.join([str(root)] + ([previous] if previous else []))
  yield KERNEL_NAME
  if previous is None:
    os.environ.pop('JUPYTER_PATH', None)
  else:
    os.environ['JUPYTER_PATH'] = previous


def execute(nb, out_path, kernel):
  """Runs every cell in a fresh kernel at the repository root; raises on the first cell error."""
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top
  env = dict(os.environ)  # XLA_FLAGS (8 CPU devices) from conftest.py
  env['PYTHONPATH'] = os.pathsep.join([ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
  env['JAX_PLATFORMS'] = 'cpu'
  env.pop('MPLBACKEND', None)  # the kernel's inline backend, so figures become outputs
  client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=kernel,
                          resources={'metadata': {'path': ROOT}}, allow_errors=False)
  try:
    client.execute(env=env)
  finally:
    nbformat.write(nb, out_path)  # the executed notebook, for a look after a failure
  return nb


def _outputs(nb):
  text, mimes = [], []
  for cell in nb.cells:
    for output in cell.get('outputs', []):
      if output.get('output_type') == 'stream':
        text.append(output['text'])
      for mime, value in output.get('data', {}).items():
        mimes.append(mime)
        if mime in ('text/plain', 'text/markdown'):
          text.append(value)
  return '\n'.join(text), mimes


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
  """A tiny cifar-100-binary archive with train (64) and test (24) splits."""
  root = tmp_path_factory.mktemp('data')
  return cifar_fixtures.write_cifar100_binary(root, {
      'train': cifar_fixtures.make_examples(64, 100),
      'test': cifar_fixtures.make_examples(24, 100, start=64)})


@pytest.mark.parametrize('path', NOTEBOOKS, ids=os.path.basename)
def test_committed_notebook_is_clean(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  assert 'parameters' in _tags(nb.cells[0]), 'the first cell must be the parameters cell'
  for cell in nb.cells:
    assert not any(t == 'injected-parameters' for t in _tags(cell))
    if cell.cell_type != 'code':
      continue
    assert cell.outputs == [] and cell.execution_count is None, (
        f'{os.path.basename(path)} has outputs: strip them before committing (docs/colab.md '
        'has a one-liner)')
    for name in FORBIDDEN:
      assert name not in cell.source, f'{os.path.basename(path)} uses {name}'


def test_both_notebooks_exist():
  names = {os.path.basename(p) for p in NOTEBOOKS}
  assert {'train_cifar100.ipynb', 'compare_norm_placements.ipynb'} <= names


def test_inject_parameters_follows_papermill():
  nb = inject_parameters(_read('train_cifar100.ipynb'), {'TOTAL_STEPS': 3})
  nb = inject_parameters(nb, {'TOTAL_STEPS': 5, 'WORKDIR': '/tmp/x'})
  index = next(i for i, c in enumerate(nb.cells) if 'parameters' in _tags(c))
  injected = [c for c in nb.cells if 'injected-parameters' in _tags(c)]
  assert len(injected) == 1 and nb.cells[index + 1] is injected[0]
  assert injected[0].source.splitlines()[1:] == ["TOTAL_STEPS = 5", "WORKDIR = '/tmp/x'"]
  with pytest.raises(AssertionError, match='TOTAL_STEP'):
    inject_parameters(nb, {'TOTAL_STEP': 1})


def test_train_cifar100_notebook(tmp_path, archive, kernel_name):
  workdir = str(tmp_path / 'workdir')
  nb = inject_parameters(_read('train_cifar100.ipynb'), {
      'CONFIG': 'configs/addnorm.py',
      'WORKDIR': workdir,
      'TOTAL_STEPS': 4,
      'ARCHIVE': archive,
      'EXTRA_OVERRIDES': TINY_OVERRIDES,
      'INSPECT_EXAMPLES': 0,
      'INSTALL': False,
  })
  nb = execute(nb, tmp_path / 'executed.ipynb', kernel_name)
  text, mimes = _outputs(nb)

  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert [r['step'] for r in records if r['split'] == 'train'] == [2, 4]
  test_lines = [r for r in records if r['split'] == 'test']
  assert len(test_lines) == 1 and test_lines[0]['num_examples'] == 24
  assert "on 'test': loss" in text, text[-3000:]
  assert '[train] step 4/4' in text  # live progress from the vit_jax logger
  assert "backend 'cpu'" in text and 'cpu:0' in text  # the accelerator cell listed the devices
  for name in ('attention_rollout.png', 'position_embedding_similarity.png'):
    assert os.path.exists(os.path.join(workdir, 'inspect', name))
    assert f'**{name}**' in text  # shown in the notebook
  assert mimes.count('image/png') >= 4, 'the curves and the inspection figures are images'


def test_compare_norm_placements_notebook(tmp_path, archive, kernel_name):
  # One placement x one seed keeps this to one tiny run.py run (each run is a process that
  # imports TF + JAX and compiles); the report and every display cell still run on it.
  study = str(tmp_path / 'study')
  overrides = {k: v for k, v in TINY_OVERRIDES.items() if k != 'warmup_fraction'}
  nb = inject_parameters(_read('compare_norm_placements.ipynb'), {
      'STUDY_DIR': study,
      'CONFIG': 'configs/study_cpu.py',
      'RUN_SWEEP': True,
      'TOTAL_STEPS': 4,
      'ARCHIVE': archive,
      'EXTRA_OVERRIDES': {**overrides, 'warmup_steps': 0, 'data.crop_padding': 0,
                          'sweep.norm_placements': ('addnorm',), 'sweep.seeds': (0,),
                          'sweep.inspect': 'none', 'sweep.eval_test': False},
      'INSTALL': False,
  })
  nb = execute(nb, tmp_path / 'executed.ipynb', kernel_name)
  text, mimes = _outputs(nb)

  assert os.path.exists(os.path.join(study, 'addnorm', 'seed_0', 'DONE'))
  assert '[1/1] addnorm seed 0: done' in text  # the sweep's progress, live
  assert os.path.exists(os.path.join(study, 'report.md'))
  assert '## Results per placement' in text  # report.md shown as markdown
  assert '| addnorm | 1 | 0 |' in text
  assert '**curves.png**' in text and '**final_accuracy.png**' in text
  assert "No run of this study was inspected" in text  # sweep.inspect='none'
  assert mimes.count('image/png') >= 3
