"""vit_jax/host.py: when the THP-malloc re-exec happens, and that it keeps the command intact."""

import json
import os
import subprocess
import sys

from vit_jax import host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_env_adds_the_tunable_once():
  env = host.thp_malloc_env({'PATH': '/bin'}, (2, 36), 'madvise')
  assert env == {'PATH': '/bin', 'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}
  # Already set (by the user, or by the re-exec itself): no second re-exec.
  assert host.thp_malloc_env(env, (2, 36), 'madvise') is None
  assert host.thp_malloc_env({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, (2, 36), 'always') is None


def test_env_keeps_the_users_other_tunables():
  env = host.thp_malloc_env({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, (2, 39), 'always')
  assert env['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'


def test_no_reexec_where_nothing_to_gain():
  assert host.thp_malloc_env({}, None, 'madvise') is None       # not glibc
  assert host.thp_malloc_env({}, (2, 34), 'madvise') is None    # tunable needs glibc 2.35
  assert host.thp_malloc_env({}, (2, 36), 'never') is None      # THP off in the kernel
  assert host.thp_malloc_env({}, (2, 36), None) is None         # THP setting unreadable


def test_reexec_keeps_arguments_and_sets_tunable_on_this_machine():
  code = ('import json, os, sys; from vit_jax import host; host.reexec_with_thp_malloc(); '
          'print(json.dumps([os.getpid(), sys.argv[1:], os.environ.get("GLIBC_TUNABLES")]))')
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  proc = subprocess.Popen([sys.executable, '-c', code, 'a b', '--x=1'], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, text=True)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 0
  pid, argv, tunables = json.loads(out)
  assert pid == proc.pid  # execve: the same process, not a child
  assert argv == ['a b', '--x=1']
  expected = host.thp_malloc_env(env, host._glibc_version(), host._thp_mode())
  assert tunables == (expected['GLIBC_TUNABLES'] if expected else None)
