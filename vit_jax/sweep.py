"""The sweep: norm placements × seeds × optional extra axes, one ordinary run.py run each.

Why: a comparison of norm placements needs several seeds per placement, every run trained with
the same recipe, and a sweep that survives interruption. Each run is a plain
`python run.py --config=<file> --workdir=<study>/<run> --config.model.norm_placement=P
--config.seed=S ...` subprocess, so a cluster scheduler can launch the same commands
(`--dry_run` prints them), and run.py's own checkpoint resume makes an interrupted run continue.

  python -m vit_jax.sweep --config=configs/study.py --workdir=runs/study
  python -m vit_jax.sweep --config=configs/study_cpu.py --workdir=runs/study_cpu \
      --config.data.archive=../shared/data/cifar-100-binary-train.tar.gz
  python -m vit_jax.sweep --config=configs/study.py --workdir=runs/study --dry_run

Every `--config.*` override given to the sweep is passed on to each run, except
`--config.sweep.*`, which only changes the grid. The grid lives in `config.sweep`:

  sweep.norm_placements  tuple of presets or specs (vit_jax/norms.py). On the command line:
                         --config.sweep.norm_placements=pre,post,deepnorm (preset names), or
                         --config.sweep.norm_placements="('pre','attn:in,mlp:out','pre,mixln=0.5')"
                         for specs (an entry with ':' or '=' is one spec).
  sweep.seeds            tuple of ints: --config.sweep.seeds=0,1,2
  sweep.extra_axes       'field=v1,v2;field2=w1,w2' (dotted config fields, ';' between axes,
                         ',' between values), e.g. 'model.num_layers=4,6;learning_rate=1e-3,3e-4'.
                         Quote it in a shell (';').
  sweep.eval_test        also evaluate each finished run on the test split (--mode=eval).
  sweep.inspect          'first_seed' | 'all' | 'none': runs that get vit_jax.figures figures.
  sweep.report           build the report (vit_jax.report) at the end.
  sweep.init_depths      e.g. '6,12,24': first, vit_jax.init_analysis of the placements at these
                         depths into <study>/init (the report shows its figure); '' = skip.

Layout: `<study>/<placement>/seed_<s>` or, with extra axes, `<study>/<placement>/<axes>/seed_<s>`
(the seeds of one condition share a parent folder). Runs go seed by seed (every placement of
seed 0 first), so a report built half-way already compares every placement.

State: a run is done when its `DONE` file records the same run.py arguments; DONE is written
only after run.py exited 0 and metrics.jsonl reached the configured total step, or after the run
diverged (run.py exit code 3 and the trainer's diverged.json: a non-finite loss, or one above
config.divergence_factor x its initial value): a diverged run is a result, recorded with its step,
and the sweep goes on. Anything else is (re)launched and resumes from its newest checkpoint. A
failed run leaves `FAILED` (the tail of its log); the sweep goes on and exits 1 at the end.

The runs share a persistent XLA compilation cache, <study>/.jax_compilation_cache (unless
JAX_COMPILATION_CACHE_DIR is set): runs that differ only in the seed skip compilation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

if __name__ == '__main__' and not __package__:  # run as a file: `vit_jax` from the repo root
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app
from absl import flags
from ml_collections import config_flags

from vit_jax import hardware  # plain Python
from vit_jax import study_runs

INIT_DIR = 'init'  # report_dynamics.INIT_FIGURE's folder

config_flags.DEFINE_config_file('config', None, 'Study config (configs/study.py): a training '
                                'config plus a `sweep` block.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Study folder: one sub-folder per run, report.md on top.')
flags.DEFINE_bool('dry_run', False, 'Print the run.py commands (one per line) and exit.')
flags.DEFINE_bool('keep_going', True, 'After a failed run, go on with the next one.')
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_SCRIPT = os.path.join(REPO_ROOT, 'run.py')
LOG_FILE = 'run.log'
FAILED_LOG_LINES = 30            # lines of the log kept in FAILED
INSPECT_CHOICES = ('none', 'first_seed', 'all')
# Fields the sweep sets per run; overriding them directly would fight the grid.
PLACEMENT_OVERRIDE = 'model.norm_placement'
SEED_OVERRIDE = 'seed'
SWEEP_OVERRIDE_PREFIX = '--config.sweep.'
COMPILATION_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
COMPILATION_CACHE_DIR = '.jax_compilation_cache'   # under the study folder


class SweepError(ValueError):
  """A sweep config that cannot be expanded; the message says how to fix it."""


# ============================================================================ the grid


@dataclasses.dataclass(frozen=True)
class Run:
  """One cell of the grid."""
  placement: str
  seed: int
  axes: tuple[tuple[str, str], ...]   # ((dotted field, value as written), ...)
  workdir: str

  def overrides(self) -> list[str]:
    return ([f'--config.{PLACEMENT_OVERRIDE}={self.placement}',
             f'--config.{SEED_OVERRIDE}={self.seed}'] +
            [f'--config.{field}={value}' for field, value in self.axes])


def split_placements(names: Sequence[str] | str) -> tuple[str, ...]:
  """('pre,post',) -> ('pre', 'post'): what `--config.sweep.norm_placements=pre,post` gives.

  An entry with ':' or '=' is one spec ('attn:in,mlp:out', 'pre,layerscale=1e-4') and is kept
  whole.
  """
  if isinstance(names, str):
    names = (names,)
  out = []
  for name in names:
    name = str(name).strip()
    whole = ':' in name or '=' in name
    out.extend([name] if whole else [n.strip() for n in name.split(',') if n.strip()])
  return tuple(out)


def parse_extra_axes(text: str) -> list[tuple[str, tuple[str, ...]]]:
  """'model.num_layers=4,6;learning_rate=1e-3,3e-4' -> [(field, ('4', '6')), ...]."""
  axes = []
  for part in (p.strip() for p in (text or '').split(';')):
    if not part:
      continue
    field, sep, values = part.partition('=')
    field = field.strip()
    if field.startswith('config.'):
      field = field[len('config.'):]
    items = tuple(v.strip() for v in values.split(',') if v.strip())
    if not sep or not field or not items:
      raise SweepError(f'sweep.extra_axes part {part!r} is not "field=value1,value2". Write '
                       "axes as 'model.num_layers=4,6;learning_rate=1e-3,3e-4'.")
    if field in (PLACEMENT_OVERRIDE, SEED_OVERRIDE):
      raise SweepError(f'sweep.extra_axes names {field!r}; set sweep.norm_placements / '
                       'sweep.seeds instead.')
    if any(f == field for f, _ in axes):
      raise SweepError(f'sweep.extra_axes names {field!r} twice.')
    axes.append((field, items))
  return axes


def expand_grid(sweep: Mapping, study_dir: str) -> list[Run]:
  """Every (seed, axes, placement) cell, seed-major; raises SweepError for an empty grid."""
  import itertools  # pylint: disable=g-import-not-at-top
  placements = split_placements(sweep['norm_placements'])
  seeds = tuple(int(s) for s in (sweep['seeds'] if isinstance(sweep['seeds'], (list, tuple))
                                 else (sweep['seeds'],)))
  axes = parse_extra_axes(sweep['extra_axes'])
  if not placements:
    raise SweepError('sweep.norm_placements is empty; e.g. --config.sweep.norm_placements=pre,post')
  if not seeds:
    raise SweepError('sweep.seeds is empty; e.g. --config.sweep.seeds=0,1,2')
  if len(set(placements)) != len(placements) or len(set(seeds)) != len(seeds):
    raise SweepError(f'sweep.norm_placements {placements} or sweep.seeds {seeds} repeat a value.')
  runs = []
  for seed in seeds:
    for values in itertools.product(*(v for _, v in axes)):
      cell = tuple(zip((f for f, _ in axes), values))
      for placement in placements:
        parts = [study_dir, study_runs.safe_name(placement)]
        if cell:
          parts.append('__'.join(f'{f}-{study_runs.safe_name(v)}' for f, v in cell))
        parts.append(f'seed_{seed}')
        runs.append(Run(placement, seed, cell, os.path.join(*parts)))
  return runs


def validate_grid(config, runs: Sequence[Run]) -> None:
  """Placements must parse and axis fields must exist, before any run is launched."""
  from vit_jax import norms  # pylint: disable=g-import-not-at-top
  problems = []
  for placement in sorted({r.placement for r in runs}):
    try:
      norms.parse_spec(placement, config.model.num_layers, config.model.norm_type)
    except ValueError as e:
      problems.append(f'sweep.norm_placements: {e}')
  for field, _ in (runs[0].axes if runs else ()):
    node = config
    for part in field.split('.'):
      if not hasattr(node, 'keys') or part not in node.keys():
        problems.append(f'sweep.extra_axes: config has no field {field!r}.')
        break
      node = node[part]
  if problems:
    raise SweepError('Invalid sweep:\n  - ' + '\n  - '.join(problems))


# ============================================================================ commands


def passthrough_overrides(argv: Sequence[str]) -> list[str]:
  """The `--config.x=y` (or `--config.x y`) arguments the user gave, in order, except
  `--config.sweep.*`: those shape the grid, not a run (and would make DONE markers stale)."""
  out = []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--config.'):
      if '=' not in arg and i + 1 < len(argv) and not argv[i + 1].startswith('--'):
        arg = f'{arg}={argv[i + 1]}'
        i += 1
      if not arg.startswith(SWEEP_OVERRIDE_PREFIX):
        out.append(arg)
    i += 1
  return out


def check_overrides(overrides: Sequence[str], runs: Sequence[Run]) -> None:
  """The grid's own fields may not be overridden directly (they would silently win or lose)."""
  owned = {PLACEMENT_OVERRIDE, SEED_OVERRIDE} | {f for r in runs[:1] for f, _ in r.axes}
  for o in overrides:
    field = o[len('--config.'):].split('=', 1)[0]
    if field in owned:
      raise SweepError(f'{o}: the sweep sets {field} for each run; change sweep.norm_placements, '
                       'sweep.seeds or sweep.extra_axes instead.')


