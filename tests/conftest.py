"""Shared test setup.

Runs from the repository root so `configs` and `vit_jax` import, and forces the CPU backend with 8
host devices (before jax is imported anywhere) so that the data-parallel code paths are exercised
on CPU, whatever accelerator is installed.
"""

import os
import sys

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
# The suite's tolerances and device counts are those of the CPU: with a GPU wheel installed, JAX
# would otherwise pick the accelerator.
os.environ['JAX_PLATFORMS'] = 'cpu'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Many tests compile the same tiny programs: a persistent compilation cache shared by the
# test processes (pytest-xdist workers) saves most of the compile time.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    os.environ.get('TMPDIR', '/tmp'), 'vit_jax_test_compilation_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
