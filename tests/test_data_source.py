"""Tests of vit_jax/data/source.py: a loaded source serves only the config it was loaded for."""

import cifar_fixtures as fx
from data_helpers import archives, data100, source  # noqa: F401  (pytest fixtures)
import pytest

from vit_jax import data

def test_source_must_match_config(archives, source):
  with pytest.raises(ValueError, match='val_fraction'):
    data.get_dataset_info(fx.data_config(archive=archives['c100_bin'], val_fraction=0.2),
                          source=source)
