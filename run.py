"""The one entry point: train a config, or evaluate a checkpoint of it.

  python run.py --config=configs/addnorm.py --workdir=runs/addnorm            # train (resumes)
  python run.py --config=configs/addnorm.py --workdir=runs/addnorm --mode=eval  # evaluate
  python run.py --config=configs/cpu_quick.py --workdir=runs/q --config.total_steps=100

Any config value can be overridden: --config.model.norm_placement=post, --config.data.archive=...
"""

import json
import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py).',
                                 lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, metrics.jsonl and config.json.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'train (resumes if checkpoints exist) or '
                  'eval (restores a checkpoint and evaluates config.data.eval_split).')
flags.DEFINE_string('checkpoint', '', 'For --mode=eval: "" or "latest" (newest), "best" (by val '
                    'top-1), a step number, or a path WORKDIR/checkpoints/<step>.')
flags.mark_flags_as_required(['config', 'workdir'])

FLAGS = flags.FLAGS


def main(argv):
  del argv
  from vit_jax import host  # pylint: disable=g-import-not-at-top
  from vit_jax import hardware  # pylint: disable=g-import-not-at-top  (no JAX import)
  # On Linux/glibc: re-executes once with the malloc tunables of config.host_malloc (opt-in, see
  # vit_jax/hardware.py). Before JAX/TF start any thread; returns if there is nothing to add.
  host.reexec_with_malloc(hardware.host_malloc(FLAGS.config.host_malloc))
  # tf.data's 224px augmentation runs 1.5-1.7x faster with TF's BFC CPU allocator (measured in
  # benchmarks/input_pipeline.py); it must be set before TensorFlow initializes.
  os.environ.setdefault('TF_CPU_ALLOCATOR_USE_BFC', 'true')
  # Imported here so that `--help` and flag errors come back fast (jax/tf imports take seconds).
  from vit_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  from vit_jax import divergence  # pylint: disable=g-import-not-at-top
  from vit_jax import train  # pylint: disable=g-import-not-at-top
  from vit_jax import validation  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  tf.config.set_visible_devices([], 'GPU')  # tf.data only; keep the accelerators for JAX
  # Our progress lines at INFO; libraries (orbax, tf) only from WARNING up.
  logging.set_verbosity(logging.WARNING)
  std_logging.getLogger('vit_jax').setLevel(std_logging.INFO)
  config = FLAGS.config
  try:
    validation.validate_workdir(FLAGS.workdir)
    if FLAGS.mode == 'train':
      result = train.train_and_evaluate(config, FLAGS.workdir)
      val = result['val']
      summary = (f'step {result["step"]}/{result["total_steps"]} in {result["wall_time"]:.0f} s'
                 + (f'; val top-1 {100 * val["top1"]:.2f}%, top-5 {100 * val["top5"]:.2f}% '
                    f'on {val["num_examples"]} examples' if val else ''))
    else:
      record = train.evaluate_checkpoint(config, FLAGS.workdir, FLAGS.checkpoint)
      summary = (f'{record["split"]} @ step {record["step"]}: loss {record["loss"]:.4f}, '
                 f'top-1 {100 * record["top1"]:.2f}%, top-5 {100 * record["top5"]:.2f}% on '
                 f'{record["num_examples"]} examples')
      print(json.dumps(record))
  except divergence.Diverged as e:  # a result, not a crash: the sweep records it and goes on
    print(f'diverged: {e}', file=sys.stderr)
    _exit_now(divergence.EXIT_CODE)
  except (validation.ConfigError, data.DatasetError, checkpoint.CheckpointError,
          FloatingPointError) as e:
    # Written for the user (what is wrong, how to fix it): no traceback needed.
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'{FLAGS.mode} done: {summary}')
  _exit_now(0)


def _exit_now(code: int) -> None:
  """Exits without the interpreter's teardown. Everything is written by now (the checkpoint
  manager waited for its saves, the logs are closed), but tearing down tf.data's iterators waits
  for their autotuning thread, which sleeps out its optimisation period first (up to a minute;
  27 s measured after a SIGTERM at step 250 of cpu_quick): a preempted job must exit at once."""
  from vit_jax import distributed  # pylint: disable=g-import-not-at-top  (imported by now)
  distributed.shutdown()  # with several processes: leave together (process 0 is the coordinator)
  sys.stdout.flush()
  sys.stderr.flush()
  std_logging.shutdown()
  os._exit(code)


if __name__ == '__main__':
  app.run(main)
