"""Copies a study's small result files into the repository and rebuilds its report there.

Why: a study outlives a session (the CPU one runs for hours, across sessions), and its results
must be readable without its checkpoints. After each session, this copies every *finished*
run's small files (and every diverged one's: a result too) from the study folder to a folder
that is committed, e.g. docs/results/<study>/, then rebuilds report.md, summary.json and the
figures from the copies alone:

  python -m vit_jax.publish runs/study_norms_cpu docs/results/study_norms_cpu --baseline=pre

Per run: config.json, metrics.jsonl, diagnostics.jsonl, diverged.json, DONE (the sweep's record:
seconds, CPU, cores, when). Per study: sweep.json (the plan) and the init analysis
(init/init_grad_norms.json, .png). Never checkpoints, TensorBoard files or logs. A run that is
still going, or failed, stays out until it finishes; it prints what is published and what is
still to run, so a note can say which runs are done.

The run folders (runs/, never committed) do not survive a move to another machine. `--restore`
copies the published runs back into the study folder before a sweep resumes there, so that the
sweep skips them (their DONE records the same command) instead of training them again:

  python -m vit_jax.publish --restore docs/results/study_norms_cpu runs/study_norms_cpu
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

if __name__ == '__main__' and not __package__:  # run as a file: `vit_jax` from the repo root
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from vit_jax import report
from vit_jax import study_runs

RUN_FILES = (study_runs.CONFIG_FILE, study_runs.METRICS_FILE, study_runs.DIAGNOSTICS_FILE,
             study_runs.DIVERGED_FILE, study_runs.DONE_FILE)
STUDY_FILES = (study_runs.SWEEP_FILE, os.path.join('init', 'init_grad_norms.json'),
               os.path.join('init', 'init_grad_norms.png'))
PUBLISHED = ('finished', 'diverged')


def _copy(src: str, dst: str) -> bool:
  if not os.path.exists(src):
    return False
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  shutil.copyfile(src, dst)
  return True


def publish(study_dir: str, out_dir: str) -> tuple[list[str], list[str]]:
  """Copies the finished and diverged runs' files; returns (published, still to run) workdirs."""
  if os.path.abspath(study_dir) == os.path.abspath(out_dir):
    raise ValueError(f'{study_dir} is both the study and the destination; publish into another '
                     'folder, e.g. docs/results/<study>.')
  runs = study_runs.find_runs(study_dir)  # raises FileNotFoundError with the sweep command
  published, pending = [], []
  for run in runs:
    if run.status not in PUBLISHED:
      pending.append(f'{run.workdir} ({run.status}{": " + run.note if run.note else ""})')
      continue
    for name in RUN_FILES:
      _copy(os.path.join(study_dir, run.workdir, name), os.path.join(out_dir, run.workdir, name))
    published.append(run.workdir)
  for name in STUDY_FILES:
    _copy(os.path.join(study_dir, name), os.path.join(out_dir, name))
  plan = study_runs.read_json(os.path.join(study_dir, study_runs.SWEEP_FILE)) or {}
  seen = {r.workdir for r in runs}
  pending += [f'{r["workdir"]} (not started)' for r in plan.get('runs', [])
              if r['workdir'] not in seen]
  return published, pending


def restore(published_dir: str, study_dir: str) -> list[str]:
  """Copies each published run's files into `study_dir` where that run has no DONE yet;
  returns the restored workdirs. A run folder with its own DONE is left alone; nothing published
  yet restores nothing."""
  restored = []
  if not os.path.isdir(published_dir):
    return restored
  for run in study_runs.find_runs(published_dir):
    if os.path.exists(os.path.join(study_dir, run.workdir, study_runs.DONE_FILE)):
      continue
    for name in RUN_FILES:
      _copy(os.path.join(published_dir, run.workdir, name),
            os.path.join(study_dir, run.workdir, name))
    restored.append(run.workdir)
  for name in STUDY_FILES[1:]:  # the init analysis (the sweep writes its own sweep.json)
    if not os.path.exists(os.path.join(study_dir, name)):
      _copy(os.path.join(published_dir, name), os.path.join(study_dir, name))
  return restored


def main(argv: Sequence[str]) -> int:
  usage = ('usage: python -m vit_jax.publish STUDY_DIR OUT_DIR [--baseline=pre] [--alpha=0.05]\n'
           '       python -m vit_jax.publish --restore OUT_DIR STUDY_DIR\n'
           '  e.g. python -m vit_jax.publish runs/study_norms_cpu docs/results/study_norms_cpu '
           '--baseline=pre')
  args = [a for a in argv[1:] if not a.startswith('--')]
  options = dict(a[2:].split('=', 1) for a in argv[1:] if a.startswith('--') and '=' in a)
  unknown = [a for a in argv[1:] if a.startswith('--') and a[2:].split('=', 1)[0] not in
             ('baseline', 'alpha', 'restore')]
  if len(args) != 2 or unknown:
    print(usage, file=sys.stderr)
    return 2
  if '--restore' in argv[1:]:
    published_dir, study_dir = args
    try:
      restored = restore(published_dir, study_dir)
    except FileNotFoundError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    print(f'restored {len(restored)} published runs into {study_dir}: a sweep there skips them')
    return 0
  study_dir, out_dir = args
  try:
    published, pending = publish(study_dir, out_dir)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'published {len(published)} runs into {out_dir}')
  if pending:
    print(f'{len(pending)} still to run (rerun the sweep: it skips finished runs and resumes '
          'the unfinished one):\n  ' + '\n  '.join(pending))
  if published:
    report.build_report(out_dir, float(options.get('alpha', report.ALPHA)),
                        options.get('baseline', ''))
    print(f'wrote {os.path.join(out_dir, "report.md")}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
