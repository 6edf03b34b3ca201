"""The classify stage's loss weighting, optimiser rules and accuracy summaries, against their definitions."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bobjax.classify import metrics, optim, step


def test_row_weights_reproduce_the_lambda_loss():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(8, 5)), rng.integers(0, 5, size=8)
    parts = [np.arange(4), np.arange(4, 8)]
    weights = step.row_weights(parts, 8, real_weight=0.8)
    ours = float(jnp.sum(weights * optax.softmax_cross_entropy(logits, jax.nn.one_hot(labels, 5))))
    # BOB's loss: lambda * CE(real half) + (1 - lambda) * CE(synthetic half), each half averaged over itself.
    ce = optax.softmax_cross_entropy_with_integer_labels
    want = 0.8 * float(ce(logits[:4], labels[:4]).mean()) + 0.2 * float(ce(logits[4:], labels[4:]).mean())
    assert ours == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(step.row_weights(parts, 8, real_weight=None), 1 / 8)


def _cfg(**kw):
    base = dict(learning_rate=1e-2, weight_decay=0.0, layer_decay=1.0, backbone="vit_b16", warmup_epochs=0,
                min_learning_rate=0.0)
    return ml_collections.ConfigDict({**base, **kw})


PARAMS = {"patch_embed": {"proj": {"kernel": jnp.ones((2, 2))}}, "pos_embed": jnp.ones((1, 3, 2)),
          "blocks": {0: {"attn": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}},
                     11: {"attn": {"kernel": jnp.ones((2, 2))}}},
          "head": {"kernel": jnp.ones((2, 2))}}


def test_layer_decay_scales_each_depth_as_mae():
    cfg = _cfg(layer_decay=0.5)
    tx = optim.optimizer(cfg, PARAMS, 1e-2)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    # Adam's first step moves every coordinate by lr; depth d of 14 (ViT-B: embeddings, 12 blocks, head) by 0.5^(13-d).
    first = lambda tree: float(jnp.ravel(tree)[0])
    assert first(updates["head"]["kernel"]) == pytest.approx(-1e-2, rel=1e-5)
    assert first(updates["blocks"][11]["attn"]["kernel"]) == pytest.approx(-1e-2 * 0.5, rel=1e-5)
    assert first(updates["blocks"][0]["attn"]["kernel"]) == pytest.approx(-1e-2 * 0.5 ** 12, rel=1e-5)
    assert first(updates["patch_embed"]["proj"]["kernel"]) == pytest.approx(-1e-2 * 0.5 ** 13, rel=1e-5)


def test_weight_decay_skips_biases_and_position_embeddings():
    tx = optim.optimizer(_cfg(weight_decay=0.1), PARAMS, 1e-2)
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zero, tx.init(PARAMS), PARAMS)
    assert float(updates["head"]["kernel"][0, 0]) == pytest.approx(-1e-2 * 0.1)  # decoupled decay: -lr * wd * p
    assert float(updates["blocks"][0]["attn"]["bias"][0]) == 0.0
    assert float(updates["pos_embed"][0, 0, 0]) == 0.0


def test_bad_layer_decay_names_the_field():
    with pytest.raises(ValueError, match="layer_decay"):
        optim.optimizer(_cfg(layer_decay=1.5), PARAMS, 1e-2)


def test_schedule_warms_up_then_decays_to_the_minimum():
    schedule = optim.schedule(_cfg(warmup_epochs=1, min_learning_rate=1e-6), steps_per_epoch=10, total_steps=100)
    assert float(schedule(0)) == pytest.approx(1e-6, rel=1e-3)  # float32
    assert float(schedule(5)) == pytest.approx((1e-6 + 1e-2) / 2, rel=1e-5)
    assert float(schedule(10)) == pytest.approx(1e-2, rel=1e-6)
    assert float(schedule(55)) == pytest.approx(1e-6 + (1e-2 - 1e-6) / 2, rel=1e-5)  # cosine halfway
    assert float(schedule(100)) == pytest.approx(1e-6, rel=1e-3)


def test_accuracy_summary_and_long_tail_buckets():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 4, 5, 5])
    predictions = np.array([0, 1, 1, 1, 0, 2, 3, 0, 5, 5])
    counts = np.array([30, 20, 10, 5, 3, 1])  # thresholds 30^(1/3) = 3.11 and 30^(2/3) = 9.65
    out = metrics.summarize(predictions, labels, 6, counts)
    assert out["top1"] == pytest.approx(70.0)
    assert out["per_class"] == [50.0, 100.0, 50.0, 100.0, 0.0, 100.0]
    assert out["buckets"]["rule"]["few_below"] == pytest.approx(30 ** (1 / 3))
    assert out["buckets"]["many"] == {"classes": 3, "accuracy": pytest.approx(200 / 3)}
    assert out["buckets"]["medium"] == {"classes": 1, "accuracy": 100.0}
    assert out["buckets"]["few"] == {"classes": 2, "accuracy": 50.0}
