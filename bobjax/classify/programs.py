"""The classifier's programs, built one way: the classify stage runs them and ``bobjax.aot`` compiles the very same
(MaxText's ``train_compile.py`` compiles the ``train_step`` that training runs), so the two cannot drift apart. The
evaluation step has one builder already (``classify.step.make_eval_step``).

Built from the model split as the stage splits it (training graph, what trains, BatchNorm statistics, the frozen
rest) and a batch layout (``classify.input.batch_parts``); the state is the caller's, concrete in the stage and
abstract (``jax.ShapeDtypeStruct``) in ``bobjax.aot``.
"""

from __future__ import annotations

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

