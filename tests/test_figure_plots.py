"""The drawing of the per-run figures: each plot writes a PNG from hand-made numbers, no model.

The figures of real (tiny) runs, and their sizes, are checked in tests/test_figures.py.
"""

import numpy as np

from vit_jax import figure_plots

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def test_every_plot_writes_a_png_and_returns_its_name(tmp_path):
  rng = np.random.default_rng(0)
  names = ['cat', 'dog']
  plots = {
      'confusion.png': lambda p: figure_plots.plot_confusion(
          np.array([[3, 1], [0, 4]]), names, p, 'confusion'),
      'tsne.png': lambda p: figure_plots.plot_tsne(
          rng.normal(size=(6, 2)), np.array([0, 1, 0, 1, 0, 1]), names, p, 't-SNE'),
      'patches.png': lambda p: figure_plots.plot_patches(rng.random((8, 8, 3)), 4, 'cat', p,
                                                         'patches'),
      'filters.png': lambda p: figure_plots.plot_filters(
          rng.random((3, 2, 2, 3)), np.array([0.5, 0.3, 0.2]), p, 'filters'),
      'similarity.png': lambda p: figure_plots.plot_position_similarity(np.eye(4), (2, 2), p,
                                                                        'similarity'),
      'distance.png': lambda p: figure_plots.plot_attention_distance(
          rng.random((2, 3)), 0.5, p, 'distance', 8),
      'rollout.png': lambda p: figure_plots.plot_rollout(
          rng.random((2, 8, 8, 3)), rng.random((2, 2, 2)), names, ['cat', 'cat'], p, 'rollout'),
  }
  for name, plot in plots.items():
    path = str(tmp_path / name)
    assert plot(path) == name
    with open(path, 'rb') as f:
      assert f.read(8) == PNG_SIGNATURE, name
