"""The numbers behind the per-run figures: attention distance and rollout, the confusion matrix,
the patch-embedding components, position-embedding similarity and the image mosaics.

Why separate: these are pure functions of arrays (numpy, and jax inside the jitted forward pass
of `vit_jax.figures`), checked by hand in tests/test_figure_maths.py without a model, a
checkpoint or matplotlib. `vit_jax.figures` runs the model and calls them;
`vit_jax.figure_plots` draws their results.

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

import re
from typing import Any

import numpy as np

ROLLOUT_RESIDUAL = 0.5        # A' = (1 - r) A + r I


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
