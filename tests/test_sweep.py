"""The sweep: grid expansion, commands, skip / relaunch / failure states, one real tiny sweep."""

import json
import os
import subprocess
import sys

import pytest

import cifar_fixtures
import figure_checks
from configs import common
from vit_jax import study_runs
from vit_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _grid(**overrides):
  config = common.get_sweep_config()
  config.update(overrides)
  return config


# ----------------------------------------------------------------------------- the grid


def test_placements_from_the_command_line():
  assert sweep.split_placements(('pre,post',)) == ('pre', 'post')  # --config...=pre,post
  assert sweep.split_placements(('pre', 'attn:in,mlp:out')) == ('pre', 'attn:in,mlp:out')
  assert sweep.split_placements('sandwich') == ('sandwich',)
  assert sweep.split_placements(('pre,mixln=0.5', 'deepnorm,dyt')) == (
      'pre,mixln=0.5', 'deepnorm', 'dyt')  # a spec with options stays whole


def test_extra_axes_syntax_and_errors():
  assert sweep.parse_extra_axes('model.num_layers=4,6; config.learning_rate=1e-3,3e-4') == [
      ('model.num_layers', ('4', '6')), ('learning_rate', ('1e-3', '3e-4'))]
  assert sweep.parse_extra_axes('') == []
  for bad, why in (('model.num_layers', 'field=value1,value2'), ('seed=1,2', 'sweep.seeds'),
                   ('a=1;a=2', 'twice'), ('model.norm_placement=pre', 'norm_placements')):
    with pytest.raises(sweep.SweepError, match=why):
      sweep.parse_extra_axes(bad)


def test_grid_is_seed_major_with_one_folder_per_run():
  runs = sweep.expand_grid(_grid(seeds=(0, 1), norm_placements=('pre', 'attn:in,mlp:out')), 's')
  assert [(r.placement, r.seed) for r in runs] == [
      ('pre', 0), ('attn:in,mlp:out', 0), ('pre', 1), ('attn:in,mlp:out', 1)]
  assert runs[1].workdir == os.path.join('s', 'attn-in_mlp-out', 'seed_0')
  assert runs[0].overrides() == ['--config.model.norm_placement=pre', '--config.seed=0']

  runs = sweep.expand_grid(_grid(seeds=(3,), norm_placements=('post',),
                                 extra_axes='model.num_layers=4,6;learning_rate=1e-3'), 's')
  assert len(runs) == 2
  assert runs[1].workdir == os.path.join('s', 'post', 'model.num_layers-6__learning_rate-1e-3',
                                         'seed_3')
  assert runs[1].overrides()[2:] == ['--config.model.num_layers=6', '--config.learning_rate=1e-3']
  assert len({r.workdir for r in sweep.expand_grid(_grid(), 's')}) == 12  # 4 placements x 3 seeds


def test_grid_validation():
  from configs import study_cpu
  config = study_cpu.get_config()
  with pytest.raises(sweep.SweepError, match='unknown preset'):
    sweep.validate_grid(config, sweep.expand_grid(_grid(norm_placements=('pre', 'prenorm')), 's'))
  with pytest.raises(sweep.SweepError, match="no field 'model.depth'"):
    sweep.validate_grid(config, sweep.expand_grid(_grid(extra_axes='model.depth=2,4'), 's'))
  with pytest.raises(sweep.SweepError, match='empty'):
    sweep.expand_grid(_grid(seeds=()), 's')
  sweep.validate_grid(config, sweep.expand_grid(_grid(extra_axes='model.num_layers=2'), 's'))


