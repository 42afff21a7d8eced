"""Self-attention of an encoder block: which module computes it, and the one with norms inside.

Three modules compute the same function with the same parameters (names, shapes, initial
values: query/key/value/out as nn.DenseGeneral):
  - flax's nn.MultiHeadDotProductAttention: the reference for the plain attention;
  - cpu_kernels.MultiHeadDotProductAttention: its XLA:CPU layout (`kernels='cpu'`), also the
    'folded' form;
  - `SelfAttention` here: the reference when the norm spec puts something *inside* the
    attention (QK-norm, Sub-LN's norm before the output projection, NormFormer's head scale),
    or scales the value/output initialisation (DeepNorm, Magneto) under `kernels='reference'`
    (flax's module has one kernel init for q, k and v), and in the diagnostics pass, which reads
    the logits (entropy and max logit per head). The flax module has no hooks for these.
`attend` picks one.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax import cpu_kernels
from vit_jax import layers
from vit_jax import norms

Array = jax.Array
NAME = 'MultiHeadDotProductAttention_1'  # vit_jax's name
DIAGNOSTICS = 'diagnostics'  # the collection the diagnostics pass makes mutable


def _cudnn_or_xla_attention(query, key, value, mask=None, dropout_rng=None, dropout_rate=0.0,
                            broadcast_dropout=True, deterministic=False, dtype=None,
                            precision=None, force_fp32_for_softmax=False, module=None):
  """nn.MultiHeadDotProductAttention's `attention_fn` for attention_impl='cudnn'.

  The fused kernel neither returns the weights nor drops them out, so sowing (`module`) or
  attention dropout take nn.dot_product_attention, as with attention_impl='xla'.
  """
  if module is None and mask is None and (deterministic or dropout_rate == 0):
    return jax.nn.dot_product_attention(query, key, value, implementation='cudnn')
  return nn.dot_product_attention(
      query, key, value, mask=mask, dropout_rng=dropout_rng, dropout_rate=dropout_rate,
      broadcast_dropout=broadcast_dropout, deterministic=deterministic, dtype=dtype,
      precision=precision, force_fp32_for_softmax=force_fp32_for_softmax, module=module)


class SelfAttention(nn.Module):
  """Multi-head self-attention with optional norm sites inside (see norms.py):

      q, k, v = x Wq + bq, x Wk + bk, x Wv + bv          [batch, tokens, heads, head_dim]
      q, k    = N_q(q), N_k(k)                if qk_norm   (over head_dim, shared by heads)
      o_h     = softmax(q_h k_h^T / sqrt(d)) v_h
      o_h     = s_h o_h                       if head_scale (s from 1)
      o       = N_mid(concat_h o_h)           if mid_norm   (over heads * head_dim)
      y       = o Wo + bo                      [batch, tokens, width]
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  qk_norm: str | None = None   # a norm type, or None for no QK-norm
  mid_norm: str | None = None  # a norm type, or None for no Sub-LN norm
  head_scale: bool = False
  init_gain: float = 1.0       # on the initial value and output kernels
  epsilon: float = 1e-6
  kernels: str = 'reference'   # chooses the dropout kernel
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:  # x: [batch, tokens, width]
    b, t, width = x.shape
    h, d = self.num_heads, self.head_dim
    norm = lambda kind, name: layers.make_norm(kind, name, epsilon=self.epsilon, dtype=self.dtype,
                                              param_dtype=self.param_dtype)
    project = lambda name, gain: nn.DenseGeneral(
        (h, d), axis=-1, kernel_init=layers.scaled_init(gain), dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)(x)  # [batch, tokens, heads, head_dim]
    q, k, v = project('query', 1.0), project('key', 1.0), project('value', self.init_gain)
    if self.qk_norm:
      q_name, k_name = norms.NORM_NAMES['attn_qk']
      q, k = norm(self.qk_norm, q_name)(q), norm(self.qk_norm, k_name)(k)
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32) / math.sqrt(d)
    weights = jax.nn.softmax(logits, axis=-1)  # [batch, heads, q, k]
    if self.is_mutable_collection('intermediates'):
      self.sow('intermediates', 'attention_weights', weights)
    if self.is_mutable_collection(DIAGNOSTICS) and not self.is_initializing():  # diagnostics.py
      entropy = -jnp.sum(weights * jax.nn.log_softmax(logits, axis=-1), axis=-1)  # [b, h, q]
      self.sow(DIAGNOSTICS, 'attn_entropy', jnp.mean(entropy, axis=(0, 2)))   # [heads], nats
      self.sow(DIAGNOSTICS, 'attn_logit_max', jnp.max(logits, axis=(0, 2, 3)))  # [heads]
    dropout = cpu_kernels.Dropout if self.kernels == 'cpu' else nn.Dropout
    weights = dropout(self.dropout_rate)(weights, deterministic=not train)
    o = jnp.einsum('bhqk,bkhd->bqhd', weights.astype(v.dtype), v)  # [batch, tokens, heads, d]
    if self.head_scale:
      scale = self.param('head_scale', nn.initializers.ones, (h,), self.param_dtype)
      o = o * scale.astype(o.dtype)[:, None]
    if self.mid_norm:
      o = norm(self.mid_norm, norms.NORM_NAMES['attn_mid'])(o.reshape(b, t, h * d)).reshape(b, t, h, d)
    return nn.DenseGeneral(width, axis=(-2, -1), kernel_init=layers.scaled_init(self.init_gain),
                           dtype=self.dtype, param_dtype=self.param_dtype, name='out')(o)


