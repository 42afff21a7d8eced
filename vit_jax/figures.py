"""Per-run figures from a restored checkpoint: what the trained ViT does and what it learned.

Why: accuracy says which placement wins, not how the networks differ. Following the ViT paper
(Dosovitskiy et al. 2021, Fig. 7) and the seeds' notebooks, this restores a run's checkpoint,
runs it over the validation split with the attention weights captured
(`model.apply(..., mutable=['intermediates'])`) and writes into WORKDIR/inspect/:

  confusion_matrix.png          row-normalised confusion matrix with the class names
  confusions.md                 the most confused class pairs, the best / worst classes
  tsne.png                      t-SNE of the pooled features (class-token output for 'token')
  patches.png                   one image and its patches as the model sees them
  embedding_filters.png         principal components of the patch-embedding filters
  position_embedding_similarity.png  cosine similarity of each position embedding to the others
  attention_distance.png        mean attention distance per head and layer
  attention_rollout.png         attention rollout (Abnar & Zuidema 2020) on sample images
  inspect.json                  the numbers (accuracy, attention distances, files)

  python -m vit_jax.figures --workdir=runs/study/pre/seed_0 [--workdir=...] [--checkpoint=best]

The config is the run's own config.json. A relative `data.archive` is resolved from the current
folder; `--archive=PATH` replaces it when the run was trained elsewhere.

This module restores the run, runs the model and writes the files; the numbers behind the
figures (with the definitions of attention distance and rollout) are `vit_jax.figure_maths`, the
drawing of each figure is `vit_jax.figure_plots`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

if __name__ == '__main__' and not __package__:  # run as a file: `vit_jax` from the repo root
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app
from absl import flags
import numpy as np

from vit_jax import figure_maths
from vit_jax import figure_plots

FLAGS = flags.FLAGS
if __name__ == '__main__':  # flags only for the CLI, so importing this module defines none
  flags.DEFINE_multi_string('workdir', None, 'Run folder(s) to inspect (repeat the flag).')
  flags.DEFINE_string('checkpoint', '', '"" or "latest" (newest), "best" (by val top-1) or a '
                      'step number.')
  flags.DEFINE_string('split', 'val', 'Split to run the model on.')
  flags.DEFINE_string('archive', '', 'Replaces config.data.archive (the run was trained with '
                      'another path to the data).')
  flags.DEFINE_integer('max_examples', 0, 'Examples of the split to use; 0 = all.')
  flags.DEFINE_integer('num_tsne', 1000, 'Examples in the t-SNE plot.')
  flags.DEFINE_string('out', '', 'Output folder; "" = WORKDIR/inspect.')

OUT_DIR = 'inspect'
FORWARD_BATCH = 256           # images per forward pass (the attention weights are kept per batch)
NUM_TSNE = 1000
TSNE_PERPLEXITY = 30.0
TSNE_ITERATIONS = 500         # sklearn's minimum is 250; 1000 costs ~4x on 1000 points
TSNE_MIN_POINTS = 5           # fewer features (num_tsne): no t-SNE figure
TSNE_PCA_DIMS = 50            # features are reduced to this many dimensions before t-SNE
NUM_SAMPLE_IMAGES = 8         # attention-rollout examples
PATCH_IMAGE_INDEX = 0         # which image of the split shows its patches
NUM_FILTER_COMPONENTS = 28    # as in the ViT paper's Fig. 7 (left)
TOP_CONFUSIONS = 25
NUM_CLASS_EXTREMES = 10       # best / worst classes listed
RUN_NAME_PARTS = 2            # trailing path parts naming a run in titles ('pre/seed_0')


# ============================================================================ restore


@dataclasses.dataclass
class Restored:
  params: Any          # host (numpy) parameter tree
  model: Any           # models.VisionTransformer
  source: Any          # data.DataSource
  step: int


def load_run_config(workdir: str, archive: str = ''):
  """The run's config.json as a ConfigDict; `archive` replaces data.archive."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: is {workdir} a run folder (python run.py '
                            f'... --workdir={workdir})?')
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if archive:
    config.data.archive = archive
  if config.data.archive and not os.path.exists(config.data.archive):
    raise FileNotFoundError(
        f'The run was trained on data.archive={config.data.archive!r}, which does not exist from '
        f'{os.getcwd()}. Run from the folder the run was started in, or pass --archive=PATH.')
  return config


