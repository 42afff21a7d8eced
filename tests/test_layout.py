"""The code's layout rules: modules run as files and with -m, none shadows the standard library,
none outgrows one concept (~500 lines)."""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = sorted(glob.glob(os.path.join(ROOT, 'vit_jax', '**', '*.py'), recursive=True))
CLIS = ('sweep', 'report', 'figures', 'pretrained', 'init_analysis', 'publish', 'results_page')  # the modules with a command line
MAX_LINES = 550  # "~500": one concept per file


def _name(path):
  return os.path.splitext(os.path.basename(path))[0]


def test_no_module_shadows_the_standard_library():
  """Run as a file, a module's folder comes first on sys.path: a vit_jax/inspect.py would then
  replace the stdlib's inspect for every library the module imports."""
  shadowing = [os.path.relpath(p, ROOT) for p in MODULES
               if _name(p) in sys.stdlib_module_names]
  assert not shadowing, shadowing


def test_no_module_is_over_about_500_lines():
  sizes = {os.path.relpath(p, ROOT): sum(1 for _ in open(p)) for p in MODULES}
  assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize('name', CLIS)
@pytest.mark.parametrize('how', ['file', 'module'])
def test_command_lines_run_as_file_and_as_module(name, how):
  args = ([os.path.join('vit_jax', f'{name}.py')] if how == 'file' else ['-m', f'vit_jax.{name}'])
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  proc = subprocess.run([sys.executable, *args, '--help'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
  out = proc.stdout + proc.stderr
  # Help or a usage error (absl exits 1 on --help when a flag is required), never an import error.
  assert 'Traceback' not in out and proc.returncode in (0, 1, 2), out[-2000:]
  assert 'usage' in out.lower() or '--workdir' in out, out[-2000:]