def test_overrides_pass_through_except_the_grids_own():
  argv = ['--config=configs/study.py', '--workdir=x', '--config.total_steps=5',
          '--config.data.archive', 'a.tar.gz', '--config.sweep.seeds=0,1', '--dry_run']
  assert sweep.passthrough_overrides(argv) == ['--config.total_steps=5',
                                               '--config.data.archive=a.tar.gz']
  runs = sweep.expand_grid(_grid(extra_axes='learning_rate=1e-3'), 's')
  for owned in ('--config.seed=3', '--config.model.norm_placement=post',
                '--config.learning_rate=1'):
    with pytest.raises(sweep.SweepError, match='sets'):
      sweep.check_overrides([owned], runs)
  command = sweep.train_command(runs[0], 'configs/study.py', ['--config.total_steps=5'])
  assert command[1:] == [sweep.RUN_SCRIPT, '--config=configs/study.py',
                         f'--workdir={runs[0].workdir}', '--config.total_steps=5',
                         *runs[0].overrides()]


def test_dry_run_prints_every_command():
  out = subprocess.run(
      [sys.executable, '-m', 'vit_jax.sweep', '--config=configs/study_cpu.py',
       '--workdir=runs/dry', '--dry_run', '--config.total_steps=7', '--config.sweep.seeds=0,1',
       "--config.sweep.norm_placements=('pre','attn:in,mlp:out')"],
      cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
  assert len(out) == 4 + 2  # 2 placements x 2 seeds, inspect, report
  assert out[0] == ('python run.py --config=configs/study_cpu.py --workdir=runs/dry/pre/seed_0 '
                    '--config.total_steps=7 --config.model.norm_placement=pre --config.seed=0')
  assert out[1].endswith('--config.model.norm_placement=attn:in,mlp:out --config.seed=0')
  assert out[4] == ('python -m vit_jax.figures --workdir=runs/dry/pre/seed_0 '
                    '--workdir=runs/dry/attn-in_mlp-out/seed_0')
  assert out[5] == 'python -m vit_jax.report runs/dry'
  assert not os.path.exists(os.path.join(ROOT, 'runs', 'dry'))


# ----------------------------------------------------------------------------- run states


def _fake_train(workdir, last_step, total=4):
  """What run.py leaves behind: config.json and metrics up to `last_step`."""
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'seed': 0, 'total_steps': total, 'model': {'norm_placement': 'pre'}}, f)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    for step in range(2, last_step + 1, 2):
      f.write(json.dumps({'step': step, 'split': 'train', 'loss': 1.0, 'top1': 0.5, 'top5': 0.9,
                          'wall_time': float(step)}) + '\n')
      f.write(json.dumps({'step': step, 'split': 'val', 'loss': 1.0, 'top1': 0.25, 'top5': 0.5,
                          'num_examples': 8}) + '\n')


def test_done_runs_are_skipped_others_relaunched_failures_recorded(tmp_path, monkeypatch):
  run = sweep.Run('pre', 0, (), str(tmp_path / 'pre' / 'seed_0'))
  launched = []

  def fake_run_logged(command, log_path, env=None, reach=4, rc=0):
    launched.append(command)
    _fake_train(run.workdir, reach)
    return rc

  monkeypatch.setattr(sweep, '_run_logged', fake_run_logged)
  assert sweep.execute(run, 'c.py', [], eval_test=False, index='[1/1]')
  assert len(launched) == 1
  with open(os.path.join(run.workdir, study_runs.DONE_FILE)) as f:
    done = json.load(f)
  assert done['args'] == launched[0][2:]
  assert done['code'] == sweep.code_version() != 'unknown'  # the tests run in a git checkout
  with open(os.path.join(run.workdir, study_runs.RUN_INFO_FILE)) as f:
    assert json.load(f)['placement'] == 'pre'

  assert sweep.execute(run, 'c.py', [], eval_test=False, index='[1/1]')  # DONE: skipped
  assert len(launched) == 1
  assert sweep.execute(run, 'c.py', ['--config.total_steps=4'], False, '[1/1]')  # other args
  assert len(launched) == 2

  os.remove(os.path.join(run.workdir, study_runs.DONE_FILE))
  monkeypatch.setattr(sweep, '_run_logged',
                      lambda c, log, env=None: fake_run_logged(c, log, reach=2, rc=1))
  assert not sweep.execute(run, 'c.py', [], False, '[1/1]')  # crashed: FAILED, sweep goes on
  assert os.path.exists(os.path.join(run.workdir, study_runs.FAILED_FILE))
  monkeypatch.setattr(sweep, '_run_logged',
                      lambda c, log, env=None: fake_run_logged(c, log, reach=2, rc=0))
  os.remove(os.path.join(run.workdir, 'metrics.jsonl'))
  with pytest.raises(KeyboardInterrupt):  # exit 0 before the end = stopped by a signal
    sweep.execute(run, 'c.py', [], False, '[1/1]')


