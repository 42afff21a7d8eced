"""Train-step throughput, MFU and memory of our jitted step, against the seeds' Keras model and timm.

    python benchmarks/train_step.py [--configs=seed000,seed001,vit_s16,vit_b16,cifar_p4,cpu_fast]
        [--dtypes=float32,bfloat16] [--peers=keras,timm] [--steps=5] [--warmup=2]
        [--batch_size=N] [--modes=default] [--set=model.remat=True ...]

Prints one table row per (config, dtype, mode): our images/sec (best step of `--steps` after
`--warmup` untimed steps), model FLOPs utilisation, estimated peak device memory, compile time,
the minimal step of the same model (benchmarks/reference_step.py; `--reference=0` skips it) and
ours/minimal, then each peer's images/sec on the same shapes and our/peer ratio. Everything runs in this one
invocation on whatever device JAX sees (CPU here; GPU/TPU when present); the peers run in
subprocesses (`benchmarks/peers.py`), one per row, so their thread pools do not share a process
with XLA's.

What is timed (ours): `vit_jax.train.jit_train_step` exactly as `train.py` builds it (forward,
loss, backward, AdamW update, metrics; state donated), on a fixed random device batch of the
config's input shape. The input pipeline is NOT included (see benchmarks/input_pipeline.py); for
the seed configs the images enter at the model's input size (`data.image_size`: 224 / 72 px),
because the upsample from 32 px happens in the host pipeline, not in the model. The peers take
images at the same size, augmentation excluded (see benchmarks/peers.py).

Host malloc: glibc as it is by default, as run.py's default; `--host_malloc=huge_pages` or
`one_heap` re-executes the script with those tunables (vit_jax/host.py; the peers inherit the
environment), and `--host_malloc_modes=default,huge_pages,one_heap` runs the rows once per mode
and round in fresh processes, alternating, and prints the comparison for the machine at hand.

Timing: wall-clock per step (block_until_ready on the step's outputs), best of `--steps`; the
process CPU time per image is printed too: on a shared machine, cores x CPU-s/img is the
load-independent cost, and the load average is printed at the start and the end.

MFU: model FLOPs / step time / measured peak. Model FLOPs are counted analytically from the
shapes (matmuls and attention only: patch embedding, q/k/v/out projections, QK^T and AV, MLP,
head) x 3 for forward + backward (the usual convention; the input gradient of the patch embedding
is not actually computed). The count is the standard attention's even where the config sets
`model.attention_impl='folded'` (the seed configs): that is the same function computed in fewer
FLOPs (vit_jax/models.py), so there MFU counts the model's FLOPs, not the executed ones, as it
should for comparing with peers that compute the same model the standard way; XLA's column shows
what is executed. The peak is measured in the same run: the best of several
`jnp.dot(a, b)` on N x N matrices (N = 2048 and 4096) in the row's dtype. XLA's own count
(`compiled.cost_analysis()['flops']`, which includes the optimizer and elementwise work) is
printed alongside as a check.

Memory: on GPU/TPU `device.memory_stats()['peak_bytes_in_use']` after the row (the process-wide
peak so far, so rows are run smallest-first where it matters); on CPU memory_stats() is None, so
the column is XLA's compiled estimate, arguments + outputs - donated aliases + temporaries
(`compiled.memory_analysis()`), marked "(est)".

Configs (`--configs`):
  seed000   configs/baseline.py: seed 000's model (pre-LN, as the Keras code), 224 px / patch 32,
            with the platform overlay's settings (vit_jax/hardware.py: on CPU the folded
            attention; `--set=model.attention_impl=xla` for the standard one,
            `--set=concurrent_microbatches=2` for two concurrent parts)
  seed001   configs/keras_tutorial.py: 72 px / patch 6, 4 layers, batch 64, the same settings
  vit_s16   ViT-S/16 at 224, token head, 100 classes
  vit_b16   ViT-B/16 at 224, token head, 100 classes
  cifar_p4  a 32 px / patch 4 CIFAR ViT (configs/common.py's model: 192 wide, 6 layers, 3 heads, MLP 768)
  cpu_fast  configs/cpu_fast.py: the fast CPU recipe's model (32 px / patch 4, 128 x 6 layers, batch 128)
  cpu_quick configs/cpu_quick.py: the smoke-test model (32 px / patch 8, 128 x 4 layers, batch 128)
On CPU, ViT-S/16 and ViT-B/16 run at batch 32 / 8 (printed in the table); elsewhere at the
config's batch size. `--batch_size` overrides every row.

Modes (`--modes`, comma-separated; rows for each): default (the config as is), remat
(`model.remat=True`), scan (`model.scan=True`), scan+remat.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from vit_jax import hardware  # pylint: disable=g-import-not-at-top  (plain Python: cheap before the re-exec)
from vit_jax import host  # pylint: disable=g-import-not-at-top  (stdlib only: cheap before the re-exec)

CONFIGS = ('seed000', 'seed001', 'vit_s16', 'vit_b16', 'cifar_p4', 'cpu_fast', 'cpu_quick')
MODES = {'default': {}, 'remat': {'model.remat': True}, 'scan': {'model.scan': True},
         'scan+remat': {'model.scan': True, 'model.remat': True}}
CPU_BATCH = {'vit_s16': 32, 'vit_b16': 8}  # on CPU only; elsewhere the config's batch size
NUM_CLASSES = 100


def load_config(name: str):
  """The ml_collections config of a benchmark row."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top

  def from_file(fname):
    spec = importlib.util.spec_from_file_location(fname, os.path.join(ROOT, 'configs', fname + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()

  if name == 'seed000':
    return from_file('baseline')
  if name == 'seed001':
    return from_file('keras_tutorial')
  if name in ('cpu_fast', 'cpu_quick'):
    return from_file(name)
  if name == 'cifar_p4':  # the usual small CIFAR ViT: 32px, patch 4 (64 tokens), 192 x 6 layers
    config = common.get_config()  # its model defaults are exactly this model
    config.model.classifier = 'token'
    config.batch_size = 256
    return config
  if name in ('vit_s16', 'vit_b16'):
    config = common.get_config()
    config.model.variant = 'S/16' if name == 'vit_s16' else 'B/16'
    config.model.classifier = 'token'
    config.data.image_size = 224
    config.batch_size = 256
    config.weight_decay = 1e-4
    return config
  raise ValueError(f'Unknown config {name!r}; valid: {", ".join(CONFIGS)}')


def set_value(config, dotted: str, value: Any) -> None:
  *path, leaf = dotted.split('.')
  node = config
  for p in path:
    node = node[p]
  old = node[leaf]
  if isinstance(value, str) and not isinstance(old, str):
    import ast  # pylint: disable=g-import-not-at-top
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
  node[leaf] = value


# ----------------------------------------------------------------------------- FLOPs
def model_shape(config) -> dict:
  """The model's shapes after `variant` expansion (what the FLOP count and the peers need)."""
  from vit_jax import variants  # pylint: disable=g-import-not-at-top
  fields = dict(config.model)
  if fields.get('variant'):
    fields.update(variants.parse_variant(fields['variant']))
  # The model sees `data.image_size` pixels: resizing is done by the input pipeline.
  size = config.data.image_size
  p = fields['patch_size']
  hidden, heads = fields['hidden_size'], fields['num_heads']
  head_dim = fields.get('head_dim') or hidden // heads
  mlp = fields['mlp_dim']
  mlp = (mlp,) if isinstance(mlp, int) else tuple(mlp)
  return dict(image_size=size, patch_size=p, hidden_size=hidden,
              num_layers=fields['num_layers'], num_heads=heads, head_dim=head_dim, mlp_dims=mlp,
              mlp_activate_output=bool(fields['mlp_activate_output']),
              classifier=fields['classifier'], head_hidden_sizes=tuple(fields['head_hidden_sizes']),
              representation_size=fields.get('representation_size'),
              dropout_rate=fields['dropout_rate'],
              attention_dropout_rate=fields['attention_dropout_rate'],
              head_dropout_rate=fields['head_dropout_rate'])


def model_flops_per_example(s: dict) -> float:
  """Forward matmul + attention FLOPs of one example (2 per multiply-add)."""
  grid = s['image_size'] // s['patch_size']
  n = grid * grid
  t = n + (1 if s['classifier'] == 'token' else 0)
  d, w = s['hidden_size'], s['num_heads'] * s['head_dim']
  f = 2 * n * s['patch_size']**2 * 3 * d                      # patch embedding
  per_layer = 2 * t * d * 3 * w + 2 * 2 * t * t * w + 2 * t * w * d  # qkv, QK^T + AV, out
  widths = (d,) + s['mlp_dims'] + (d,)
  per_layer += sum(2 * t * a * b for a, b in zip(widths[:-1], widths[1:]))
  f += s['num_layers'] * per_layer
  width = n * d if s['classifier'] == 'flatten' else d
  for units in ((s['representation_size'],) if s['representation_size'] else ()) + \
      s['head_hidden_sizes'] + (NUM_CLASSES,):
    f += 2 * width * units
    width = units
  return float(f)


# ----------------------------------------------------------------------------- device facts
def load_average() -> str:
  try:
    return ' / '.join(f'{x:.2f}' for x in os.getloadavg())
  except OSError:
    return 'n/a'


def measure_peak(dtype: str, sizes=(2048, 4096), repeats: int = 3) -> float:
  """Best FLOP/s of a jitted N x N matmul in `dtype` (the MFU denominator)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  best = 0.0
  f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=a.dtype))
  for n in sizes:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    f(a, b).block_until_ready()
    for _ in range(repeats):
      t0 = time.perf_counter()
      f(a, b).block_until_ready()
      dt = time.perf_counter() - t0
      best = max(best, 2 * n**3 / dt)
      if dt > 5:  # slow dtype on this device (e.g. bf16 without native CPU support)
        break
  return best


def device_summary() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  d = jax.devices()[0]
  tunables = os.environ.get('GLIBC_TUNABLES') or 'unset'
  return (f'{jax.device_count()} x {d.device_kind} ({d.platform}); {os.cpu_count()} CPUs; '
          f'GLIBC_TUNABLES={tunables} (ours and the peers)')


# ----------------------------------------------------------------------------- ours
@dataclasses.dataclass
class Result:
  img_per_sec: float
  step_times: list
  cpu_per_img: float
  compile_s: float
  memory_bytes: float
  memory_kind: str
  xla_flops: float
  reference_img_per_sec: float = float('nan')  # the minimal step of the same model


@dataclasses.dataclass
class Compiled:
  """One config's train step, compiled, with its state and a fixed device batch."""
  step: Any
  state: Any
  batch: Any
  batch_size: int
  compile_s: float
  memory_estimate: float
  xla_flops: float
  model: Any = None        # what built it: the diagnostics benchmark builds its pass from them
  tx: Any = None
  config: Any = None
  mesh: Any = None
  state_sharding: Any = None


def compile_ours(config, batch_size: int) -> Compiled:
  """`vit_jax.train.jit_train_step` exactly as train.py builds it, compiled for a random batch."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vit_jax import hardware, models, optim, train  # pylint: disable=g-import-not-at-top

  config = hardware.resolve(config)  # the hardware fields left at 'auto', as run.py does
  config.batch_size = batch_size
  config.total_steps = max(config.total_steps, 1000)
  model = models.create_model(config.model, NUM_CLASSES)
  mesh = train.create_mesh()
  image_shape = (config.data.image_size, config.data.image_size, 3)
  tx = optim.create_optimizer(config, train.abstract_params(model, image_shape),
                              config.total_steps)
  state = train.init_train_state(model, tx, config, image_shape, train.replicated(mesh),
                                 config.seed)
  state_sharding = jax.tree.map(lambda x: x.sharding, state)
  step = train.jit_train_step(model, tx, config, mesh, state_sharding)
  rng = np.random.default_rng(0)
  host = {'image': rng.normal(size=(batch_size, *image_shape)).astype(np.float32),
          'label': rng.integers(0, NUM_CLASSES, size=batch_size).astype(np.int32)}
  batch = next(train.device_batches(iter([host]), mesh))

  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  try:
    xla_flops = float(compiled.cost_analysis()['flops'])
  except Exception:  # pylint: disable=broad-except
    xla_flops = float('nan')
  mem = compiled.memory_analysis()
  est = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes +
         mem.temp_size_in_bytes) if mem is not None else float('nan')
  return Compiled(compiled, state, batch, batch_size, compile_s, float(est), xla_flops, model, tx,
                  config, mesh, state_sharding)


def run_steps(c: Compiled, steps: int, warmup: int) -> tuple[list[float], list[float]]:
  """Wall and process-CPU seconds of each of `steps` steps after `warmup` untimed ones (the
  state carries over between calls, so a compiled step can be timed again later)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  state, metrics = c.state, None
  for _ in range(warmup):
    state, metrics = c.step(state, c.batch)
  jax.block_until_ready(state)
  times, cpus = [], []
  for _ in range(steps):
    t0, c0 = time.perf_counter(), time.process_time()
    state, metrics = c.step(state, c.batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
    cpus.append(time.process_time() - c0)
  c.state = state
  if metrics is not None and not np.isfinite(float(metrics['loss'])):
    raise FloatingPointError(f'non-finite loss {float(metrics["loss"])} in the benchmark step')
  return times, cpus


def time_ours(config, batch_size: int, steps: int, warmup: int, reference: bool = False) -> Result:
  """Our step; with `reference`, also the minimal step of the same model (reference_step.py),
  in alternating rounds (ours, reference, ours, reference) so that drift hits both alike."""
  import jax  # pylint: disable=g-import-not-at-top
  import reference_step  # pylint: disable=g-import-not-at-top  (benchmarks/reference_step.py)
  c = compile_ours(config, batch_size)
  if reference:
    minimal, minimal_state, _ = reference_step.compile_reference(c.model, c.state.params, c.batch)
  times, cpus, ref_times = [], [], []
  for _ in range(2 if reference else 1):
    round_times, round_cpus = run_steps(c, steps, warmup)
    times, cpus = times + round_times, cpus + round_cpus
    if reference:
      round_times, minimal_state = reference_step.run_reference(minimal, minimal_state, c.batch,
                                                                steps, warmup)
      ref_times += round_times
  stats = jax.devices()[0].memory_stats()
  if stats and 'peak_bytes_in_use' in stats:
    memory, kind = float(stats['peak_bytes_in_use']), 'peak'
  else:
    memory, kind = c.memory_estimate, 'est'
  return Result(batch_size / min(times), times, min(cpus) / batch_size, c.compile_s, memory, kind,
                c.xla_flops, batch_size / min(ref_times) if ref_times else float('nan'))


# ----------------------------------------------------------------------------- peers
def peer_spec(s: dict) -> dict:
  return dict(image_size=s['image_size'], patch_size=s['patch_size'], hidden_size=s['hidden_size'],
              num_layers=s['num_layers'], num_heads=s['num_heads'], head_dim=s['head_dim'],
              mlp_dim=s['mlp_dims'][0], mlp_activate_output=s['mlp_activate_output'],
              classifier=s['classifier'], head_hidden_sizes=list(s['head_hidden_sizes']),
              dropout_rate=s['dropout_rate'], attention_dropout_rate=s['attention_dropout_rate'],
              head_dropout_rate=s['head_dropout_rate'])


def time_peer(framework: str, spec: dict, batch_size: int, dtype: str, steps: int, warmup: int,
              timeout: float) -> dict:
  """Runs benchmarks/peers.py in a subprocess; returns its JSON result or {'error': ...}."""
  cmd = [sys.executable, os.path.join(ROOT, 'benchmarks', 'peers.py'), f'--framework={framework}',
         f'--spec={json.dumps(spec)}', f'--batch_size={batch_size}', f'--dtype={dtype}',
         f'--steps={steps}', f'--warmup={warmup}']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONWARNINGS='ignore')
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
  except subprocess.TimeoutExpired:
    return {'error': f'timeout after {timeout:.0f}s'}
  for line in reversed(out.stdout.splitlines()):
    if line.startswith('{'):
      return json.loads(line)
  tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ['no output']
  return {'error': tail[0][:120]}


# ----------------------------------------------------------------------------- main
def fmt_bytes(b: float) -> str:
  if b != b:  # nan
    return 'n/a'
  return f'{b / 2**30:.2f} GiB' if b >= 2**30 else f'{b / 2**20:.0f} MiB'


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default=','.join(CONFIGS))
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--peers', default='keras,timm', help="comma-separated; '' for none")
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--batch_size', type=int, default=0, help='0 = per-config default')
  parser.add_argument('--modes', default='default', help=f'comma-separated: {", ".join(MODES)}')
  parser.add_argument('--set', action='append', default=[],
                      help='config override for every row, e.g. --set=model.attention_impl=xla')
  parser.add_argument('--reference', type=int, default=1,
                      help='1: also time the minimal step of each row\'s model '
                      '(benchmarks/reference_step.py) and print ours/reference; 0: skip it')
  parser.add_argument('--peer_timeout', type=float, default=900.0)
  parser.add_argument('--host_malloc', choices=host.MALLOC_MODES, default='default',
                      help="re-execute with these glibc malloc tunables, as run.py's config.host_malloc "
                      '(vit_jax/host.py); the peers inherit the same environment')
  parser.add_argument('--host_malloc_modes', default='',
                      help='comma-separated malloc modes to compare, e.g. default,huge_pages,one_heap: '
                      'the benchmark runs once per mode and round in a fresh process (tunables are '
                      'read at start), alternating, and prints img/s per mode')
  parser.add_argument('--rounds', type=int, default=2, help='rounds of --host_malloc_modes')
  parser.add_argument('--rows_json', action='store_true', help='print the rows as one JSON line')
  args = parser.parse_args(argv)
  if args.host_malloc_modes:
    return compare_malloc_modes(args, argv)
  if argv is None:  # re-exec repeats the command line, not a caller's argv
    host.reexec_with_malloc(args.host_malloc)

  import jax  # pylint: disable=g-import-not-at-top
  platform = jax.devices()[0].platform
  print(f'device: {device_summary()}; jax {jax.__version__}; load average at start: '
        f'{load_average()}', flush=True)
  dtypes = [d for d in args.dtypes.split(',') if d]
  peers = [p for p in args.peers.split(',') if p]
  peaks = {}
  for dtype in dtypes:
    peaks[dtype] = measure_peak(dtype)
    print(f'measured matmul peak ({dtype}): {peaks[dtype] / 1e9:,.1f} GFLOP/s', flush=True)

  rows = []
  for name in args.configs.split(','):
    for mode in args.modes.split(','):
      for dtype in dtypes:
        config = load_config(name)
        for k, v in MODES[mode].items():
          set_value(config, k, v)
        for item in args.set:
          k, v = item.split('=', 1)
          set_value(config, k, v)
        set_value(config, 'model.dtype', dtype)
        batch = args.batch_size or (CPU_BATCH.get(name, config.batch_size) if platform == 'cpu'
                                    else config.batch_size)
        shape = model_shape(config)
        flops = 3 * model_flops_per_example(shape) * batch
        try:
          r = time_ours(config, batch, args.steps, args.warmup, reference=bool(args.reference))
        except Exception as e:  # pylint: disable=broad-except
          print(f'{name} {mode} {dtype}: FAILED {type(e).__name__}: {e}', flush=True)
          continue
        step_s = batch / r.img_per_sec
        row = dict(config=name, mode=mode, dtype=dtype, batch=batch, ours=r.img_per_sec,
                   mfu=flops / step_s / peaks[dtype], tflops=flops / step_s / 1e12,
                   cpu_ms=1e3 * r.cpu_per_img, memory=f'{fmt_bytes(r.memory_bytes)} ({r.memory_kind})',
                   compile_s=r.compile_s, model_gflop=flops / 1e9, xla_gflop=r.xla_flops / 1e9,
                   reference=r.reference_img_per_sec)
        print(f'{name} {mode} {dtype} batch {batch}: {r.img_per_sec:.1f} img/s (steps '
              f'{", ".join(f"{t:.3f}" for t in r.step_times)} s), {row["cpu_ms"]:.1f} CPU-ms/img, '
              f'MFU {100 * row["mfu"]:.1f}%, '
              f'{row["memory"]}, compile {r.compile_s:.1f} s' + (
                  f'; minimal step {row["reference"]:.1f} img/s, ours/minimal '
                  f'{r.img_per_sec / row["reference"]:.2f}' if args.reference else ''), flush=True)
        for peer in peers:
          res = time_peer(peer, peer_spec(shape), batch, dtype, args.steps, args.warmup,
                          args.peer_timeout)
          row[peer] = res
          print(f'  {peer}: {res}', flush=True)
        rows.append(row)

  print(f'\nload average at end: {load_average()}')
  head = ('| config | mode | dtype | batch | ours img/s | MFU | model GFLOP/step (XLA) | '
          'CPU ms/img | peak memory | compile s |')
  sep = '|---|---|---|---|---|---|---|---|---|---|'
  if args.reference:
    head += ' minimal step img/s | ours/minimal |'
    sep += '---|---|'
  for peer in peers:
    head += f' {peer} img/s | ours/{peer} |'
    sep += '---|---|'
  print(head)
  print(sep)
  for row in rows:
    line = (f'| {row["config"]} | {row["mode"]} | {row["dtype"]} | {row["batch"]} | '
            f'{row["ours"]:.1f} | {100 * row["mfu"]:.1f}% | {row["model_gflop"]:.1f} '
            f'({row["xla_gflop"]:.1f}) | {row["cpu_ms"]:.1f} | {row["memory"]} | '
            f'{row["compile_s"]:.0f} |')
    if args.reference:
      line += f' {row["reference"]:.1f} | {row["ours"] / row["reference"]:.2f} |'
    for peer in peers:
      res = row.get(peer, {})
      if 'img_per_sec' in res:
        line += f' {res["img_per_sec"]:.1f} | {row["ours"] / res["img_per_sec"]:.2f}x |'
      else:
        line += f' {res.get("error", "n/a")} | - |'
    print(line)
  print('\npeak: ' + ', '.join(f'{d} {p / 1e9:,.1f} GFLOP/s' for d, p in peaks.items()) +
        '; MFU = 3 x analytic forward FLOPs / step time / peak.')
  if args.rows_json:
    print(ROWS_PREFIX + json.dumps([{k: v for k, v in r.items() if k not in peers} for r in rows]))
  return 0


ROWS_PREFIX = 'ROWS '


def compare_malloc_modes(args, argv) -> int:
  """Runs this benchmark once per (round, mode) in a fresh process with that mode's malloc
  tunables (the modes alternate, so a drift of the machine's speed hits every mode alike) and
  prints each config's img/s per mode: which mode wins on the machine at hand."""
  modes = [m for m in args.host_malloc_modes.split(',') if m]
  unknown = [m for m in modes if m not in host.MALLOC_MODES]
  if unknown:
    raise SystemExit(f'--host_malloc_modes: {unknown} not in {host.MALLOC_MODES}')
  base = [a for a in (sys.argv[1:] if argv is None else argv)
          if not a.startswith(('--host_malloc', '--rounds', '--peers', '--rows_json'))]
  results = {}  # (config, dtype, mode) -> [img/s per round]
  for r in range(args.rounds):
    for mode in modes:
      cmd = [sys.executable, os.path.abspath(__file__), *base, f'--host_malloc={mode}',
             '--peers=', '--rows_json']
      out = subprocess.run(cmd, capture_output=True, text=True)
      rows = [json.loads(line[len(ROWS_PREFIX):]) for line in out.stdout.splitlines()
              if line.startswith(ROWS_PREFIX)]
      if out.returncode or not rows:
        print(f'round {r + 1} {mode}: FAILED\n{out.stderr[-2000:]}', flush=True)
        continue
      for row in rows[0]:
        results.setdefault((row['config'], row['dtype'], mode), []).append(row['ours'])
        print(f'round {r + 1} {mode:10s} {row["config"]} {row["dtype"]}: {row["ours"]:.1f} img/s',
              flush=True)
  print(f'\n{cpu_model()}; img/s per round (median); host_malloc modes alternated')
  print('| config | dtype | ' + ' | '.join(modes) + ' |')
  print('|---|---|' + '---|' * len(modes))
  for config, dtype in sorted({(c, d) for c, d, _ in results}):
    cells = []
    for mode in modes:
      values = results.get((config, dtype, mode), [])
      med = statistics.median(values) if values else float('nan')
      cells.append(' / '.join(f'{v:.1f}' for v in values) + f' ({med:.1f})')
    print(f'| {config} | {dtype} | ' + ' | '.join(cells) + ' |')
  return 0


cpu_model = hardware.cpu_model  # the benchmarks' figures name their CPU


if __name__ == '__main__':
  sys.exit(main())
