"""vit_jax/host.py: which malloc tunables each mode's re-exec adds, and that it keeps the command."""

import json
import os
import subprocess
import sys

from vit_jax import host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_HEAP = f'glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={2**46}'
HUGE = 'glibc.malloc.hugetlb=1'


def test_each_mode_adds_its_tunables_once():
  for mode, tunables in (('huge_pages', HUGE), ('one_heap', f'{ONE_HEAP}:{HUGE}')):
    env = host.malloc_env({'PATH': '/bin'}, mode, (2, 36), 'madvise')
    assert env == {'PATH': '/bin', 'GLIBC_TUNABLES': tunables}, mode
    # After the re-exec everything is set: no second re-exec.
    assert host.malloc_env(env, mode, (2, 36), 'madvise') is None, mode
  assert host.malloc_env({}, 'default', (2, 36), 'madvise') is None


def test_the_users_values_win_and_only_missing_ones_are_added():
  env = host.malloc_env({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0'},
                        'one_heap', (2, 39), 'always')
  assert env['GLIBC_TUNABLES'] == ('glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0:'
                                   f'glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={2**46}')
  assert host.malloc_env({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, 'huge_pages', (2, 36),
                         'always') is None


def test_huge_pages_only_where_glibc_and_the_kernel_have_them():
  for version, thp in (((2, 34), 'madvise'), ((2, 36), 'never'), ((2, 36), None)):
    assert host.malloc_env({}, 'one_heap', version, thp) == {'GLIBC_TUNABLES': ONE_HEAP}
    assert host.malloc_env({}, 'huge_pages', version, thp) is None, (version, thp)


def test_nothing_without_glibc_tunables_or_for_an_unknown_mode():
  assert host.malloc_env({}, 'one_heap', None, 'madvise') is None     # not glibc
  assert host.malloc_env({}, 'one_heap', (2, 25), 'madvise') is None  # tunables need glibc 2.26
  # An unknown mode changes nothing here; vit_jax/validation.py reports it (test_validation).
  assert host.malloc_env({}, 'one-heap', (2, 36), 'madvise') is None


def test_reexec_keeps_arguments_and_sets_tunables_on_this_machine():
  code = ('import json, os, sys; from vit_jax import host; host.reexec_with_malloc("one_heap"); '
          'print(json.dumps([os.getpid(), sys.argv[1:], os.environ.get("GLIBC_TUNABLES")]))')
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  proc = subprocess.Popen([sys.executable, '-c', code, 'a b', '--x=1'], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, text=True)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 0
  pid, argv, tunables = json.loads(out)
  assert pid == proc.pid  # execve: the same process, not a child
  assert argv == ['a b', '--x=1']
  # What this machine must get, read independently of host.py: one_heap's three tunables on any
  # glibc with tunables (>= 2.26), plus huge pages on glibc >= 2.35 with the kernel's THP on.
  libc = os.confstr('CS_GNU_LIBC_VERSION') if hasattr(os, 'confstr') else None
  if not libc or not libc.startswith('glibc '):
    assert tunables is None
    return
  version = tuple(int(v) for v in libc.split()[1].split('.')[:2])
  try:
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
      thp_on = '[never]' not in f.read()
  except OSError:
    thp_on = False
  expected = [] if version < (2, 26) else ONE_HEAP.split(':')
  if version >= (2, 35) and thp_on:
    expected.append(HUGE)
  if expected:  # on glibc >= 2.26 the re-exec must have set them
    assert tunables and sorted(tunables.split(':')) == sorted(expected), tunables
  else:
    assert tunables is None
