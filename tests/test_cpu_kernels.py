"""Tests for vit_jax/cpu_kernels.py: each XLA:CPU kernel computes what the reference computes.

Bit for bit where the kernel computes the same bits (random_bits is jax.random.bits); to float
tolerance, and against autodiff, for the attention layouts, the folded attention and the
softmax-dropout backward pass; same parameter names, shapes and initial values as the flax
modules they stand for (nn.MultiHeadDotProductAttention / nn.DenseGeneral, nn.Conv).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_fixtures import (IMAGES, TOKENS, flat_names, make_block, random_params, ref_attention,
                            ref_model, rng, tiny)
from vit_jax import cpu_kernels, models


class _DenseGeneralAttentionParams(nn.Module):
  """The q/k/v/out parameters as nn.DenseGeneral creates them (the vit_jax module's layout)."""

  @nn.compact
  def __call__(self, x):
    for name in ('query', 'key', 'value'):
      y = nn.DenseGeneral((4, 8), kernel_init=nn.initializers.xavier_uniform(),
                                 name=name)(x)
    return nn.DenseGeneral(x.shape[-1], axis=(-2, -1), name='out',
                                  kernel_init=nn.initializers.xavier_uniform())(y)


def test_attention_initialises_like_dense_general():
  """The attention computes its projections as plain matmuls, but its parameters are
  nn.DenseGeneral's: same names, shapes and initial values for the same key."""
  rng_init = jax.random.key(3)
  ours = cpu_kernels.MultiHeadDotProductAttention(num_heads=4, head_dim=8).init(
      rng_init, TOKENS, train=False)['params']
  want = _DenseGeneralAttentionParams().init(rng_init, TOKENS)['params']
  assert flat_names(ours) == flat_names(want)
  jax.tree.map(np.testing.assert_array_equal, ours, want)
  folded = cpu_kernels.MultiHeadDotProductAttention(num_heads=4, head_dim=8, implementation='folded')
  jax.tree.map(np.testing.assert_array_equal, folded.init(rng_init, TOKENS, train=False)['params'],
               want)


def attention_pair(num_heads, head_dim, rate=0.0):
  make = functools.partial(cpu_kernels.MultiHeadDotProductAttention, num_heads=num_heads,
                           head_dim=head_dim, dropout_rate=rate)
  return make(), make(implementation='folded')


def attention_params(module, scale=0.5):
  """Noise for every attention parameter, biases included."""
  init = lambda key: module.init(key, TOKENS, train=False)
  shapes = jax.eval_shape(init, jax.random.key(0))['params']
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(np.float32), shapes)


@pytest.mark.parametrize('num_heads,head_dim', [(4, 8), (2, 32), (4, 48)])  # d <, =, > width 32
def test_folded_attention_is_the_reference(num_heads, head_dim):
  """Same parameters, same function (biases included), same sown weights as the standard path."""
  standard, folded = attention_pair(num_heads, head_dim)
  params = attention_params(standard)
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, attention_params(folded))
  want = ref_attention(np.float64(TOKENS), jax.tree.map(np.float64, params))
  apply = lambda m: jax.jit(functools.partial(m.apply, train=False, mutable='intermediates'))
  got, sown = apply(folded)({'params': params}, TOKENS)
  np.testing.assert_allclose(got, want, atol=2e-6 * np.abs(want).max())  # f32 vs f64 rounding
  _, sown_standard = apply(standard)({'params': params}, TOKENS)
  np.testing.assert_allclose(sown['intermediates']['attention_weights'][0],
                             sown_standard['intermediates']['attention_weights'][0], atol=1e-5, rtol=1e-4)


