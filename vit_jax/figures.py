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

Definitions. Mean attention distance: for each query patch, the distance in input pixels between
its centre and every key patch's centre, weighted by the attention weight, averaged over query
patches and images. Class-token rows/columns are left out and the patch-to-patch weights are
renormalised to sum to 1 (so the number is a distance between image regions). Rollout: per
layer, the head-averaged attention A is mixed with the residual identity, A' = (A + I) / 2,
rows renormalised, and the layers multiplied, R = A'_L ... A'_1; the map of an image is R's
class-token row over the patches ('token' classifier) or, without a class token ('gap',
'flatten'), R's rows averaged over the patch queries.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

if __name__ == '__main__' and not __package__:  # run as a file: `vit_jax` from the repo root
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app
from absl import flags
import numpy as np

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
ROLLOUT_RESIDUAL = 0.5        # A' = (1 - r) A + r I
FIG_DPI = 110
ANNOTATE_CELLS_UP_TO = 20     # write the counts into the confusion cells for <= this many classes
CONFUSION_GAMMA = 0.5         # colour scale exponent of the confusion matrix
CONFUSION_TICK_FONT = 7       # class names on the axes of a > 20-class confusion matrix
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


# ============================================================================ pure computations


def patch_centres(grid: tuple[int, int], patch_pixels: float) -> np.ndarray:
  """[gh*gw, 2] (row, col) centres in input pixels, row-major like the token order."""
  rows, cols = np.mgrid[:grid[0], :grid[1]]
  return (np.stack([rows.ravel(), cols.ravel()], axis=1) + 0.5) * patch_pixels


def patch_distances(grid: tuple[int, int], patch_pixels: float) -> np.ndarray:
  """[P, P] Euclidean distances between patch centres, in input pixels."""
  c = patch_centres(grid, patch_pixels)
  return np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))


def mean_attention_distance(attention, num_prefix: int, distances):
  """attention [L, B, H, T, T] -> [L, B, H]: attention-weighted query-key distance (see module
  docstring), averaged over the query patches. Works on numpy and jax arrays."""
  xp = _array_module(attention)
  a = attention[..., num_prefix:, num_prefix:]
  a = a / xp.maximum(a.sum(-1, keepdims=True), 1e-12)
  return (a * distances).sum(-1).mean(-1)


def uniform_attention_distance(distances: np.ndarray) -> float:
  """The mean attention distance of uniform attention: the reference line of the plot."""
  return float(np.mean(distances))


def attention_rollout(attention, residual: float = ROLLOUT_RESIDUAL):
  """attention [L, B, H, T, T] -> [B, T, T]: R = A'_L ... A'_1, A' = (1-r) mean_h A + r I."""
  xp = _array_module(attention)
  num_layers, _, _, tokens, _ = attention.shape
  eye = xp.eye(tokens, dtype=attention.dtype)
  rollout = None
  for layer in range(num_layers):
    a = (1 - residual) * attention[layer].mean(1) + residual * eye
    a = a / a.sum(-1, keepdims=True)
    rollout = a if rollout is None else a @ rollout
  return rollout