def train_command(run: Run, config_file: str, overrides: Sequence[str],
                  python: str = sys.executable) -> list[str]:
  """The run.py invocation of one run: the user's overrides, then the grid's."""
  return [python, RUN_SCRIPT, f'--config={config_file}', f'--workdir={run.workdir}',
          *overrides, *run.overrides()]


def eval_test_command(run: Run, config_file: str, overrides: Sequence[str],
                      python: str = sys.executable) -> list[str]:
  return train_command(run, config_file, overrides, python) + [
      '--mode=eval', '--config.data.eval_split=test']


def inspect_command(workdirs: Sequence[str], python: str = sys.executable) -> list[str]:
  return [python, '-m', 'vit_jax.figures', *(f'--workdir={w}' for w in workdirs)]


def init_command(study_dir: str, config_file: str, placements: Sequence[str], depths: str,
                 overrides: Sequence[str], python: str = sys.executable) -> list[str]:
  """vit_jax.init_analysis for the sweep's placements into <study>/init (sweep.init_depths)."""
  return [python, '-m', 'vit_jax.init_analysis', f'--config={config_file}',
          f'--out={os.path.join(study_dir, INIT_DIR)}', f'--placements={";".join(placements)}',
          f'--depths={depths}', *overrides]


def report_command(study_dir: str, baseline: str = '', python: str = sys.executable) -> list[str]:
  return [python, '-m', 'vit_jax.report', study_dir] + ([f'--baseline={baseline}'] if baseline else [])


