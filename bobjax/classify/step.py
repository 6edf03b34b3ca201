"""The classifier's one jitted, sharded training step and its evaluation step.

State is a plain pytree ``{"step", "params", "stats", "opt_state"}`` (``params``: what is trained; ``stats``:
BatchNorm statistics), replicated over the mesh; the frozen rest of the model (CLIP's base weights) is a
separate, constant argument; the batch is split over every device. The batch arrives augmented (on the host,
``bobjax.classify.augment``); MixUp/CutMix (and realmix's pairs) run on the device just before the update, keyed by
``fold_in(key(seed), step)``, so a step is a pure function of (state, batch). Packed grid points
(``bobjax.classify.packed``) map the same per-point update over their stacked states (:func:`make_packed_train_step`).

Loss: soft-target cross-entropy weighted per row. With ``lambda`` mixing the real rows share weight lambda and
the synthetic rows 1 - lambda: lambda * CE(real half) + (1 - lambda) * CE(synthetic half), extended to MixUp's
soft targets; otherwise every row weighs 1 / batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bobjax import parallel
from bobjax.classify import mixup, realmix
from bobjax.errors import ConfigError
from bobjax.models import lora

_DROPOUT_STREAM = 0x10A  # LoRA dropout draws from its own key stream, apart from augmentation's.
DTYPES = ("auto", "float32", "bfloat16")


def compute_dtype(name: str, mesh=None):
    """``config.classify.dtype`` -> the dtype the classifier computes in. ``auto``: bfloat16 where matrix units
    run it at several times float32's rate (GPU, TPU), float32 on CPU, where bfloat16 is emulated and slower.
    The platform is that of ``mesh``'s devices (the default backend's without one): compiled for a TPU from a CPU
    (``bobjax.aot``), the classifier computes as it will on the TPU."""
    if name not in DTYPES:
        raise ConfigError(f"config.classify.dtype is {name!r}; expected one of {DTYPES}")
    if name == "auto":
        platform = jax.default_backend() if mesh is None else mesh.devices.flat[0].platform
        name = "float32" if platform == "cpu" else "bfloat16"
    return jnp.dtype(name)


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


def soft_targets(label, source_label, source_weight, num_classes: int):
    """``(1 - w) * onehot(label) + w * onehot(source_label)``: Diff-Mix's soft label; w = 0 (and source -1) is the
    hard label, exactly."""
    w = source_weight.astype(jnp.float32)[:, None]
    return (1 - w) * jax.nn.one_hot(label, num_classes) + w * jax.nn.one_hot(source_label, num_classes)


def prepare(key, batch, parts, num_classes: int, mix_prob: float):
    """Augmented uint8 batch -> (mixed images in [0, 1], soft targets). Gather-free: masks by iota comparisons and
    each part's partner rows by reversal, so nothing indexes pixels (tests/test_classify_programs_gathers.py)."""
    images = batch["image"].astype(jnp.float32) / 255.0
    targets = soft_targets(batch["label"], batch["source_label"], batch["source_weight"], num_classes)
    if "partner" in batch:  # realmix (DiffCoRe-Mix): real rows mixed with their synthetic partners first.
        partner_targets = soft_targets(batch["partner_label"], batch["partner_source_label"],
                                       batch["partner_source_weight"], num_classes)
        images, targets = realmix.mix_rows(jax.random.fold_in(key, 3), images, targets,
                                           batch["partner"].astype(jnp.float32) / 255.0, partner_targets,
                                           batch["mixed"])
    return mixup.mix_batch(jax.random.fold_in(key, 1), images, targets, parts, mix_prob)


def make_prepare(mesh, *, seed: int, parts, num_classes: int, mix_prob: float):
    """A jitted ``(step, batch) -> (images, targets)``: the batch the model sees at ``step``, also for logging."""

    def prepare_at(step, batch):
        return prepare(jax.random.fold_in(jax.random.key(seed), step), batch, parts, num_classes, mix_prob)

    batch = parallel.batch_sharding(mesh, sum(len(p) for p in parts))
    return jax.jit(prepare_at, in_shardings=(parallel.replicated(mesh), batch), out_shardings=(batch, batch))


