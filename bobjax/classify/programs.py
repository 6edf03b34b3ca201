"""The classifier's programs, built one way: the classify stage runs them and ``bobjax.aot`` compiles the very same
(MaxText's ``train_compile.py`` compiles the ``train_step`` that training runs), so the two cannot drift apart. The
evaluation step has one builder already (``classify.step.make_eval_step``).

Built from the model split as the stage splits it (training graph, what trains, BatchNorm statistics, the frozen
rest) and a batch layout (``classify.input.batch_parts``); the state is the caller's, concrete in the stage and
abstract (``jax.ShapeDtypeStruct``) in ``bobjax.aot``. Packed grid points (``classify.packed``) have their
builder here too (:func:`packed_train_programs`), for the same reason.
"""

from __future__ import annotations

import numpy as np
import optax

from bobjax.classify import optim
from bobjax.classify import step as step_lib


def optimizer(cfg, params, steps_per_epoch: int, total_steps: int) -> tuple[optax.GradientTransformation,
                                                                           optax.Schedule]:
    """(AdamW, its warm-up cosine learning-rate schedule over the run's steps) (``classify.optim``)."""
    learning_rate = optim.schedule(cfg, steps_per_epoch, total_steps)
    return optim.optimizer(cfg, params, learning_rate), learning_rate


def train_programs(cfg, mesh, graph, *, parts, kind: str, tx, state, frozen, mean, std, lora_dropout: float, dtype,
                   seed: int, num_classes: int):
    """(prepare, train step) of one batch layout: ``parts`` the global rows of each part of a batch of a phase of
    ``kind`` (BOB's ``lambda`` weighs its real part ``cfg.real_weight``, the synthetic part the rest)."""
    weights = step_lib.row_weights(parts, cfg.batch_size, cfg.real_weight if kind == "lambda" else None)
    prepare = step_lib.make_prepare(mesh, seed=seed, parts=parts, num_classes=num_classes, mix_prob=cfg.mix_prob)
    train_step = step_lib.make_train_step(graph, mesh, prepare_fn=prepare, weights=weights, mean=mean, std=std, tx=tx,
                                          state_template=state, frozen_template=frozen, seed=seed,
                                          lora_dropout=lora_dropout, dtype=dtype)
    return prepare, train_step



# The config.classify fields packed points may differ in (``bobjax.classify.packed``): each reaches the update alone
# (the learning-rate schedule's peak, AdamW's weight decay, lambda's per-row loss weights), never the input stream,
# the batch layout, a shape or the model.
PACKED_FIELDS = ("learning_rate", "weight_decay", "real_weight")


def packed_hyper(cfgs, parts, kind: str) -> dict[str, np.ndarray]:
    """The stacked per-point values a packed update takes for a batch layout: each point's peak learning rate, weight
    decay and row weights (:func:`bobjax.classify.step.row_weights` of its lambda), ``cfgs`` being the points'
    ``config.classify``."""
    return {"learning_rate": np.asarray([c.learning_rate for c in cfgs], np.float32),
            "weight_decay": np.asarray([c.weight_decay for c in cfgs], np.float32),
            "row_weights": np.stack([step_lib.row_weights(parts, c.batch_size, c.real_weight if kind == "lambda"
                                                          else None) for c in cfgs])}


def packed_train_programs(cfg, mesh, graph, *, parts, kind: str, hyper, params, steps_per_epoch: int,
                          total_steps: int, state, frozen, mean, std, lora_dropout: float, dtype, seed: int,
                          num_classes: int):
    """(prepare, packed train step) of one batch layout (:func:`train_programs` for points stacked on a leading axis):
    ``hyper`` from :func:`packed_hyper`; ``params`` one point's (its shapes choose what decays); each point's AdamW
    and schedule built in the program from its traced peak learning rate and weight decay, with the rest of ``cfg``
    (the points' shared fields)."""

    def point_tx(values):
        schedule = optim.schedule(cfg, steps_per_epoch, total_steps, peak=values["learning_rate"])
        return optim.optimizer(cfg, params, schedule, weight_decay=values["weight_decay"])

    prepare = step_lib.make_prepare(mesh, seed=seed, parts=parts, num_classes=num_classes, mix_prob=cfg.mix_prob)
    train_step = step_lib.make_packed_train_step(graph, mesh, prepare_fn=prepare, point_tx=point_tx, mean=mean, std=std,
                                                 state_template=state, frozen_template=frozen, hyper_template=hyper,
                                                 seed=seed, lora_dropout=lora_dropout, dtype=dtype)
    return prepare, train_step
