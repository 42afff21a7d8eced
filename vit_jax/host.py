"""Process-level settings of the host: glibc's malloc on transparent huge pages.

XLA:CPU allocates each step's temporaries as one buffer (~0.5 GiB for a batch-256 32px model, 2 GiB
for the seed-000 model) with plain malloc, which glibc serves with a fresh mmap every step (seen
with strace: one mmap + munmap of the same size per step), on 4 KiB pages: page faults and zeroing
every step, and TLB misses in every matmul that streams through it. glibc >= 2.35 can back its
allocations with transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`; the kernel's THP
mode must be `madvise` or `always`, `madvise` being the usual default). Measured on the 2-core CPU
VM (benchmarks/train_step.py, with and without, same shapes): 32px/patch-8/256x6 model 355-360 ->
413-438 img/s, seed000 109 -> 131, seed001 76 -> 98. The tunable is read only when a process
starts, so the entry points (run.py, the benchmarks) re-execute themselves once with it set.
Accelerator memory is not affected; host memory may grow by up to a huge page per malloc arena.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

TUNABLE = 'glibc.malloc.hugetlb=1'
THP_SETTING = '/sys/kernel/mm/transparent_hugepage/enabled'


def _glibc_version() -> tuple[int, int] | None:
  try:
    name, version = os.confstr('CS_GNU_LIBC_VERSION').split()  # 'glibc 2.36'
  except (AttributeError, OSError, ValueError):
    return None  # Not glibc (macOS, musl, Windows).
  if name != 'glibc':
    return None
  major, minor = version.split('.')[:2]
  return int(major), int(minor)


def _thp_mode() -> str | None:
  """The kernel's THP mode ('always', 'madvise' or 'never'), None where it cannot be read."""
  try:
    with open(THP_SETTING) as f:
      text = f.read()  # e.g. 'always [madvise] never'
  except OSError:
    return None
  start, end = text.find('['), text.find(']')
  return text[start + 1:end] if 0 <= start < end else None


def thp_malloc_env(environ: Mapping[str, str], glibc_version: tuple[int, int] | None,
                   thp_mode: str | None) -> dict[str, str] | None:
  """The environment to re-execute with, or None where there is nothing to gain.

  None when: not glibc >= 2.35 (the tunable does not exist), THP is off or unknown, or the
  environment already has a `glibc.malloc.hugetlb` tunable (set by the user, or by the re-exec
  itself, so a process re-executes at most once).
  """
  if glibc_version is None or glibc_version < (2, 35) or thp_mode not in ('always', 'madvise'):
    return None
  tunables = environ.get('GLIBC_TUNABLES', '')
  if 'glibc.malloc.hugetlb' in tunables:
    return None
  env = dict(environ)
  env['GLIBC_TUNABLES'] = f'{tunables}:{TUNABLE}' if tunables else TUNABLE
  return env


def reexec_with_thp_malloc() -> None:
  """Replaces this process by the same command with glibc's THP malloc on (see the docstring).

  Call it first thing in an entry point, before JAX or TensorFlow start threads. Returns (and
  changes nothing) where `thp_malloc_env` says there is nothing to gain. Same PID, arguments,
  stdin/stdout/stderr: a caller (a sweep, a cluster launcher) sees one process.
  """
  env = thp_malloc_env(os.environ, _glibc_version(), _thp_mode())
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
