"""The platform overlay: hardware settings that an experiment config leaves at 'auto'.

Why a table apart from the experiments: these fields change the speed of a run (at most the
float rounding), never the experiment, and the best value depends on the machine: the host
malloc tunables that made one CPU VM faster made another 2.4x slower (docs/benchmarks.md). So an
experiment file reads the same on every machine and sets none of them; the entry points
(run.py, train.train_and_evaluate, the benchmarks) call `resolve` once, which replaces each
'auto' by the value for the backend JAX runs on. A value given on the command line
(`--config.host_malloc=one_heap`) is not 'auto' and wins.

A setting is on by default only where it was measured to win on every machine kind seen:

  host_malloc               'default' (glibc untouched). 'huge_pages' / 'one_heap' won on the
                            Intel VM and lost on AMD Zen 2; opt in and check with
                            `python benchmarks/train_step.py --host_malloc_modes=default,huge_pages,one_heap`.
  concurrent_microbatches   (0 = auto) 1. 2 parts won for the seed configs on the 2-core Intel
                            (+10%) and Zen 3 (+15%) VMs, never measured on Zen 2 or for other
                            shapes; opt in with --config.concurrent_microbatches=2.
  model.attention_impl      'folded' on CPU where head_dim >= hidden_size (the folded form is
                            the same function in fewer FLOPs there: an arithmetic property, not
                            a host tuning) and the norm spec puts nothing inside the attention
                            (QK-norm, Sub-LN, head scale), else 'xla'.
  model.kernels             'cpu' on CPU (vit_jax/cpu_kernels.py), 'reference' elsewhere.
"""

from __future__ import annotations

from typing import Any

from vit_jax import norms  # plain Python: no JAX before run.py sets the host up

AUTO = 'auto'
HOST_MALLOC_DEFAULT = 'default'
CONCURRENT_MICROBATCHES_AUTO = 0  # an int field: 0 stands for 'auto'


def host_malloc(value: str) -> str:
  """config.host_malloc with 'auto' resolved; needs no JAX (run.py applies it before JAX starts)."""
  return HOST_MALLOC_DEFAULT if value == AUTO else value


def head_dim(model_config: Any) -> int:
  """The attention's per-head width: model.head_dim, or hidden_size / num_heads when unset."""
  explicit = model_config.get('head_dim')
  return explicit if explicit else model_config['hidden_size'] // model_config['num_heads']


def _norms_inside_attention(model_config: Any) -> bool:
  """Whether the norm spec puts a norm or scale inside the attention (which cannot fold then)."""
  try:
    spec = norms.parse_spec(model_config.get('norm_placement', 'pre'),
                            model_config.get('num_layers', 1),
                            model_config.get('norm_type', 'layernorm'))
  except ValueError:
    return False  # validation reports it
  return spec.inside_attention


def kernels(value: str, backend: str) -> str:
  """model.kernels with 'auto' resolved: the CPU kernels on the CPU backend, where they were
  measured; the plain Flax reference elsewhere."""
  if value != AUTO:
    return value
  return 'cpu' if backend == 'cpu' else 'reference'


def model_settings(model_config: Any, backend: str) -> dict[str, Any]:
  """The 'auto' model fields of `model_config` resolved for `backend` ('cpu', 'gpu', 'tpu')."""
  on_cpu = backend == 'cpu'
  resolved = {}
  if model_config.get('attention_impl') == AUTO:
    folds = (on_cpu and head_dim(model_config) >= model_config['hidden_size'] and
             not _norms_inside_attention(model_config))
    resolved['attention_impl'] = 'folded' if folds else 'xla'
  if model_config.get('kernels') == AUTO:
    resolved['kernels'] = kernels(AUTO, backend)
  return resolved


def resolve(config: Any, backend: str | None = None) -> Any:
  """A copy of `config` with every 'auto' hardware field set for `backend` (default: JAX's)."""
  if backend is None:
    import jax  # pylint: disable=g-import-not-at-top
    backend = jax.default_backend()
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.host_malloc = host_malloc(config.host_malloc)
    if config.concurrent_microbatches == CONCURRENT_MICROBATCHES_AUTO:
      config.concurrent_microbatches = 1
    config.model.update(model_settings(config.model, backend))
  return config


def cpu_model() -> str:
  """'AMD EPYC (family 25 model 1, AVX2)': the CPU a figure or a run came from (VM types vary)."""
  fields = {}
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    return 'CPU model unknown'
  simd = 'AVX-512' if 'avx512f' in fields.get('flags', '').split() else 'AVX2'
  return (f"{fields.get('model name', 'CPU')} (family {fields.get('cpu family', '?')} model "
          f"{fields.get('model', '?')}, {simd})")