# ----------------------------------------------------------------------------- a real sweep


def test_tiny_sweep_end_to_end_and_rerun_skips(tmp_path):
  archive = cifar_fixtures.write_cifar100_binary(
      str(tmp_path / 'data'), {'train': cifar_fixtures.make_examples(120, 100)})
  study_dir = str(tmp_path / 'study')
  command = [
      sys.executable, '-m', 'vit_jax.sweep', '--config=configs/study_cpu.py',
      f'--workdir={study_dir}', f'--config.data.archive={archive}',
      '--config.data.strict_counts=False', '--config.data.image_size=8',
      '--config.data.val_fraction=0.2', '--config.model.patch_size=4',
      '--config.model.hidden_size=16', '--config.model.num_layers=1',
      '--config.model.num_heads=2', '--config.model.mlp_dim=16', '--config.total_steps=2',
      '--config.warmup_steps=1', '--config.batch_size=16', '--config.eval_batch_size=16',
      '--config.log_every=1', '--config.eval_every=2', '--config.checkpoint_every=2',
      '--config.sweep.norm_placements=sandwich', '--config.sweep.seeds=5',
      '--config.sweep.inspect=none']
  first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  assert first.returncode == 0, first.stderr[-3000:]
  workdir = os.path.join(study_dir, 'sandwich', 'seed_5')
  assert os.path.exists(os.path.join(workdir, study_runs.DONE_FILE))
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  assert config['model']['norm_placement'] == 'sandwich' and config['seed'] == 5
  with open(os.path.join(study_dir, 'report.md')) as f:
    assert '| sandwich | 1 | 5 |' in f.read()

  second = subprocess.run(command + ['--config.sweep.report=False'], cwd=ROOT,
                          capture_output=True, text=True)
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'done already' in second.stdout
  with open(os.path.join(workdir, 'run.log')) as f:
    assert f.read().count('$ python') == 1  # run.py was not launched again


