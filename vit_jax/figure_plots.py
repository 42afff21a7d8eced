"""The drawing of each per-run figure (matplotlib, Agg): one function per PNG, given its numbers.

Why separate: `vit_jax.figures` restores a run, runs the model and computes the numbers
(`vit_jax.figure_maths`); this module only lays them out (titles, axes, colour scales), so the
look of a figure can change without touching what it shows. Each function writes its figure
to `path` and returns the file's name.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence

import numpy as np

from vit_jax import figure_maths

FIG_DPI = 110
PNG_COLOURS = 256           # palette of every saved figure (see save)
ANNOTATE_CELLS_UP_TO = 20     # write the counts into the confusion cells for <= this many classes
CONFUSION_GAMMA = 0.5         # colour scale exponent of the confusion matrix
CONFUSION_TICK_FONT = 7       # class names on the axes of a > 20-class confusion matrix
LAYER_CURVE_COLUMNS = 5      # panels per row of plot_layer_curves


def pyplot():
  """matplotlib.pyplot on the Agg backend (files only, no display): every figure module's."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save(fig, path: str, dpi: int = FIG_DPI) -> str:
  """Writes `fig` as a 256-colour PNG and closes it; returns the file's name.

  Why a palette: the study's figures are committed again after every finished run, and the
  line plots' antialiasing makes full-colour PNGs ~4x larger for no visible difference (the
  octree palette keeps each line colour within 2/255, tested). Deterministic, so an unchanged figure
  is byte-identical and git stores nothing new.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top  (matplotlib's own dependency)
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=dpi, format='png')
  pyplot().close(fig)
  buffer.seek(0)
  with Image.open(buffer) as image:
    image.convert('RGB').quantize(PNG_COLOURS, method=Image.Quantize.FASTOCTREE,
                                  dither=Image.Dither.NONE).save(path, optimize=True)
  return os.path.basename(path)


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: str, title: str) -> str:
  plt = pyplot()
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
  return save(fig, path)


def plot_tsne(embedded: np.ndarray, labels: np.ndarray, names: Sequence[str], path: str,
              title: str) -> str:
  plt = pyplot()
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
  return save(fig, path)


def plot_patches(image: np.ndarray, patch: int, name: str, path: str, title: str) -> str:
  plt = pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.5), layout='constrained')
  left.imshow(image, interpolation='nearest')
  size = image.shape[0]
  for v in np.arange(patch, size, patch) - 0.5:
    left.axhline(v, color='white', lw=0.8)
    left.axvline(v, color='white', lw=0.8)
  left.set_title(f'input ({size}×{size} px, class "{name}") with the {patch}-px patch grid')
  left.set_xlabel('pixel column')
  left.set_ylabel('pixel row')
  right.imshow(figure_maths.patch_mosaic(image, patch), interpolation='nearest')
  grid = size // patch
  right.set_title(f'{grid}×{grid} = {grid * grid} patches → tokens, read row by row')
  right.set_xticks([])
  right.set_yticks([])
  fig.suptitle(title)
  return save(fig, path)


def plot_filters(components: np.ndarray, ratios: np.ndarray, path: str, title: str) -> str:
  plt = pyplot()
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
  return save(fig, path)


def plot_position_similarity(sim: np.ndarray, grid: tuple[int, int], path: str,
                             title: str) -> str:
  plt = pyplot()
  gh, gw = grid
  fig, ax = plt.subplots(figsize=(9.5, 8.5), layout='constrained')
  image = ax.imshow(figure_maths.similarity_mosaic(sim, grid), cmap='viridis', vmin=-1, vmax=1,
                    interpolation='nearest')
  ax.set_xticks([j * (gw + 1) + (gw - 1) / 2 for j in range(gw)], range(1, gw + 1))
  ax.set_yticks([i * (gh + 1) + (gh - 1) / 2 for i in range(gh)], range(1, gh + 1))
  ax.set_xlabel('input patch column')
  ax.set_ylabel('input patch row')
  fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label='cosine similarity')
  ax.set_title(title, fontsize=11)
  return save(fig, path)


def plot_attention_distance(distance: np.ndarray, uniform: float, path: str, title: str,
                            image_size: int) -> str:
  plt = pyplot()
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
  return save(fig, path)


def plot_rollout(images: np.ndarray, maps: np.ndarray, true: Sequence[str],
                 predicted: Sequence[str], path: str, title: str) -> str:
  """Three rows per image: the input, the rollout map (token resolution) and the input
  weighted by the map (bilinearly upsampled)."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  plt = pyplot()
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
  return save(fig, path)


def plot_layer_curves(curves: dict[str, dict[str, Sequence[float]]], path: str, title: str,
                      ylabel: str, log: bool = True, max_columns: int = LAYER_CURVE_COLUMNS) -> str:
  """A panel per group (e.g. a norm placement), a line per series (e.g. a depth) of per-layer
  values against the 1-based layer index, log scale by default; rows of at most `max_columns`
  panels, so that twenty schemes stay readable. Each panel has its own y range: one scheme
  whose gradients explode (no norm at all) would flatten every other panel."""
  plt = pyplot()
  n = len(curves)
  columns = min(n, max_columns)
  rows = -(-n // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns + 0.8, 3.2 * rows + 0.6),
                           squeeze=False, layout='constrained')
  flat = axes.ravel()
  for ax, (group, series) in zip(flat, curves.items()):
    for label, values in series.items():
      ax.plot(np.arange(1, len(values) + 1), values, marker='.', label=label)
    if log:
      ax.set_yscale('log')
    ax.set_title(group)
    ax.set_xlabel('layer (1 = first block)')
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  for ax in flat[n:]:
    ax.set_visible(False)
  for ax in flat[:n]:
    ax.set_ylabel(ylabel, fontsize=8)
  fig.suptitle(title, fontsize=10)
  return save(fig, path)