def test_folded_attention_gradients():
  """Every gradient matches the standard path's; the key bias, which softmax cancels, gets 0."""
  standard, folded = attention_pair(4, 48)
  params = attention_params(standard)
  probe = np.random.default_rng(2).normal(size=TOKENS.shape).astype(np.float32)
  grad = lambda m: jax.jit(jax.grad(
      lambda p, x: jnp.sum(probe * m.apply({'params': p}, x, train=False)), argnums=(0, 1)))
  (gp_std, gx_std), (gp_fold, gx_fold) = grad(standard)(params, TOKENS), grad(folded)(params, TOKENS)
  np.testing.assert_allclose(gx_fold, gx_std, atol=1e-4, rtol=1e-4)
  np.testing.assert_array_equal(gp_fold['key']['bias'], 0.0)
  scale = max(np.abs(g).max() for g in jax.tree.leaves(gp_std))
  assert np.abs(gp_std['key']['bias']).max() < 1e-5 * scale  # float noise around the true 0
  for name in ('query', 'key', 'value', 'out'):
    for leaf in ('kernel', 'bias'):
      np.testing.assert_allclose(gp_fold[name][leaf], gp_std[name][leaf], atol=1e-5 * scale,
                                 err_msg=f'{name}/{leaf}')


class _FixedAttentionDropout(nn.Module):
  """A stand-in for attention dropout with the same mask in either layout.

  Drops weight (head, query, key) where (head + 2 query + 3 key) % 3 == 0; the heads axis is the
  one of size 4 (the tokens axes are 17), so the mask follows the weights into either layout.
  """
  rate: float

  def keep_scale(self, shape, dtype):
    heads_axis = shape.index(4)
    idx = np.indices(shape)
    q, k = (idx[a] for a in range(1, 4) if a != heads_axis)
    keep = (idx[heads_axis] + 2 * q + 3 * k) % 3 != 0
    return jnp.asarray(np.where(keep, 1.0 / (1 - self.rate), 0.0), dtype)


def test_folded_attention_drops_the_same_weights(monkeypatch):
  """With weights dropped (rows no longer sum to 1), the value bias still enters through them."""
  monkeypatch.setattr(cpu_kernels, 'Dropout', _FixedAttentionDropout)
  standard, folded = attention_pair(4, 48, rate=0.5)
  params = attention_params(standard)
  run = lambda m: m.apply({'params': params}, TOKENS, train=True)
  want = run(standard)
  assert not np.allclose(want, standard.apply({'params': params}, TOKENS, train=False))
  np.testing.assert_allclose(run(folded), want, atol=2e-6 * np.abs(want).max())


def test_softmax_dropout_gradient():
  """The hand-written backward pass (no mask) is autodiff's through softmax(l) * m."""
  rng_np = np.random.default_rng(4)
  logits = rng_np.normal(size=(3, 5, 7)).astype(np.float32) * 3
  keep_scale = np.where(rng_np.random((3, 5, 7)) < 0.3, 0.0, 1 / 0.7).astype(np.float32)
  probe = rng_np.normal(size=logits.shape).astype(np.float32)
  plain = lambda l: jax.nn.softmax(l, axis=-1) * keep_scale
  ours = lambda l: cpu_kernels.softmax_dropout(l, keep_scale)
  np.testing.assert_allclose(ours(logits), plain(logits), rtol=1e-6)
  grad = lambda f: jax.grad(lambda l: jnp.sum(probe * f(l)))(logits)
  np.testing.assert_allclose(grad(ours), grad(plain), atol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.grad(lambda l: jnp.sum(probe * ours(l))))(logits),
                             grad(plain), atol=1e-6)