def point_update(graphdef, *, tx: optax.GradientTransformation, weights, mean, std, seed: int, lora_dropout: float,
                 dtype, step, params, stats, opt_state, frozen, images, targets, labels):
    """One point's forward, backward and AdamW: ``(params, stats, opt_state, metrics)`` after the batch. The lone
    step calls it once; a packed step (:func:`make_packed_train_step`) maps it over the points."""
    x = normalize(images, mean, std).astype(dtype)

    def loss_fn(params, stats):
        model = nnx.merge(graphdef, params, stats, frozen, copy=True)  # Fresh variables, owned by this trace.
        if lora_dropout > 0:
            lora.set_dropout_rng(model, jax.random.fold_in(jax.random.key(seed + _DROPOUT_STREAM), step))
        logits = model(x).astype(jnp.float32)
        loss = jnp.sum(weights * optax.softmax_cross_entropy(logits, targets))
        return loss, (logits, nnx.state(model, nnx.BatchStat))

    (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return params, stats, opt_state, {"loss": loss, "accuracy": accuracy}


def make_train_step(graphdef, mesh, *, prepare_fn, weights, mean, std, tx: optax.GradientTransformation,
                    state_template, frozen_template, seed: int, lora_dropout: float = 0.0, dtype=jnp.float32):
    """A ``(state, frozen, batch) -> (state, metrics)``: ``prepare_fn`` (:func:`make_prepare`), then one jitted
    update; ``graphdef`` is the model's in training mode."""
    weights = jnp.asarray(weights)

    def update(state, frozen, images, targets, labels):
        params, stats, opt_state, metrics = point_update(
            graphdef, tx=tx, weights=weights, mean=mean, std=std, seed=seed, lora_dropout=lora_dropout, dtype=dtype,
            step=state["step"], params=state["params"], stats=state["stats"], opt_state=state["opt_state"],
            frozen=frozen, images=images, targets=targets, labels=labels)
        return {"step": state["step"] + 1, "params": params, "stats": stats, "opt_state": opt_state}, metrics

    replicate = lambda tree: jax.tree.map(lambda _: parallel.replicated(mesh), tree)  # noqa: E731
    batch = parallel.batch_sharding(mesh, len(weights))
    update = jax.jit(parallel.under_mesh(mesh, update),
                     in_shardings=(replicate(state_template), replicate(frozen_template), batch, batch, batch),
                     out_shardings=(replicate(state_template), parallel.replicated(mesh)), donate_argnums=0)
    return TrainStep(prepare_fn, update)


def make_packed_train_step(graphdef, mesh, *, prepare_fn, point_tx: Callable, mean, std, state_template,
                           frozen_template, hyper_template, seed: int, lora_dropout: float = 0.0, dtype=jnp.float32):
    """A packed ``(state, frozen, hyper, batch) -> (state, metrics)``: the points' trainable state (``params``,
    ``stats``, ``opt_state``) and hyperparameters (``hyper``: ``row_weights`` [points, batch] and what ``point_tx``
    builds a point's optimizer from) stacked on a leading axis, the step, the frozen weights and the batch shared.
    :func:`point_update` mapped over the points: each point's update is the lone one's, so one compiled program
    serves every point of a grid; metrics are per point."""

    def update(state, frozen, hyper, images, targets, labels):
        def one(params, stats, opt_state, hyper):
            return point_update(graphdef, tx=point_tx(hyper), weights=hyper["row_weights"], mean=mean, std=std,
                                seed=seed, lora_dropout=lora_dropout, dtype=dtype, step=state["step"], params=params,
                                stats=stats, opt_state=opt_state, frozen=frozen, images=images, targets=targets,
                                labels=labels)

        params, stats, opt_state, metrics = jax.vmap(one)(state["params"], state["stats"], state["opt_state"], hyper)
        return {"step": state["step"] + 1, "params": params, "stats": stats, "opt_state": opt_state}, metrics

    replicate = lambda tree: jax.tree.map(lambda _: parallel.replicated(mesh), tree)  # noqa: E731
    batch = parallel.batch_sharding(mesh, hyper_template["row_weights"].shape[-1])
    update = jax.jit(parallel.under_mesh(mesh, update),
                     in_shardings=(replicate(state_template), replicate(frozen_template), replicate(hyper_template),
                                   batch, batch, batch),
                     out_shardings=(replicate(state_template), parallel.replicated(mesh)), donate_argnums=0)
    return PackedTrainStep(prepare_fn, update)


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """``(state, frozen, batch) -> (state, metrics)``: two jitted programs, ``prepare`` (MixUp/CutMix) and
    ``update`` (forward, backward, AdamW), each compiled on its own (``bobjax.aot`` compiles both for a target)."""

    prepare: Callable
    update: Callable

    def __call__(self, state, frozen, batch):
        images, targets = self.prepare(state["step"], batch)
        return self.update(state, frozen, images, targets, batch["label"])


@dataclasses.dataclass(frozen=True)
class PackedTrainStep:
    """``(state, frozen, hyper, batch) -> (state, metrics)`` of packed points: one ``prepare`` for them all (same seed
    and step: the same mixed batch) and the packed ``update``."""

    prepare: Callable
    update: Callable

    def __call__(self, state, frozen, hyper, batch):
        images, targets = self.prepare(state["step"], batch)
        return self.update(state, frozen, hyper, images, targets, batch["label"])


def batch_shapes(cfg, num_classes: int, *, realmix: bool = False) -> tuple[dict, tuple]:
    """(the global batch of augmented uint8 images ``prepare`` takes, the ``(images, targets, labels)`` ``update``
    takes), as ``jax.ShapeDtypeStruct``s: what :class:`bobjax.classify.input.TrainInput` yields, every host's rows
    together."""
    n, size = cfg.batch_size, cfg.image_size
    spec = lambda shape, dtype: jax.ShapeDtypeStruct((n, *shape), dtype)  # noqa: E731
    fields = {"image": spec((size, size, 3), jnp.uint8), "label": spec((), jnp.int32),
              "source_label": spec((), jnp.int32), "source_weight": spec((), jnp.float32)}
    if realmix:
        fields |= {"partner": fields["image"], "partner_label": fields["label"], "mixed": spec((), jnp.bool_),
                   "partner_source_label": fields["label"], "partner_source_weight": fields["source_weight"]}
    return fields, (spec((size, size, 3), jnp.float32), spec((num_classes,), jnp.float32), fields["label"])


def make_eval_step(graphdef, mesh, *, mean, std, dtype=jnp.float32, packed: bool = False):
    """A jitted ``(params, stats, frozen, uint8 images) -> predicted classes``; ``graphdef`` in evaluation mode.
    ``packed``: ``params`` and ``stats`` stacked over points, predictions ``[points, batch]``."""

    def eval_step(params, stats, frozen, images):
        x = normalize(images.astype(jnp.float32) / 255.0, mean, std).astype(dtype)

        def predict(params, stats):
            return jnp.argmax(nnx.merge(graphdef, params, stats, frozen)(x), axis=-1)

        return jax.vmap(predict)(params, stats) if packed else predict(params, stats)

    return jax.jit(parallel.under_mesh(mesh, eval_step), out_shardings=parallel.replicated(mesh))
