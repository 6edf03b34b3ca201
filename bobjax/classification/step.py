"""The classifier's one jitted, sharded training step and its evaluation step.

State is a plain pytree ``{"step", "params", "rest", "opt_state"}`` (``rest``: BatchNorm statistics), replicated
over the mesh; the batch is split over every device. Augmentation and MixUp/CutMix run on the device just before
the update, keyed by ``fold_in(key(seed), step)``, so a step is a pure function of (state, batch).

Loss: soft-target cross-entropy weighted per row. With ``lambda`` mixing the real rows share weight lambda and
the synthetic rows 1 - lambda, which is ``mixing.lambda_loss`` extended to MixUp's soft targets; otherwise
every row weighs 1 / batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bobjax import parallel
from bobjax.data import augment, mixup


def row_weights(parts: list[np.ndarray], batch_size: int, real_weight: float | None) -> np.ndarray:
    """Per-row loss weights summing to 1; ``real_weight`` (lambda) applies to two parts (real, synthetic)."""
    weights = np.zeros(batch_size, np.float32)
    if real_weight is None:
        weights[:] = 1.0 / batch_size
    else:
        real, synthetic = parts
        weights[real] = real_weight / len(real)
        weights[synthetic] = (1.0 - real_weight) / len(synthetic)
    return weights


def normalize(images, mean, std):
    return (images - jnp.asarray(mean, images.dtype)) / jnp.asarray(std, images.dtype)


def prepare(key, batch, spec: augment.AugmentSpec, parts, num_classes: int, mix_prob: float):
    """uint8 batch -> (augmented, mixed images in [0, 1], soft targets)."""
    k_aug, k_mix = jax.random.split(key)
    images = augment.augment_batch(k_aug, batch["image"], spec)
    targets = jax.nn.one_hot(batch["label"], num_classes)
    return mixup.mix_batch(k_mix, images, targets, parts, mix_prob)


def make_prepare(mesh, *, seed: int, spec, parts, num_classes: int, mix_prob: float):
    """A jitted ``(step, batch) -> (images, targets)``: the batch the model sees at ``step``, also for logging."""

    def prepare_at(step, batch):
        return prepare(jax.random.fold_in(jax.random.key(seed), step), batch, spec, parts, num_classes, mix_prob)

    batch = parallel.batch_sharding(mesh)
    return jax.jit(prepare_at, in_shardings=(parallel.replicated(mesh), batch), out_shardings=(batch, batch))


def make_train_step(graphdef, mesh, *, prepare_fn, weights, mean, std, tx: optax.GradientTransformation,
                    state_template, dtype=jnp.float32):
    """A ``(state, batch) -> (state, metrics)``: ``prepare_fn`` (:func:`make_prepare`), then one jitted update;
    ``graphdef`` is the model's in training mode."""
    weights = jnp.asarray(weights)

    def update(state, images, targets, labels):
        x = normalize(images, mean, std).astype(dtype)

        def loss_fn(params, rest):
            model = nnx.merge(graphdef, params, rest, copy=True)  # Fresh variables, owned by this trace.
            logits = model(x).astype(jnp.float32)
            loss = jnp.sum(weights * optax.softmax_cross_entropy(logits, targets))
            return loss, (logits, nnx.state(model, nnx.Not(nnx.Param)))

        (loss, (logits, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], state["rest"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
        new_state = {"step": state["step"] + 1, "params": params, "rest": rest, "opt_state": opt_state}
        return new_state, {"loss": loss, "accuracy": accuracy}

    replicated = jax.tree.map(lambda _: parallel.replicated(mesh), state_template)
    batch = parallel.batch_sharding(mesh)
    update = jax.jit(update, in_shardings=(replicated, batch, batch, batch),
                     out_shardings=(replicated, parallel.replicated(mesh)), donate_argnums=0)

    def train_step(state, batch):
        images, targets = prepare_fn(state["step"], batch)
        return update(state, images, targets, batch["label"])

    return train_step


def make_eval_step(graphdef, mesh, *, mean, std, dtype=jnp.float32):
    """A jitted ``(params, rest, uint8 images) -> predicted classes``; ``graphdef`` in evaluation mode."""

    def eval_step(params, rest, images):
        model = nnx.merge(graphdef, params, rest)
        x = normalize(images.astype(jnp.float32) / 255.0, mean, std).astype(dtype)
        return jnp.argmax(model(x), axis=-1)

    return jax.jit(eval_step, out_shardings=parallel.replicated(mesh))