def restore_params(config, workdir: str, checkpoint_spec: str = '', source=None) -> Restored:
  """The host params of `workdir`'s checkpoint `checkpoint_spec` (see run.py --checkpoint),
  restored by the same path as --mode=eval (train.restore_for_eval)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import train  # pylint: disable=g-import-not-at-top
  state, step, model, source, _ = train.restore_for_eval(config, workdir, checkpoint_spec, source)
  return Restored(jax.device_get(state.params), model, source, int(step))


# ============================================================================ the forward pass


@dataclasses.dataclass
class Geometry:
  """Where the tokens sit on the input image."""
  image_size: int
  patch_pixels: int      # input pixels per token side (patch_size × the hybrid stem's stride)
  grid: tuple[int, int]
  num_prefix: int        # class token(s) before the patches


def geometry(model, image_size: int) -> Geometry:
  from vit_jax import resnet  # pylint: disable=g-import-not-at-top
  stride = (resnet.resnet_stride(model.resnet_layers) if getattr(model, 'resnet_layers', ())
            else 1)
  pixels = model.patch_size * stride
  side = image_size // pixels
  return Geometry(image_size, pixels, (side, side), 1 if model.classifier == 'token' else 0)


@dataclasses.dataclass
class Outputs:
  labels: np.ndarray            # [N]
  logits: np.ndarray            # [N, K]
  pooled: np.ndarray            # [min(N, num_features), F]
  distance: np.ndarray          # [L, H] mean attention distance over the N images
  samples: np.ndarray           # [S, size, size, 3] display images in [0, 1]
  sample_maps: np.ndarray       # [S, gh, gw] rollout maps


def run_model(restored: Restored, config, split: str, geo: Geometry, max_examples: int = 0,
              num_features: int = NUM_TSNE) -> Outputs:
  """One pass over `split` collecting logits, pooled features, attention distance and rollout."""
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  model, info = restored.model, restored.source.info
  distances = figure_maths.patch_distances(geo.grid, geo.patch_pixels).astype(np.float32)

  @jax.jit
  def forward(params, images):
    logits, state = model.apply({'params': params}, images, train=False,
                                mutable=['intermediates'])
    inter = state['intermediates']
    attention = figure_maths.collect_attention(inter)
    return (logits, inter['pooled'][0].reshape(images.shape[0], -1),
            figure_maths.mean_attention_distance(attention, geo.num_prefix, distances),
            figure_maths.rollout_maps(figure_maths.attention_rollout(attention), geo.num_prefix,
                                      geo.grid))

  batches: Iterator[dict] = data.create_eval_iterator(
      config.data, split, global_batch_size=FORWARD_BATCH, source=restored.source)
  mean, std = np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32)
  labels, logits, pooled, dist_sum, samples, maps = [], [], [], 0.0, [], []
  seen = 0
  needed_samples = max(NUM_SAMPLE_IMAGES, PATCH_IMAGE_INDEX + 1)
  for batch in batches:
    real = int(batch['mask'].sum())
    if max_examples:
      real = min(real, max_examples - seen)
    if real <= 0:
      break
    lg, pl, dist, rm = jax.device_get(forward(restored.params, batch['image']))
    labels.append(batch['label'][:real])
    logits.append(lg[:real])
    if sum(len(p) for p in pooled) < num_features:
      pooled.append(pl[:real])
    dist_sum = dist_sum + dist[:, :real].sum(1)
    if len(samples) < needed_samples:
      take = min(needed_samples - len(samples), real)
      shown = np.clip((batch['image'][:take] * std + mean) / 255.0, 0.0, 1.0)
      samples.extend(shown)
      maps.extend(rm[:take])
    seen += real
  if not seen:
    raise ValueError(f'Split {split!r} is empty; nothing to inspect.')
  features = np.concatenate(pooled)[:num_features] if pooled else np.zeros((0, 1), np.float32)
  return Outputs(np.concatenate(labels), np.concatenate(logits), features, dist_sum / seen,
                 np.stack(samples), np.stack(maps))


# ============================================================================ one run


def _tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
  from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  x = features.astype(np.float64)
  if x.shape[1] > TSNE_PCA_DIMS and len(x) > TSNE_PCA_DIMS:
    x = PCA(TSNE_PCA_DIMS, random_state=seed).fit_transform(x)
  perplexity = min(TSNE_PERPLEXITY, max(1.0, (len(x) - 1) / 3))
  return TSNE(2, perplexity=perplexity, init='pca', learning_rate='auto',
              max_iter=TSNE_ITERATIONS, random_state=seed).fit_transform(x)


def confusions_markdown(cm: np.ndarray, names: Sequence[str], title: str) -> str:
  per_class = np.diag(cm) / np.maximum(cm.sum(1), 1)
  totals = cm.sum(1)
  lines = [f'# {title}', '', f'{int(cm.sum())} images, top-1 {100 * np.trace(cm) / cm.sum():.2f}%.',
           '', f'## The {TOP_CONFUSIONS} most confused pairs', '',
           '| true class | predicted as | count | % of the true class |', '|---|---|---|---|']
  for t, p, count in figure_maths.top_confusions(cm, TOP_CONFUSIONS):
    lines.append(f'| {names[t]} | {names[p]} | {count} | {100 * count / max(totals[t], 1):.1f} |')
  order = np.argsort(per_class, kind='stable')
  for heading, idx in (('worst', order[:NUM_CLASS_EXTREMES]),
                       ('best', order[::-1][:NUM_CLASS_EXTREMES])):
    lines += ['', f'## The {NUM_CLASS_EXTREMES} {heading} classes', '',
              '| class | top-1 (%) | images |', '|---|---|---|']
    lines += [f'| {names[i]} | {100 * per_class[i]:.1f} | {totals[i]} |' for i in idx]
  return '\n'.join(lines) + '\n'


def inspect_run(workdir: str, *, checkpoint_spec: str = '', split: str = 'val',
                archive: str = '', max_examples: int = 0, num_tsne: int = NUM_TSNE,
                out_dir: str = '', source=None) -> dict:
  """Restores `workdir`'s checkpoint and writes every figure; returns the inspect.json summary
  plus the DataSource under 'source' (pass it back for the next run on the same data)."""
  config = load_run_config(workdir, archive)
  if source is not None:
    try:
      source.check(config.data)
    except ValueError:
      source = None
  restored = restore_params(config, workdir, checkpoint_spec, source)
  run_name = '/'.join(os.path.normpath(os.path.abspath(workdir)).split(os.sep)[-RUN_NAME_PARTS:])
  out_dir = out_dir or os.path.join(workdir, OUT_DIR)
  summary = {'workdir': workdir, **inspect_restored(
      restored, config, out_dir, run_name, split=split, max_examples=max_examples,
      num_tsne=num_tsne)}
  with open(os.path.join(out_dir, 'inspect.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  return {**summary, 'source': restored.source}


def inspect_restored(restored: Restored, config, out_dir: str, run_name: str, *,
                     split: str = 'val', max_examples: int = 0,
                     num_tsne: int = NUM_TSNE) -> dict:
  """Every figure for given parameters (from a checkpoint or not); returns the summary."""
  from vit_jax import layers  # pylint: disable=g-import-not-at-top
  model, info = restored.model, restored.source.info
  names = list(info.class_names) or [str(i) for i in range(info.num_classes)]
  geo = geometry(model, config.data.image_size)
  os.makedirs(out_dir, exist_ok=True)
  tag = f'{model.norm_placement} — {run_name} @ step {restored.step}'

  outputs = run_model(restored, config, split, geo, max_examples, num_tsne)
  predictions = outputs.logits.argmax(-1)
  top1 = float(np.mean(predictions == outputs.labels))
  n = len(outputs.labels)
  figures = []
  path = lambda name: os.path.join(out_dir, name)

  cm = figure_maths.confusion_matrix(outputs.labels, predictions, info.num_classes)
  figures.append(figure_plots.plot_confusion(
      cm, names, path('confusion_matrix.png'),
      f'Confusion matrix (row-normalised) — {tag}\n{split}: {n} images, top-1 {100 * top1:.2f}%'))
  with open(path('confusions.md'), 'w') as f:
    f.write(confusions_markdown(cm, names, f'Confusions — {tag} ({split})'))

  feature_name = {'token': 'class-token output', 'gap': 'mean-pooled tokens',
                  'flatten': 'flattened tokens'}[model.classifier]
  if len(outputs.pooled) >= TSNE_MIN_POINTS:
    embedded = _tsne(outputs.pooled)
    m = len(embedded)
    figures.append(figure_plots.plot_tsne(
        embedded, outputs.labels[:m], names, path('tsne.png'),
        f't-SNE of the {feature_name} (encoder output, before the head) — {tag}\n'
        f'{m} {split} images, colour and label = true class'))

  idx = PATCH_IMAGE_INDEX
  figures.append(figure_plots.plot_patches(outputs.samples[idx], geo.patch_pixels,
                                           names[outputs.labels[idx]], path('patches.png'),
                                           f'How the model reads an image — {tag}'))

  kernel = np.asarray(restored.params['embedding']['kernel'])
  components, ratios = figure_maths.embedding_components(kernel, NUM_FILTER_COMPONENTS)
  figures.append(figure_plots.plot_filters(
      components, ratios, path('embedding_filters.png'),
      f'Patch-embedding filters: first {len(components)} principal components '
      f'({"×".join(map(str, kernel.shape[:3]))}, {kernel.shape[3]} filters)\n{tag}'))

  if model.posemb == 'learn':
    table = np.asarray(restored.params['Transformer']['posembed_input']['pos_embedding'])[0]
    what = 'learned position embeddings'
  else:
    table = layers.posemb_sincos_2d(*geo.grid, model.hidden_size)[0]
    what = 'FIXED sin-cos 2D position table (posemb=sincos2d, not learned)'
  table = table[-geo.grid[0] * geo.grid[1]:]  # drop the class token's position
  figures.append(figure_plots.plot_position_similarity(
      figure_maths.cosine_similarity(table), geo.grid, path('position_embedding_similarity.png'),
      f'Cosine similarity of the {what}\n'
      f'tile (row, col): that patch position vs every other — {tag}'))

  uniform = figure_maths.uniform_attention_distance(
      figure_maths.patch_distances(geo.grid, geo.patch_pixels))
  figures.append(figure_plots.plot_attention_distance(
      outputs.distance, uniform, path('attention_distance.png'),
      f'Mean attention distance per head\n{tag}\n{n} {split} images, patch-to-patch attention',
      geo.image_size))

  s = min(NUM_SAMPLE_IMAGES, len(outputs.samples))
  rollout_of = ('class token' if geo.num_prefix else
                f'mean over patch queries (classifier={model.classifier}, no class token)')
  figures.append(figure_plots.plot_rollout(
      outputs.samples[:s], outputs.sample_maps[:s], [names[i] for i in outputs.labels[:s]],
      [names[i] for i in predictions[:s]], path('attention_rollout.png'),
      f'Attention rollout ({rollout_of}) — {tag}'))

  return {'step': restored.step, 'split': split, 'num_examples': n, 'top1': top1,
          'norm_placement': model.norm_placement,
          'mean_attention_distance': outputs.distance.tolist(),
          'uniform_attention_distance': uniform,
          'embedding_explained_variance': ratios.tolist(),
          'figures': figures + ['confusions.md']}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments {argv[1:]}; use --workdir=DIR (repeatable).')
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required: python -m vit_jax.figures --workdir=RUN_DIR')
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')  # tf.data only
  logging.set_verbosity(logging.ERROR)  # orbax logs every read-only restore
  std_logging.getLogger('vit_jax').setLevel(std_logging.INFO)
  from vit_jax import checkpoint, data  # pylint: disable=g-import-not-at-top
  source = None
  failed = 0
  for workdir in FLAGS.workdir:
    try:
      result = inspect_run(workdir, checkpoint_spec=FLAGS.checkpoint, split=FLAGS.split,
                           archive=FLAGS.archive, max_examples=FLAGS.max_examples,
                           num_tsne=FLAGS.num_tsne, out_dir=FLAGS.out, source=source)
    except (FileNotFoundError, checkpoint.CheckpointError, data.DatasetError) as e:
      print(f'error: {workdir}: {e}', file=sys.stderr)
      failed += 1
      continue
    source = result.pop('source')
    print(f'{workdir}: step {result["step"]}, {result["split"]} top-1 '
          f'{100 * result["top1"]:.2f}% on {result["num_examples"]} images → '
          f'{FLAGS.out or os.path.join(workdir, OUT_DIR)}', flush=True)
  if failed:
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
