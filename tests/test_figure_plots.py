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


def test_save_writes_a_deterministic_palette_png_that_keeps_line_colours(tmp_path):
  """The study's figures are re-committed after every run: a palette PNG keeps them small, the
  same figure gives the same bytes (git stores nothing new), and the lines keep their colours."""
  from PIL import Image
  colours = {'C0': (31, 119, 180), 'C1': (255, 127, 14), 'C3': (214, 39, 40)}

  def draw():
    plt = figure_plots.pyplot()
    fig, ax = plt.subplots(figsize=(4, 3))
    x = np.linspace(0, 1, 200)
    for i, name in enumerate(colours):
      ax.plot(x, np.sin(8 * x + i), color=name, linewidth=4)
      ax.fill_between(x, i - 0.3, i + 0.3, color=name, alpha=0.2)
    return fig

  paths = [str(tmp_path / f'{i}.png') for i in range(2)]
  for path in paths:
    assert figure_plots.save(draw(), path) == path.rsplit('/', 1)[1]
  with open(paths[0], 'rb') as a, open(paths[1], 'rb') as b:
    assert a.read() == b.read()
  with Image.open(paths[0]) as image:
    assert image.mode == 'P'                         # a palette, at most PNG_COLOURS entries
    pixels = np.asarray(image.convert('RGB')).reshape(-1, 3).astype(int)
  for name, rgb in colours.items():                 # each line colour survives within 2/255
    assert np.abs(pixels - rgb).max(axis=1).min() <= 2, name