def test_a_diverging_run_is_a_result_and_the_report_shows_stability(tmp_path):
  """An lr axis where the large rate diverges: the sweep records it, finishes with exit 0, and
  the report has the stability grid, each placement's training dynamics and the init analysis."""
  archive = cifar_fixtures.write_cifar100_binary(
      str(tmp_path / 'data'), {'train': cifar_fixtures.make_examples(120, 100)})
  study_dir = str(tmp_path / 'study')
  proc = subprocess.run([
      sys.executable, '-m', 'vit_jax.sweep', '--config=configs/study_cpu.py',
      f'--workdir={study_dir}', f'--config.data.archive={archive}',
      '--config.data.strict_counts=False', '--config.data.image_size=8',
      '--config.data.val_fraction=0.2', '--config.model.patch_size=4',
      '--config.model.hidden_size=16', '--config.model.num_layers=2',
      '--config.model.num_heads=2', '--config.model.mlp_dim=16', '--config.total_steps=4',
      '--config.warmup_steps=0', '--config.batch_size=16', '--config.eval_batch_size=16',
      '--config.log_every=1', '--config.eval_every=2', '--config.checkpoint_every=2',
      '--config.divergence_factor=3', '--config.diagnostics_every=2',
      '--config.sweep.norm_placements=pre', '--config.sweep.seeds=0',
      '--config.sweep.extra_axes=learning_rate=0.001,10000', '--config.sweep.inspect=none',
      '--config.sweep.init_depths=1,2'],
      cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert 'diverged at step' in proc.stdout
  runs = {r.config['learning_rate']: r for r in study_runs.find_runs(study_dir)}
  assert runs[0.001].status == 'finished' and runs[10000].status == 'diverged'
  with open(os.path.join(study_dir, runs[10000].workdir, study_runs.DONE_FILE)) as f:
    assert json.load(f)['diverged_step'] == runs[10000].diverged_step >= 1
  with open(os.path.join(study_dir, 'report.md')) as f:
    report = f.read()
  assert '## Stability over learning rate' in report
  # 1e4 diverged; 1e-3 ran to the end on random labels, where nothing can be learned: stalled
  assert '| pre | none | 1 | 1 |' in report
  assert '## Training dynamics' in report and '![dynamics_pre](dynamics_pre.png)' in report
  assert '![init_grad_norms](init/init_grad_norms.png)' in report  # the sweep ran it first
  for name in ('stability.png', 'dynamics_pre.png', 'init/init_grad_norms.png'):
    figure_checks.assert_figure(os.path.join(study_dir, name))


def test_norm_smoke_sweeps_every_preset():
  from configs import norm_smoke  # pylint: disable=g-import-not-at-top
  from vit_jax import norms  # pylint: disable=g-import-not-at-top
  assert norm_smoke.PRESETS == tuple(norms.NORM_PRESETS)
  runs = sweep.expand_grid(norm_smoke.get_config().sweep, 's')
  assert [r.placement for r in runs] == list(norms.NORM_PRESETS)


def test_the_norm_study_grids():
  """The study's accuracy grid (13 schemes x 3 seeds, tested against pre) and its stability grid
  (7 schemes x 4 learning rates x 2 warmups) share one model and recipe."""
  from configs import study_norms_cpu, study_stability_cpu  # pylint: disable=g-import-not-at-top
  accuracy, stability = study_norms_cpu.get_config(), study_stability_cpu.get_config()
  runs = sweep.expand_grid(accuracy.sweep, 's')
  assert len(runs) == 39 and accuracy.sweep.baseline == 'pre'
  assert {'pre', 'post', 'respost', 'sandwich', 'addnorm', 'attn_in_mlp_out', 'deepnorm', 'mixln',
          'dual_patchnorm', 'qknorm', 'layerscale', 'rmsnorm', 'dyt'} == {r.placement for r in runs}
  assert [r.seed for r in runs[:13]] == [0] * 13  # seed-major: one seed of everything first
  grid = sweep.expand_grid(stability.sweep, 's')
  assert len(grid) == 56 and {'pre', 'post', 'sandwich', 'deepnorm', 'mixln'} < {
      r.placement for r in grid}
  assert stability.divergence_factor > 0 and stability.total_steps == 500
  assert stability.model.to_dict() == accuracy.model.to_dict()
  for field in ('batch_size', 'weight_decay', 'label_smoothing', 'grad_clip_norm'):
    assert stability[field] == accuracy[field]


def test_code_version_names_the_commit_and_marks_modified_trees(tmp_path):
  repo = str(tmp_path / 'repo')
  git = lambda *a: subprocess.run(['git', '-C', repo, *a], check=True, capture_output=True,
                                  text=True).stdout.strip()
  os.makedirs(repo)
  git('init', '-q')
  with open(os.path.join(repo, 'f.py'), 'w') as f:
    f.write('a = 1\n')
  git('add', 'f.py')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'one')
  commit = git('rev-parse', 'HEAD')
  assert sweep.code_version(repo) == commit
  with open(os.path.join(repo, 'untracked.txt'), 'w') as f:  # run folders etc. do not count
    f.write('x')
  assert sweep.code_version(repo) == commit
  with open(os.path.join(repo, 'f.py'), 'w') as f:
    f.write('a = 2\n')
  assert sweep.code_version(repo) == commit + '+modified'
  assert sweep.code_version(str(tmp_path)) == 'unknown'
