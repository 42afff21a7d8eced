"""Process-level settings of the host: how glibc's malloc serves XLA:CPU's large buffers.

XLA:CPU allocates each step's temporaries and new outputs with plain malloc (~0.5 GiB a step for
a batch-256 32px model, 2 GiB for the seed-000 model). Left to glibc's defaults, each of those
large blocks is a fresh mmap on 4 KiB pages, unmapped again at the end of the step (seen with
strace: one mmap + munmap of the same size per buffer per step), so the kernel faults in and
zeroes the same memory every step. `config.host_malloc` chooses what run.py does about it:

- 'huge_pages': transparent huge pages for malloc (`glibc.malloc.hugetlb=1`, glibc >= 2.35
  with the kernel's THP mode `madvise` or `always`): 512x fewer page faults and fewer TLB misses
  in every matmul streaming through those buffers.
- 'one_heap': huge pages and one heap that keeps its memory (`glibc.malloc.arena_max=1`,
  `glibc.malloc.mmap_max=0`, `glibc.malloc.trim_threshold=2**46`). Every allocation comes from
  the main heap, which can grow past the 64 MiB limit of glibc's per-thread heaps (above it a
  thread's allocation is always an mmap), and freed blocks are reused instead of handed back to
  the kernel, so the kernel stops zeroing pages every step. The price: the process keeps its peak host memory, fragmentation included.
- 'default': glibc as it is: what 'auto' (the config default) resolves to (vit_jax/hardware.py).

Opt-in only: each mode won on one 2-core VM type and lost on another (on AMD Zen 2 'one_heap'
made cpu_fast 2.4x slower); the figures per machine are in docs/benchmarks.md, and
`benchmarks/train_step.py --host_malloc_modes=default,huge_pages,one_heap` compares them on the
machine at hand.

Tunables are read only when a process starts, so the entry points (run.py, the benchmarks)
re-execute themselves once with them set. Accelerator memory is not affected.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

# (tunable, value, oldest glibc that has it); the tunables framework itself is glibc 2.26.
ONE_HEAP_TUNABLES = (('glibc.malloc.arena_max', '1', (2, 26)),
                     ('glibc.malloc.mmap_max', '0', (2, 26)),
                     ('glibc.malloc.trim_threshold', str(2**46), (2, 26)))
HUGE_PAGE_TUNABLE = ('glibc.malloc.hugetlb', '1', (2, 35))
MALLOC_MODES = ('default', 'huge_pages', 'one_heap')  # config.host_malloc
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


def malloc_env(environ: Mapping[str, str], mode: str, glibc_version: tuple[int, int] | None,
               thp_mode: str | None) -> dict[str, str] | None:
  """The environment to re-execute with for `mode`, or None where there is nothing to add.

  mode: 'huge_pages' (the huge-page tunable), 'one_heap' (the one-heap tunables and the huge-page
  tunable) or 'default' (glibc untouched; also what an unknown mode does here, which config
  validation reports with the other config errors). Adds to GLIBC_TUNABLES each tunable this glibc
  has that is not set already: a value the user set wins, and after the re-exec everything is
  set, so a process re-executes at most once. The huge-page tunable only where the kernel's THP
  is on. None when not glibc (no tunables) or nothing is missing.
  """
  if glibc_version is None or mode not in MALLOC_MODES:
    return None
  wanted = list(ONE_HEAP_TUNABLES) if mode == 'one_heap' else []
  if mode != 'default' and thp_mode in ('always', 'madvise'):
    wanted.append(HUGE_PAGE_TUNABLE)
  tunables = environ.get('GLIBC_TUNABLES', '')
  present = {item.split('=', 1)[0] for item in tunables.split(':') if item}
  missing = [f'{name}={value}' for name, value, since in wanted
             if glibc_version >= since and name not in present]
  if not missing:
    return None
  env = dict(environ)
  env['GLIBC_TUNABLES'] = ':'.join(([tunables] if tunables else []) + missing)
  return env


def reexec_with_malloc(mode: str) -> None:
  """Replaces this process by the same command with `mode`'s malloc tunables set (see above).

  Call it first thing in an entry point, before JAX or TensorFlow start threads. Returns (and
  changes nothing) where `malloc_env` has nothing to add. Same PID, arguments,
  stdin/stdout/stderr: a caller (a sweep, a cluster launcher) sees one process.
  """
  env = malloc_env(os.environ, mode, _glibc_version(), _thp_mode())
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
