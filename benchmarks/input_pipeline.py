"""Training input pipeline throughput (images/sec) on this machine, per recipe.

    python benchmarks/input_pipeline.py [--archive=PATH] [--batches=30] [--allocator=bfc|default]
        [--step_steps=3]

For the recipes that belong to a benchmarked model (seed000_224 -> seed 000's model,
seed001_72 -> seed 001's, cifar_32 -> configs/cpu_fast.py's) it then times that model's jitted
train step on the same machine (benchmarks/train_step.py's `time_ours`, after the pipeline so the
two do not share the cores) and prints pipeline img/s / step img/s: the pipeline keeps up while
the ratio is > 1, and the goal is >= 5. `--step_steps=0` skips the step.

Reads the real CIFAR-100 train archive (default ../shared/data/cifar-100-binary-train.tar.gz,
relative to the repository root; the script says so and exits 0 when it is absent). Times only the
host pipeline (decode is done once up front, as in training); the train step is not included.

--allocator=bfc sets TF_CPU_ALLOCATOR_USE_BFC=true before TensorFlow allocates anything: TF's
default CPU allocator returns large buffers to the OS, and re-faulting a 154 MB [256,224,224,3]
float32 batch costs ~0.1-0.2 s per full-size op on a 2-core VM.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from vit_jax import host  # pylint: disable=g-import-not-at-top  (stdlib only: cheap before the re-exec)

RECIPES = {
    # name: (description, data-config overrides)
    'seed000_224': ('seed 000: 32->224, flip, rotation 0.02, zoom 0.2',
                    dict(image_size=224, flip=True, rotation=0.02, zoom=0.2)),
    'cifar_32': ('32px: crop_padding 4 + flip', dict(image_size=32, crop_padding=4, flip=True)),
    'cifar_32_ra': ('32px: crop_padding 4 + flip + RandAugment(2, 10)',
                    dict(image_size=32, crop_padding=4, flip=True, randaugment_layers=2,
                         randaugment_magnitude=10)),
    'seed001_72': ('seed 001: 32->72, flip, rotation 0.02, zoom 0.2',
                   dict(image_size=72, flip=True, rotation=0.02, zoom=0.2)),
    'rrc_224': ('32->224 inception crop + flip', dict(image_size=224, random_resized_crop=True)),
}


# Recipe -> the benchmarks/train_step.py config whose input it is.
RECIPE_MODEL = {'seed000_224': 'seed000', 'seed001_72': 'seed001', 'cifar_32': 'cpu_fast'}


def step_images_per_sec(recipe: str, steps: int) -> float:
  """Images/sec of the train step of the recipe's model (best of `steps`, one untimed step)."""
  import train_step  # pylint: disable=g-import-not-at-top  (benchmarks/train_step.py)
  config = train_step.load_config(RECIPE_MODEL[recipe])
  return train_step.time_ours(config, config.batch_size, steps=steps, warmup=1).img_per_sec


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--archive', default=os.path.join(
      ROOT, '..', 'shared', 'data', 'cifar-100-binary-train.tar.gz'))
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--batches', type=int, default=30, help='timed batches per recipe')
  parser.add_argument('--warmup', type=int, default=5, help='untimed batches per recipe')
  parser.add_argument('--recipes', default='seed000_224,seed001_72,cifar_32,cifar_32_ra',
                      help=f'comma-separated subset of {",".join(RECIPES)}')
  parser.add_argument('--allocator', choices=('bfc', 'default'), default='bfc')
  parser.add_argument('--step_steps', type=int, default=3,
                      help='timed train steps per model (0 = do not time the train step)')
  parser.add_argument('--host_malloc', choices=host.MALLOC_MODES, default='huge_pages',
                      help="glibc malloc tunables, as run.py's config.host_malloc (vit_jax/host.py)")
  args = parser.parse_args()
  host.reexec_with_malloc(args.host_malloc)  # before TF or JAX start threads

  if not os.path.exists(args.archive):
    print(f'Archive {os.path.normpath(args.archive)} not found: nothing to benchmark. Pass '
          '--archive=PATH to an official CIFAR-100 archive (.tar.gz or folder).')
    return 0
  if args.allocator == 'bfc':
    os.environ['TF_CPU_ALLOCATOR_USE_BFC'] = 'true'  # Before TF's first allocation.
  from configs import common  # pylint: disable=g-import-not-at-top
  from vit_jax import data  # pylint: disable=g-import-not-at-top

  base = common.get_data_config()
  base.archive = args.archive
  t0 = time.perf_counter()
  source = data.load_data(base)
  print(f'load_data (read + decode + val split + stats): {time.perf_counter() - t0:.1f} s; '
        f'splits {source.info.split_sizes}; {os.cpu_count()} CPUs; allocator {args.allocator}')

  rows = []
  for name in args.recipes.split(','):
    desc, overrides = RECIPES[name]
    config = common.get_data_config()
    config.update(base)
    config.update(overrides)
    it = data.create_train_iterator(
        config, global_batch_size=args.batch_size, seed=0, process_index=0, process_count=1,
        source=source)
    for _ in range(args.warmup):
      batch = next(it)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.batches):
      batch = next(it)
    n = args.batches * args.batch_size
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows.append((name, desc, tuple(batch['image'].shape), n / wall, n / cpu))
    del it

  load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
  print(f'\nBatch {args.batch_size}, {args.batches} batches after {args.warmup} warm-up; '
        f'1-min load average at the end {load:.1f} on {os.cpu_count()} CPUs.')
  print('img/s: wall clock. img/CPU-s: images per CPU-second used by this process (all threads);'
        ' it does not depend on other load and, times the free cores, bounds img/s elsewhere.')
  step_rates = {}
  if args.step_steps > 0:
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    for name, *_ in rows:
      if name in RECIPE_MODEL:
        step_rates[name] = step_images_per_sec(name, args.step_steps)
  print('\n| recipe | what | batch shape | pipeline img/s | img/CPU-s | train step img/s | '
        'pipeline / step |')
  print('|---|---|---|---|---|---|---|')
  for name, desc, shape, rate, per_cpu in rows:
    step = step_rates.get(name)
    step_cols = (f'{step:,.1f} ({RECIPE_MODEL[name]}) | {rate / step:,.1f}x' if step
                 else '— | —')
    print(f'| {name} | {desc} | {shape} | {rate:,.0f} | {per_cpu:,.0f} | {step_cols} |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