def attend(y: Array, *, spec: norms.NormSpec, block: norms.BlockNorms, num_heads: int,
           head_dim: int, dropout_rate: float, impl: str, kernels: str, epsilon: float,
           dtype: Any, param_dtype: Any, sow: bool, train: bool, diagnose: bool = False) -> Array:
  """The block's self-attention, named MultiHeadDotProductAttention_1 whichever module computes it
  (`diagnose`: the diagnostics pass, whose statistics only SelfAttention sows)."""
  qk = spec.type_of('attn_qk') if 'qk' in block.attn else None
  mid = spec.type_of('attn_mid') if 'mid' in block.attn else None
  inside = qk is not None or mid is not None or spec.head_scale
  if inside and impl == 'folded':
    raise ValueError("attention_impl='folded' folds q and k away, so it cannot hold QK-norm, "
                     "Sub-LN or a head scale; use --config.model.attention_impl=xla")
  if inside or diagnose or (spec.init_gain != 1 and kernels != 'cpu' and impl != 'folded'):
    return SelfAttention(num_heads=num_heads, head_dim=head_dim, dropout_rate=dropout_rate,
                         qk_norm=qk, mid_norm=mid, head_scale=spec.head_scale,
                         init_gain=spec.init_gain, epsilon=epsilon, kernels=kernels, dtype=dtype,
                         param_dtype=param_dtype, name=NAME)(y, train=train)
  if kernels == 'cpu' or impl == 'folded':
    return cpu_kernels.MultiHeadDotProductAttention(
        num_heads=num_heads, head_dim=head_dim, dropout_rate=dropout_rate, implementation=impl,
        init_gain=spec.init_gain, dtype=dtype, param_dtype=param_dtype, name=NAME)(y, train=train)
  return nn.MultiHeadDotProductAttention(
      num_heads=num_heads, qkv_features=num_heads * head_dim,
      kernel_init=nn.initializers.xavier_uniform(), broadcast_dropout=False,
      dropout_rate=dropout_rate, force_fp32_for_softmax=True,
      attention_fn=_cudnn_or_xla_attention if impl == 'cudnn' else nn.dot_product_attention,
      dtype=dtype, param_dtype=param_dtype, name=NAME)(y, deterministic=not train, sow_weights=sow)