def shell_line(command: Sequence[str]) -> str:
  """A copy-pasteable command line (`python` and `run.py` shown as the user would type them)."""
  shown = ['python' if i == 0 and c == sys.executable else
           (os.path.relpath(c) if c == RUN_SCRIPT else c) for i, c in enumerate(command)]
  return ' '.join(shlex.quote(c) for c in shown)


def inspected(runs: Sequence[Run], which: str) -> list[Run]:
  if which not in INSPECT_CHOICES:
    raise SweepError(f'sweep.inspect={which!r}: expected one of {INSPECT_CHOICES}.')
  if which == 'none':
    return []
  if which == 'all':
    return list(runs)
  first = min(r.seed for r in runs)
  return [r for r in runs if r.seed == first]


# ============================================================================ run state


def _args_key(command: Sequence[str]) -> list[str]:
  """What identifies a run's command (not which python ran it)."""
  return list(command[2:])


def is_done(run: Run, command: Sequence[str]) -> bool:
  """DONE exists and records these exact run.py arguments."""
  path = os.path.join(run.workdir, study_runs.DONE_FILE)
  try:
    with open(path) as f:
      return json.load(f).get('args') == _args_key(command)
  except (OSError, json.JSONDecodeError):
    return False


def needs_inspection(run: Run) -> bool:
  """No inspect.json yet, or one older than the run's DONE (the run was trained further)."""
  summary = os.path.join(run.workdir, study_runs.INSPECT_DIR, 'inspect.json')
  done = os.path.join(run.workdir, study_runs.DONE_FILE)
  return not os.path.exists(summary) or (os.path.exists(done) and
                                         os.path.getmtime(done) > os.path.getmtime(summary))


def reached_end(workdir: str) -> bool:
  """metrics.jsonl's last train line is at the configured total step."""
  run = study_runs.read_run(os.path.dirname(workdir) or '.', os.path.basename(workdir))
  return run.status == 'finished'


def has_test_eval(workdir: str) -> bool:
  path = os.path.join(workdir, study_runs.METRICS_FILE)
  return os.path.exists(path) and bool(study_runs.read_metrics(path).get('test'))


