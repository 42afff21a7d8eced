"""Placeholder (being designed): the fast CPU recipe."""
from configs import common


def get_config():
  config = common.get_config()
  config.data.image_size = 32
  config.data.crop_padding = 4
  model = config.model
  model.patch_size = 4
  model.hidden_size = 192
  model.num_layers = 6
  model.num_heads = 3
  model.mlp_dim = 384
  config.batch_size = 256
  return config
