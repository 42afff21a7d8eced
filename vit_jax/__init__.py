"""Vision Transformers in JAX/Flax for studying LayerNorm placement."""