def _write_json(path: str, payload: dict) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2)
  os.replace(tmp, path)


def code_version(path: str = os.path.dirname(os.path.abspath(__file__))) -> str:
  """The git commit of the code at `path`, '+modified' when tracked files differ from it, or
  'unknown' outside a git checkout: a published run says which trainer produced it."""
  def git(*args):
    return subprocess.run(['git', '-C', path, *args], capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()
  try:
    commit = git('rev-parse', 'HEAD')
    modified = git('status', '--porcelain', '--untracked-files=no')
  except (OSError, subprocess.SubprocessError):
    return 'unknown'
  return commit + ('+modified' if modified else '')


def _machine() -> dict:
  """When, where and with which code a run finished: the study's CPU-hours, machines and code
  versions come from these. (`seconds`, beside them in DONE, is the last invocation's wall
  clock, pauses included: vit_jax.results_page measures time from metrics.jsonl instead.)"""
  return {'finished': time.strftime('%Y-%m-%d %H:%M:%S'), 'cpu': hardware.cpu_model(),
          'cores': os.cpu_count(), 'code': code_version()}


def _child_env(study_dir: str) -> dict[str, str]:
  """The runs share a persistent XLA compilation cache (unless the user set one): runs that
  differ only in the seed compile the same programs, so all but the first skip compilation."""
  env = dict(os.environ)
  env.setdefault(COMPILATION_CACHE_ENV, os.path.join(os.path.abspath(study_dir),
                                                     COMPILATION_CACHE_DIR))
  return env


def _run_logged(command: Sequence[str], log_path: str, env: dict[str, str] | None = None) -> int:
  """Runs `command`, appending its output to `log_path`. Ctrl-C reaches the child too (same
  process group): run.py checkpoints and exits, then the sweep stops."""
  with open(log_path, 'a') as log:
    log.write(f'\n$ {shell_line(command)}\n')
    log.flush()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
      return proc.wait()
    except KeyboardInterrupt:
      proc.wait()
      raise


def _tail(path: str, n: int) -> str:
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-n:])
  except OSError:
    return ''


def execute(run: Run, config_file: str, overrides: Sequence[str], eval_test: bool,
            index: str, env: dict[str, str] | None = None) -> bool:
  """Trains one run (skipping it when DONE); returns whether it finished."""
  command = train_command(run, config_file, overrides)
  os.makedirs(run.workdir, exist_ok=True)
  log_path = os.path.join(run.workdir, LOG_FILE)
  name = f'{run.placement} seed {run.seed}' + ''.join(f' {f}={v}' for f, v in run.axes)
  if is_done(run, command):
    print(f'{index} {name}: done already ({run.workdir})', flush=True)
  else:
    _write_json(os.path.join(run.workdir, study_runs.RUN_INFO_FILE),
                {'placement': run.placement, 'seed': run.seed, 'axes': dict(run.axes),
                 'command': shell_line(command)})
    failed = os.path.join(run.workdir, study_runs.FAILED_FILE)
    if os.path.exists(failed):
      os.remove(failed)
    print(f'{index} {name}: training → {log_path}', flush=True)
    start = time.time()
    rc = _run_logged(command, log_path, env)
    seconds = time.time() - start
    state = study_runs.read_run(os.path.dirname(run.workdir), os.path.basename(run.workdir))
    if rc == study_runs.DIVERGED_EXIT and state.status == 'diverged':  # a result: record, go on
      _write_json(os.path.join(run.workdir, study_runs.DONE_FILE),
                  {'args': _args_key(command), 'seconds': seconds, 'diverged_step':
                   state.diverged_step, **_machine()})
      print(f'{index} {name}: {state.note} after {seconds:.0f} s', flush=True)
      return True
    if rc != 0 or not reached_end(run.workdir):
      why = f'exit code {rc}' if rc else 'stopped before the last step (signal?)'
      with open(failed, 'w') as f:
        f.write(f'{why}\n{_tail(log_path, FAILED_LOG_LINES)}')
      print(f'{index} {name}: FAILED ({why}) after {seconds:.0f} s; see {log_path}', flush=True)
      if rc == 0:  # stopped by a signal: the user wants the sweep to stop too
        raise KeyboardInterrupt
      return False
    _write_json(os.path.join(run.workdir, study_runs.DONE_FILE),
                {'args': _args_key(command), 'seconds': seconds, **_machine()})
    val = study_runs.run_metrics(study_runs.read_run(os.path.dirname(run.workdir),
                                                     os.path.basename(run.workdir)))
    print(f'{index} {name}: done in {seconds:.0f} s, final val top-1 '
          f'{100 * val["final_val_top1"]:.2f}%', flush=True)
  diverged = os.path.exists(os.path.join(run.workdir, study_runs.DIVERGED_FILE))
  if eval_test and not diverged and not has_test_eval(run.workdir):
    print(f'{index} {name}: evaluating on test', flush=True)
    if _run_logged(eval_test_command(run, config_file, overrides), log_path, env) != 0:
      print(f'{index} {name}: test evaluation FAILED; see {log_path}', flush=True)
      return False
  return True


