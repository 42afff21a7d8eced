"""Proof on CPU: a ViT-B/16 file in the official layout loads and fine-tunes for a few steps.

    python benchmarks/finetune_b16_smoke.py [--steps=3] [--batch=8] [--image_size=32]
        [--archive=PATH] [--npz=PATH] [--keep]

Writes a random-valued ViT-B_16.npz with the names and shapes of the released ImageNet-21k file
(86M encoder params + pre_logits 768 + head 21843 classes; ~410 MB; the real file cannot be
downloaded here) unless --npz points at a real one, then follows the fine-tuning path of
configs/finetune_cifar100.py at a CPU-sized resolution: 32px CIFAR-100 (the 14x14 position grid
resampled to 2x2, class token kept), batch 8, SGD momentum 0.9 + clipping, fresh 100-class head,
pre_logits dropped. The TrainState is created as train.py does (jit, replicated), then the
init_from lines (pretrained.load_pretrained with the state's shardings) replace its params.
Batches come from the CIFAR-100 archive (default ../shared/data/cifar-100-binary-train.tar.gz)
through the input pipeline, or are synthetic when it is absent. Prints the time of each phase.
Runs on however many devices JAX sees (one on a plain CPU; B/16 replicated 8 times needs ~10 GB).
"""

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tests'))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--image_size', type=int, default=32)
  parser.add_argument('--archive', default=os.path.join(
      ROOT, '..', 'shared', 'data', 'cifar-100-binary-train.tar.gz'))
  parser.add_argument('--npz', default='', help='a real official file instead of a random one')
  parser.add_argument('--keep', action='store_true', help='keep the written .npz')
  args = parser.parse_args()

  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  import npz_fixtures  # pylint: disable=g-import-not-at-top
  from configs import finetune_cifar100  # pylint: disable=g-import-not-at-top
  from vit_jax import data, models, npz_layout  # pylint: disable=g-import-not-at-top
  from vit_jax import optim, pretrained, train  # pylint: disable=g-import-not-at-top

  times = {}
  t_all = time.time()

  def phase(name, t0):
    times[name] = time.time() - t0
    print(f'{name}: {times[name]:.1f} s', flush=True)

  tmpdir = tempfile.mkdtemp(prefix='b16_smoke_')
  path = args.npz
  if not path:
    t = time.time()
    path = os.path.join(tmpdir, 'ViT-B_16.npz')
    npz_fixtures.write_official_npz(path, npz_fixtures.official_shapes(
        'B', 16, image=224, num_classes=21843, representation_size=768))
    phase(f'write official-layout ViT-B_16.npz ({os.path.getsize(path) / 2**20:.0f} MiB)', t)

  config = finetune_cifar100.get_config()
  config.init_from = path
  config.data.image_size = args.image_size
  config.data.random_resized_crop = False  # cheap 32px batches; the recipe's crop is for 384px
  config.batch_size = args.batch
  config.grad_accum_steps = 1
  config.total_steps = max(args.steps, 2)
  config.warmup_steps = 1
  config.data.archive = args.archive if os.path.exists(args.archive) else ''

  mesh = train.create_mesh()
  image_shape = (args.image_size, args.image_size, 3)
  num_classes = 100
  source = None
  if config.data.archive:
    t = time.time()
    source = data.load_data(config.data)
    num_classes = source.info.num_classes
    phase('read CIFAR-100 archive', t)
  model = models.create_model(config.model, num_classes)
  tx = optim.create_optimizer(config, train.abstract_params(model, image_shape),
                              config.total_steps)

  t = time.time()
  state = train.init_train_state(model, tx, config, image_shape, train.replicated(mesh),
                                 config.seed)
  jax.block_until_ready(state)
  state_sharding = jax.tree.map(lambda x: x.sharding, state)
  phase('create TrainState (jit init, as train.py)', t)

  t = time.time()
  # The init_from lines train.py runs when no checkpoint was restored:
  params = pretrained.load_pretrained(config.init_from, jax.device_get(state.params),
                                      init_head=config.init_head,
                                      shardings=state_sharding.params)
  state = state.replace(params=params, ema_params=None if state.ema_params is None else
                        jax.tree.map(jnp.copy, params))
  jax.block_until_ready(state)
  phase('load_pretrained (14x14 -> %dx%d pos-emb)' % ((args.image_size // 16,) * 2), t)

  file = npz_layout.read_npz(path)
  loaded = npz_layout.flatten(jax.device_get(state.params))
  same = [n for n in loaded if n in file and np.array_equal(loaded[n], file[n])]
  n_params = sum(v.size for v in loaded.values())
  print(f'  {len(same)} of {len(loaded)} arrays equal to the file (all but head, pos-emb); '
        f'{n_params:,} params; head {loaded["head/kernel"].shape}, pos-emb '
        f'{loaded["Transformer/posembed_input/pos_embedding"].shape}')
  assert len(same) == len(loaded) - 3, 'every array but head/{kernel,bias} and pos-emb'

  if source is not None:
    host = data.create_train_iterator(config.data, global_batch_size=args.batch, seed=0,
                                      source=source)
  else:
    rng = np.random.default_rng(0)
    host = ({'image': rng.normal(size=(args.batch, *image_shape)).astype(np.float32),
             'label': rng.integers(0, num_classes, size=args.batch).astype(np.int32)}
            for _ in range(args.steps))
  batches = train.device_batches(host, mesh)
  step_fn = train.jit_train_step(model, tx, config, mesh, state_sharding)
  losses = []
  for i in range(args.steps):
    t = time.time()
    state, metrics = step_fn(state, next(batches))
    losses.append(float(metrics['loss']))
    phase(f'train step {i + 1} (loss {losses[-1]:.4f}, grad norm '
          f'{float(metrics["grad_norm"]):.3f}){" incl. compile" if i == 0 else ""}', t)
  assert all(np.isfinite(losses)), losses
  after = npz_layout.flatten(jax.device_get(state.params))
  moved = sum(not np.array_equal(after[n], loaded[n]) for n in loaded)
  print(f'  {moved} of {len(loaded)} arrays changed by fine-tuning; step {int(state.step)}')
  assert moved > len(loaded) // 2

  if not args.keep and not args.npz:
    os.remove(path)
  os.rmdir(tmpdir) if not os.listdir(tmpdir) else None
  print(f'total: {time.time() - t_all:.1f} s on {jax.device_count()} {jax.devices()[0].platform} '
        f'device(s); B/16 official layout -> load -> {args.steps} fine-tuning steps OK')


if __name__ == '__main__':
  main()