def test_folded_model_computes_reference():
  model = tiny(attention_impl='folded', num_heads=2, head_dim=32)
  params = random_params(model, IMAGES)
  np.testing.assert_allclose(model.apply({'params': params}, IMAGES),
                             ref_model(IMAGES, params, {'in'}, {'in'}, 4, True), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('patch', [1, 4, 8])
def test_patch_embedding_is_the_strided_conv(patch):
  """PatchEmbedding (reshape + matmul) computes nn.Conv(kernel=stride=patch, VALID) exactly,
  and initialises the same parameters to the same values (so seeds and checkpoints carry over)."""
  x = jax.random.normal(jax.random.key(0), (2, 16, 24, 3))
  conv = nn.Conv(5, (patch, patch), strides=(patch, patch), padding='VALID')
  ours = cpu_kernels.PatchEmbedding(5, patch)
  rng = jax.random.key(1)
  conv_params, our_params = conv.init(rng, x), ours.init(rng, x)
  assert jax.tree.map(jnp.shape, conv_params) == jax.tree.map(jnp.shape, our_params)
  np.testing.assert_array_equal(conv_params['params']['kernel'], our_params['params']['kernel'])
  params = jax.tree.map(lambda a: a + jax.random.normal(jax.random.key(2), a.shape), conv_params)
  expected = conv.apply(params, x)
  assert expected.shape == (2, 16 // patch, 24 // patch, 5)
  np.testing.assert_allclose(ours.apply(params, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('rate', [0.1, 0.5])
def test_dropout_rate_and_scale(rate):
  """16-bit Dropout: drops `rate` of the elements, scales the rest by 1/keep, so the mean is
  kept; identity when deterministic; works for odd sizes; all zeros at rate 1."""
  x = np.ones((3, 101, 67), np.float32)  # odd number of elements
  drop = cpu_kernels.Dropout(rate)
  out = np.asarray(drop.apply({}, x, deterministic=False, rngs={'dropout': rng(0)}))
  dropped = out == 0
  assert abs(dropped.mean() - rate) < 0.01
  keep = 1 - round(rate * 2**16) / 2**16
  np.testing.assert_allclose(out[~dropped], 1 / keep, rtol=1e-6)
  assert abs(out.mean() - 1.0) < 0.02
  other = np.asarray(drop.apply({}, x, deterministic=False, rngs={'dropout': rng(1)}))
  assert (dropped != (other == 0)).any()  # another key, another mask
  np.testing.assert_array_equal(drop.apply({}, x, deterministic=True), x)
  np.testing.assert_array_equal(
      cpu_kernels.Dropout(1.0).apply({}, x, deterministic=False, rngs={'dropout': rng(0)}), 0.0)


@pytest.mark.parametrize('impl', ['threefry2x32', 'raw', 'rbg'])
def test_random_bits_are_jax_random_bits(impl):
  """The unrolled threefry behind Dropout returns exactly jax.random.bits' words (so masks do not
  depend on which generator code ran), under jit, for odd sizes, and for raw uint32 keys; other
  key types are passed to JAX."""
  key = jax.random.fold_in(jax.random.key(7, impl='rbg' if impl == 'rbg' else None), 11)
  if impl == 'raw':
    key = jax.random.key_data(key)
  bits = jax.jit(cpu_kernels.random_bits, static_argnums=1)
  for size in (1, 2, 999, 65_537):
    want = jax.random.bits(key, (size,), jnp.uint32)
    got = bits(key, size)
    assert got.dtype == jnp.uint32 and got.shape == (size,)
    np.testing.assert_array_equal(got, want)
  other = bits(jax.random.fold_in(key if impl != 'raw' else jax.random.wrap_key_data(key), 1), 999)
  assert (other != bits(key, 999)).mean() > 0.99  # another key, other words


@pytest.mark.parametrize('attention_impl', ['xla', 'folded'])
def test_cpu_block_gradients_are_the_reference_autodiff(attention_impl):
  """The CPU kernels' block (re-laid-out or folded attention) has the plain-Flax block's
  gradients, with respect to every parameter and the input."""
  make = lambda kernels, impl: make_block(
      'sandwich', num_heads=2, head_dim=32, mlp_dim=64, kernels=kernels, attention_impl=impl)
  reference, cpu = make('reference', 'xla'), make('cpu', attention_impl)
  params = random_params(reference, TOKENS, 0.0)
  probe = np.random.default_rng(5).normal(size=TOKENS.shape).astype(np.float32)
  grad = lambda m: jax.jit(jax.grad(
      lambda p, x: jnp.sum(probe * m.apply({'params': p}, x)), argnums=(0, 1)))(params, TOKENS)
  (gp_ref, gx_ref), (gp_cpu, gx_cpu) = grad(reference), grad(cpu)
  np.testing.assert_allclose(gx_cpu, gx_ref, atol=1e-4, rtol=1e-4)
  scale = max(np.abs(g).max() for g in jax.tree.leaves(gp_ref))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5 * scale), gp_cpu, gp_ref)