def main(argv: Sequence[str]) -> None:
  del argv
  config = FLAGS.config
  sweep = config.get('sweep')
  if sweep is None:
    raise app.UsageError(f'{FLAGS["config"].config_filename} has no `sweep` block; use '
                         'configs/study.py or add config.sweep (see configs/study.py).')
  study_dir = FLAGS.workdir.rstrip('/')
  config_file = FLAGS['config'].config_filename
  overrides = passthrough_overrides(sys.argv[1:])
  try:
    runs = expand_grid(sweep, study_dir)
    check_overrides(overrides, runs)
    validate_grid(config, runs)
    to_inspect = inspected(runs, sweep.get('inspect', 'none'))
  except SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  eval_test = bool(sweep.get('eval_test', False))
  make_report = bool(sweep.get('report', True))
  baseline = str(sweep.get('baseline', '') or '')

  if FLAGS.dry_run:
    if sweep.get('init_depths'):
      print(shell_line(init_command(study_dir, config_file, split_placements(
          sweep['norm_placements']), str(sweep['init_depths']), overrides)))
    for run in runs:
      print(shell_line(train_command(run, config_file, overrides)))
    if eval_test:
      for run in runs:
        print(shell_line(eval_test_command(run, config_file, overrides)))
    if to_inspect:
      print(shell_line(inspect_command([r.workdir for r in to_inspect])))
    if make_report:
      print(shell_line(report_command(study_dir, baseline)))
    return

  os.makedirs(study_dir, exist_ok=True)
  _write_json(os.path.join(study_dir, study_runs.SWEEP_FILE), {
      'command': shell_line([sys.executable, '-m', 'vit_jax.sweep', *sys.argv[1:]]),
      'config_file': config_file, 'overrides': overrides,
      'norm_placements': list(split_placements(sweep['norm_placements'])),
      'seeds': sorted({r.seed for r in runs}), 'extra_axes': sweep['extra_axes'],
      'runs': [{'workdir': os.path.relpath(r.workdir, study_dir), 'placement': r.placement,
                'seed': r.seed, 'axes': dict(r.axes)} for r in runs]})
  start = time.time()
  failed = []
  env = _child_env(study_dir)
  init_depths = str(sweep.get('init_depths', '') or '')
  try:
    done = os.path.exists(os.path.join(study_dir, INIT_DIR, 'init_grad_norms.json'))
    if init_depths and not done:
      print(f'gradient norms at init, depths {init_depths} → {os.path.join(study_dir, INIT_DIR)}',
            flush=True)
      placements = split_placements(sweep['norm_placements'])
      if subprocess.call(init_command(study_dir, config_file, placements, init_depths,
                                      overrides), env=env) != 0:
        print('the init analysis FAILED (see above); the runs go on', flush=True)
    for i, run in enumerate(runs, 1):
      if not execute(run, config_file, overrides, eval_test, f'[{i}/{len(runs)}]', env):
        failed.append(run)
        if not FLAGS.keep_going:
          break
    pending = [r for r in to_inspect if reached_end(r.workdir) and needs_inspection(r)]
    if pending:
      print(f'inspecting {len(pending)} runs', flush=True)
      if subprocess.call(inspect_command([r.workdir for r in pending]), env=env) != 0:
        print('inspection FAILED (see above); the report is built without it', flush=True)
    if make_report and subprocess.call(report_command(study_dir, baseline)) != 0:
      print('the report FAILED (see above)', file=sys.stderr)
      failed.append(None)
  except KeyboardInterrupt:
    print('\ninterrupted: rerun the same command to resume (finished runs are skipped, the '
          'interrupted one resumes from its newest checkpoint).', file=sys.stderr)
    sys.exit(130)
  print(f'sweep: {len(runs) - sum(r is not None for r in failed)}/{len(runs)} runs finished in '
        f'{(time.time() - start) / 60:.1f} min' +
        (f'; report: {os.path.join(study_dir, "report.md")}' if make_report else ''), flush=True)
  if failed:
    print('failed: ' + ', '.join(r.workdir if r else 'report' for r in failed), file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