def rollout_maps(rollout, num_prefix: int, grid: tuple[int, int]):
  """[B, T, T] -> [B, gh, gw]: class-token row over the patches, or (no class token) the
  patch-query rows averaged; each map scaled to max 1."""
  if num_prefix:
    m = rollout[:, 0, num_prefix:]
  else:
    m = rollout[:, :, :].mean(1)
  m = m / m.max(-1, keepdims=True)
  return m.reshape(m.shape[0], *grid)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """[true, predicted] counts."""
  flat = np.asarray(labels, np.int64) * num_classes + np.asarray(predictions, np.int64)
  return np.bincount(flat, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def top_confusions(cm: np.ndarray, n: int) -> list[tuple[int, int, int]]:
  """The n largest off-diagonal cells as (true, predicted, count), largest first."""
  off = cm.astype(np.int64).copy()
  np.fill_diagonal(off, 0)
  order = np.argsort(-off, axis=None, kind='stable')[:n]
  return [(int(i // cm.shape[1]), int(i % cm.shape[1]), int(off.flat[i])) for i in order
          if off.flat[i] > 0]


def embedding_components(kernel: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Patch-embedding kernel [p, p, c, D] -> (the first n principal components of the D filters
  as [n, p, p, c], their explained-variance ratios [n])."""
  p1, p2, c, d = kernel.shape
  filters = kernel.reshape(p1 * p2 * c, d).T  # [D, p*p*c]: one row per filter
  filters = filters - filters.mean(0, keepdims=True)
  _, s, vt = np.linalg.svd(filters, full_matrices=False)
  n = min(n, vt.shape[0], d - 1)  # centred, D filters span at most D - 1 directions
  var = s ** 2
  return vt[:n].reshape(n, p1, p2, c), (var / max(var.sum(), 1e-30))[:n]


def cosine_similarity(x: np.ndarray) -> np.ndarray:
  """[P, D] -> [P, P]."""
  x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  return x @ x.T


def similarity_mosaic(sim: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """[P, P] -> one image: tile (i, j) is patch (i, j)'s similarity to every patch, tiles
  separated by a NaN line (drawn blank)."""
  gh, gw = grid
  out = np.full((gh * (gh + 1) - 1, gw * (gw + 1) - 1), np.nan)
  for i in range(gh):
    for j in range(gw):
      out[i * (gh + 1):i * (gh + 1) + gh, j * (gw + 1):j * (gw + 1) + gw] = (
          sim[i * gw + j].reshape(gh, gw))
  return out


def patch_mosaic(image: np.ndarray, patch: int, gap: int = 1) -> np.ndarray:
  """[S, S, 3] in [0, 1] -> the patches laid out with `gap` white pixels between them."""
  gh, gw = image.shape[0] // patch, image.shape[1] // patch
  out = np.ones((gh * (patch + gap) - gap, gw * (patch + gap) - gap, 3))
  for i in range(gh):
    for j in range(gw):
      out[i * (patch + gap):i * (patch + gap) + patch, j * (patch + gap):j * (patch + gap) +
          patch] = image[i * patch:(i + 1) * patch, j * patch:(j + 1) * patch]
  return out


def _array_module(x):
  return np if isinstance(x, np.ndarray) else __import__('jax.numpy', fromlist=['numpy'])


def collect_attention(intermediates) -> Any:
  """The sown attention weights of every layer, stacked [L, B, H, T, T].

  Unscanned blocks sow under `encoderblock_{i}` (ordered by i); a scanned stack sows one
  [L, ...] array under `encoderblock`.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flat = traverse_util.flatten_dict(intermediates)
  found = []
  for path, value in flat.items():
    if path[-1] != 'attention_weights':
      continue
    value = value[0] if isinstance(value, tuple) else value
    block = next((p for p in path if str(p).startswith('encoderblock')), '')
    m = re.search(r'_(\d+)$', str(block))
    if m is None:  # scanned: already [L, B, H, T, T]
      return value
    found.append((int(m.group(1)), value))
  if not found:
    raise ValueError('The model sowed no attention weights; is this a ViT from vit_jax.models?')
  return jnp.stack([v for _, v in sorted(found, key=lambda kv: kv[0])])


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
  distances = patch_distances(geo.grid, geo.patch_pixels).astype(np.float32)

  @jax.jit
  def forward(params, images):
    logits, state = model.apply({'params': params}, images, train=False,
                                mutable=['intermediates'])
    inter = state['intermediates']
    attention = collect_attention(inter)
    return (logits, inter['pooled'][0].reshape(images.shape[0], -1),
            mean_attention_distance(attention, geo.num_prefix, distances),
            rollout_maps(attention_rollout(attention), geo.num_prefix, geo.grid))

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


# ============================================================================ figures


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path: str) -> str:
  fig.savefig(path, dpi=FIG_DPI)  # constrained layout: no second 'tight' rendering pass
  _pyplot().close(fig)
  return os.path.basename(path)


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: str, title: str) -> str:
  plt = _pyplot()
  k = len(names)
  size = max(7.0, 0.2 * k + 3)
  fig, ax = plt.subplots(figsize=(size + 1.5, size), layout='constrained')
  from matplotlib import colors  # pylint: disable=g-import-not-at-top
  rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
  # Square-root colour scale up to the largest cell: the few-percent confusions of a weak model
  # stay visible next to its diagonal.
  norm = colors.PowerNorm(CONFUSION_GAMMA, vmin=0, vmax=max(float(rates.max()), 1e-9))
  image = ax.imshow(rates, cmap='Blues', norm=norm, interpolation='nearest')
  font = 10 if k <= 20 else CONFUSION_TICK_FONT
  ax.set_xticks(range(k), names, rotation=90, fontsize=font)
  ax.set_yticks(range(k), names, fontsize=font)
  ax.set_xlabel('predicted class', fontsize=12)
  ax.set_ylabel('true class', fontsize=12)
  if k <= ANNOTATE_CELLS_UP_TO:
    for i in range(k):
      for j in range(k):
        if cm[i, j]:
          ax.text(j, i, str(cm[i, j]), ha='center', va='center', fontsize=8,
                  color='white' if rates[i, j] > 0.5 * rates.max() else 'black')
  else:
    ax.set_xticks(np.arange(-0.5, k, 10), minor=True)
    ax.set_yticks(np.arange(-0.5, k, 10), minor=True)
    ax.grid(which='minor', color='0.85', linewidth=0.5)
    ax.tick_params(which='minor', length=0)
  fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, shrink=0.5,
               label='fraction of the true class (square-root scale)')
  ax.set_title(title, fontsize=13)
  return _save(fig, path)


def plot_tsne(embedded: np.ndarray, labels: np.ndarray, names: Sequence[str], path: str,
              title: str) -> str:
  plt = _pyplot()
  k = len(names)
  fig, ax = plt.subplots(figsize=(12, 11), layout='constrained')
  cmap = plt.get_cmap('tab10' if k <= 10 else 'tab20' if k <= 20 else 'nipy_spectral')
  colors = cmap(np.arange(k) % cmap.N) if k <= 20 else cmap(np.linspace(0, 1, k))
  ax.scatter(embedded[:, 0], embedded[:, 1], c=colors[labels], s=9, alpha=0.75, linewidths=0)
  for c in np.unique(labels):
    centre = np.median(embedded[labels == c], axis=0)
    ax.annotate(names[c], centre, fontsize=7 if k > 20 else 10, ha='center', va='center',
                bbox=dict(boxstyle='round,pad=0.1', fc='white', ec=colors[c], alpha=0.7, lw=0.8))
  ax.set_xlabel('t-SNE dimension 1')
  ax.set_ylabel('t-SNE dimension 2')
  ax.set_title(title, fontsize=12)
  return _save(fig, path)


def plot_patches(image: np.ndarray, patch: int, name: str, path: str, title: str) -> str:
  plt = _pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.5), layout='constrained')
  left.imshow(image, interpolation='nearest')
  size = image.shape[0]
  for v in np.arange(patch, size, patch) - 0.5:
    left.axhline(v, color='white', lw=0.8)
    left.axvline(v, color='white', lw=0.8)
  left.set_title(f'input ({size}×{size} px, class "{name}") with the {patch}-px patch grid')
  left.set_xlabel('pixel column')
  left.set_ylabel('pixel row')
  right.imshow(patch_mosaic(image, patch), interpolation='nearest')
  grid = size // patch
  right.set_title(f'{grid}×{grid} = {grid * grid} patches → tokens, read row by row')
  right.set_xticks([])
  right.set_yticks([])
  fig.suptitle(title)
  return _save(fig, path)


