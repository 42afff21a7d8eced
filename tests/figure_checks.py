"""What every test that writes a figure checks of it: a PNG of readable size with something drawn.

Why not the file size: figures are 256-colour PNGs (figure_plots.save), a small heatmap is a few
KB, and bytes say nothing about whether anything was drawn. Pixels and colours do.
"""

import numpy as np
from PIL import Image

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
MIN_PIXELS = (300, 250)   # (width, height) a readable figure has at least
MIN_COLOURS = 8           # a blank or one-colour canvas has fewer: axes, text and data give more


def assert_figure(path: str, min_pixels: tuple[int, int] = MIN_PIXELS) -> None:
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE, f'{path} is not a PNG'
  with Image.open(path) as image:
    width, height = image.size
    colours = len(np.unique(np.asarray(image.convert('RGB')).reshape(-1, 3), axis=0))
  assert width >= min_pixels[0] and height >= min_pixels[1], (path, width, height)
  assert colours >= MIN_COLOURS, (path, colours)
