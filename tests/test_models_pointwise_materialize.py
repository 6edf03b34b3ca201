"""The two XLA:CPU rewrites the classifiers use: ``pointwise`` (1x1 convolutions as matmuls) and ``materialize``
(residual streams held in memory). Each must give the plain computation's values and gradients, and must really be
in the compiled program (else the speed-up it was added for is gone without a sound)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bobjax.models import materialize, pointwise


def _conv_pair(kernel, stride, padding, **kw):
    plain = nnx.Conv(6, 10, kernel, strides=stride, padding=padding, rngs=nnx.Rngs(0), **kw)
    rewritten = nnx.Conv(6, 10, kernel, strides=stride, padding=padding, rngs=nnx.Rngs(0),
                         conv_general_dilated=pointwise.conv_general_dilated, **kw)
    return plain, rewritten


def _value_and_grads(conv, x):
    graphdef, params = nnx.split(conv)
    loss = lambda p, x: jnp.sum(jnp.sin(nnx.merge(graphdef, p)(x)))  # noqa: E731
    return jax.value_and_grad(loss, argnums=(0, 1))(params, x)


@pytest.mark.parametrize("kernel,stride,padding", [
    ((1, 1), 1, "VALID"), ((1, 1), 2, ((0, 0), (0, 0))), ((1, 1), 2, "SAME"), ((1, 1), (1, 2), "VALID"),
    ((3, 3), 1, "SAME"), ((1, 1), 1, ((1, 1), (1, 1))),  # these two stay convolutions
])
def test_pointwise_gives_the_convolution_and_its_gradients(kernel, stride, padding):
    plain, rewritten = _conv_pair(kernel, stride, padding)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 7, 6)), jnp.float32)
    (want, (want_p, want_x)), (got, (got_p, got_x)) = _value_and_grads(plain, x), _value_and_grads(rewritten, x)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got_x, want_x, rtol=1e-5, atol=1e-6)
    for g, w in zip(jax.tree.leaves(got_p), jax.tree.leaves(want_p)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_pointwise_keeps_bf16_compute():
    plain, rewritten = _conv_pair((1, 1), 1, "VALID", dtype=jnp.bfloat16)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 5, 6)), jnp.float32)
    assert rewritten(x).dtype == plain(x).dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(rewritten(x)), np.float32(plain(x)), rtol=2e-2, atol=2e-2)


def test_pointwise_compiles_to_a_matmul():
    _, rewritten = _conv_pair((1, 1), 2, "VALID")
    x = jnp.ones((2, 8, 8, 6))
    hlo = jax.jit(lambda x: rewritten(x)).lower(x).as_text()
    assert "convolution" not in hlo and "dot_general" in hlo


def test_materialize_is_the_identity_with_an_identity_gradient():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 4, 5)), jnp.float32)
    f = lambda x: jnp.sum(jnp.cos(materialize.residual(x * 2.0)) * x)  # noqa: E731
    g = lambda x: jnp.sum(jnp.cos(x * 2.0) * x)  # noqa: E731
    np.testing.assert_array_equal(jax.jit(materialize.residual)(x), x)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(x), jax.jit(jax.grad(g))(x), rtol=1e-6)
    poisoned = x.at[0, 0, 0].set(jnp.nan)  # the branch that writes NaN where NaN already is
    np.testing.assert_array_equal(jax.jit(materialize.residual)(poisoned), poisoned)


def test_materialize_stores_the_value_and_its_gradient_on_cpu():
    f = lambda x: jnp.sum(jnp.sin(materialize.residual(jnp.cos(x) * 2.0)) ** 2)  # noqa: E731
    compiled = jax.jit(jax.grad(f)).lower(jnp.ones((4, 4))).compile().as_text()
    assert compiled.count(" conditional(") == 2  # one for the value, one for its cotangent