def plot_filters(components: np.ndarray, ratios: np.ndarray, path: str, title: str) -> str:
  plt = _pyplot()
  n = len(components)
  cols = min(7, n)
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.9 * rows + 0.8), squeeze=False,
                           layout='constrained')
  for ax in axes.ravel():
    ax.axis('off')
  for i, (comp, ratio) in enumerate(zip(components, ratios)):
    lo, hi = comp.min(), comp.max()
    shown = (comp - lo) / max(hi - lo, 1e-12)
    ax = axes.ravel()[i]
    ax.imshow(shown if shown.shape[-1] == 3 else shown.mean(-1), interpolation='nearest',
              cmap=None if shown.shape[-1] == 3 else 'gray')
    ax.set_title(f'PC {i + 1}: {100 * ratio:.1f}%', fontsize=8)
  fig.suptitle(title, fontsize=11)
  return _save(fig, path)


def plot_position_similarity(sim: np.ndarray, grid: tuple[int, int], path: str,
                             title: str) -> str:
  plt = _pyplot()
  gh, gw = grid
  fig, ax = plt.subplots(figsize=(9.5, 8.5), layout='constrained')
  image = ax.imshow(similarity_mosaic(sim, grid), cmap='viridis', vmin=-1, vmax=1,
                    interpolation='nearest')
  ax.set_xticks([j * (gw + 1) + (gw - 1) / 2 for j in range(gw)], range(1, gw + 1))
  ax.set_yticks([i * (gh + 1) + (gh - 1) / 2 for i in range(gh)], range(1, gh + 1))
  ax.set_xlabel('input patch column')
  ax.set_ylabel('input patch row')
  fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label='cosine similarity')
  ax.set_title(title, fontsize=11)
  return _save(fig, path)


def plot_attention_distance(distance: np.ndarray, uniform: float, path: str, title: str,
                            image_size: int) -> str:
  plt = _pyplot()
  num_layers, num_heads = distance.shape
  fig, ax = plt.subplots(figsize=(max(7.0, 0.8 * num_layers + 3), 5.5), layout='constrained')
  cmap = plt.get_cmap('tab10' if num_heads <= 10 else 'tab20')
  for h in range(num_heads):
    ax.scatter(np.arange(1, num_layers + 1), distance[:, h], color=cmap(h % cmap.N), s=30,
               label=f'head {h + 1}', zorder=3)
  ax.plot(np.arange(1, num_layers + 1), distance.mean(1), color='black', lw=1,
          label='mean over heads')
  ax.axhline(uniform, color='gray', ls='--', lw=1, label='uniform attention')
  ax.set_xticks(range(1, num_layers + 1))
  ax.set_xlabel('network depth (layer)')
  ax.set_ylabel(f'mean attention distance (pixels of the {image_size}×{image_size} input)')
  ax.set_ylim(0, max(distance.max(), uniform) * 1.15)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, ncol=2 if num_heads > 6 else 1, loc='lower right')
  ax.set_title(title, fontsize=11)
  return _save(fig, path)


def plot_rollout(images: np.ndarray, maps: np.ndarray, true: Sequence[str],
                 predicted: Sequence[str], path: str, title: str) -> str:
  """Three rows per image: the input, the rollout map (token resolution) and the input
  weighted by the map (bilinearly upsampled)."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  plt = _pyplot()
  n = len(images)
  fig, axes = plt.subplots(3, n, figsize=(2.1 * n, 7.2), squeeze=False, layout='constrained')
  size = images.shape[1]
  for i in range(n):
    axes[0, i].imshow(images[i], interpolation='nearest')
    color = 'green' if true[i] == predicted[i] else 'red'
    axes[0, i].set_title(f'true: {true[i]}\npred: {predicted[i]}', fontsize=8, color=color)
    span = maps[i].max() - maps[i].min()
    shown = (maps[i] - maps[i].min()) / (span if span > 0 else 1.0)  # contrast per image
    heat = axes[1, i].imshow(shown, cmap='inferno', vmin=0, vmax=1, interpolation='nearest')
    mask = np.clip(ndimage.zoom(shown, size / shown.shape[0], order=1), 0, 1)
    axes[2, i].imshow(images[i] * mask[..., None], interpolation='nearest')
    for ax in axes[:, i]:
      ax.set_xticks([])
      ax.set_yticks([])
  axes[0, 0].set_ylabel('input', fontsize=9)
  axes[1, 0].set_ylabel('rollout (per token)', fontsize=9)
  axes[2, 0].set_ylabel('input × rollout', fontsize=9)
  fig.colorbar(heat, ax=axes[1, :].tolist(), fraction=0.015, pad=0.01,
               label='rollout, min–max scaled per image')
  fig.suptitle(title + '\ngreen title: correct prediction, red: wrong', fontsize=11)
  return _save(fig, path)


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
  for t, p, count in top_confusions(cm, TOP_CONFUSIONS):
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
  from vit_jax import models  # pylint: disable=g-import-not-at-top
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

  cm = confusion_matrix(outputs.labels, predictions, info.num_classes)
  figures.append(plot_confusion(
      cm, names, path('confusion_matrix.png'),
      f'Confusion matrix (row-normalised) — {tag}\n{split}: {n} images, top-1 {100 * top1:.2f}%'))
  with open(path('confusions.md'), 'w') as f:
    f.write(confusions_markdown(cm, names, f'Confusions — {tag} ({split})'))

  feature_name = {'token': 'class-token output', 'gap': 'mean-pooled tokens',
                  'flatten': 'flattened tokens'}[model.classifier]
  if len(outputs.pooled) >= TSNE_MIN_POINTS:
    embedded = _tsne(outputs.pooled)
    m = len(embedded)
    figures.append(plot_tsne(
        embedded, outputs.labels[:m], names, path('tsne.png'),
        f't-SNE of the {feature_name} (encoder output, before the head) — {tag}\n'
        f'{m} {split} images, colour and label = true class'))

  idx = PATCH_IMAGE_INDEX
  figures.append(plot_patches(outputs.samples[idx], geo.patch_pixels,
                              names[outputs.labels[idx]], path('patches.png'),
                              f'How the model reads an image — {tag}'))

  kernel = np.asarray(restored.params['embedding']['kernel'])
  components, ratios = embedding_components(kernel, NUM_FILTER_COMPONENTS)
  figures.append(plot_filters(
      components, ratios, path('embedding_filters.png'),
      f'Patch-embedding filters: first {len(components)} principal components '
      f'({"×".join(map(str, kernel.shape[:3]))}, {kernel.shape[3]} filters)\n{tag}'))

  if model.posemb == 'learn':
    table = np.asarray(restored.params['Transformer']['posembed_input']['pos_embedding'])[0]
    what = 'learned position embeddings'
  else:
    table = models.posemb_sincos_2d(*geo.grid, model.hidden_size)[0]
    what = 'FIXED sin-cos 2D position table (posemb=sincos2d, not learned)'
  table = table[-geo.grid[0] * geo.grid[1]:]  # drop the class token's position
  figures.append(plot_position_similarity(
      cosine_similarity(table), geo.grid, path('position_embedding_similarity.png'),
      f'Cosine similarity of the {what}\n'
      f'tile (row, col): that patch position vs every other — {tag}'))

  uniform = uniform_attention_distance(patch_distances(geo.grid, geo.patch_pixels))
  figures.append(plot_attention_distance(
      outputs.distance, uniform, path('attention_distance.png'),
      f'Mean attention distance per head\n{tag}\n{n} {split} images, patch-to-patch attention',
      geo.image_size))

  s = min(NUM_SAMPLE_IMAGES, len(outputs.samples))
  rollout_of = ('class token' if geo.num_prefix else
                f'mean over patch queries (classifier={model.classifier}, no class token)')
  figures.append(plot_rollout(
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
