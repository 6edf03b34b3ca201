"""Packed grid points: the classify stage of several points of a sweep trained in one program.

The points of one method and seed of a classifier grid (``configs/paper.py``: learning rate x weight decay x lambda)
read the same data stream (same seed), build the same model and have every shape in common; they differ only in
:data:`bobjax.classify.programs.PACKED_FIELDS`, which reach the update alone (the schedule's peak, AdamW's weight
decay, lambda's per-row loss weights; the input stream, batch layout and model never read them). Trained one by one,
each run reads the frozen weights (CLIP's base) for its own few images per chip. Packed, one program holds the frozen
weights once, each point's trainable state (parameters, BatchNorm statistics, AdamW state) and values stacked on a
leading axis, one input stream and one MixUp/CutMix ``prepare`` (the same seed and step give every point the same
mixed batch), and maps the lone update over the points (``classify.step.make_packed_train_step``); evaluation is
mapped the same way.

Each point still ends as a lone run of its own: its best epoch, validation history, test metrics, TensorBoard log and
``metrics.json`` in its folder, and after every epoch a checkpoint in its own ``classify.partial/`` in the lone run's
layout, so a killed pack resumes packed or one point at a time (``config.compare.pack_points=False``), and a point can
be rerun alone. Points whose checkpoints stand at different epochs (a kill between two points' saves) train as
separate packs. Memory: the stacked state (parameters, AdamW's two moments, the best weights so far) and each point's
activations grow with the points, the frozen weights do not (docs/pipeline.md gives the sizes); on an accelerator the
packed step is compiled and checked against the device's memory before the first step, and a pack that cannot fit
with the headroom a config is advised to leave (``bobjax.fit.HEADROOM``: bobjax chose the pack's size, so it does
not run it tight) is split in halves until its packs fit (logged); points that fit no pack of two are left to run
alone (whose own check then names the setting to change if one point cannot fit either).
"""

from __future__ import annotations

import contextlib
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bobjax import fit, parallel, run_folder
from bobjax.classify import programs, stage
from bobjax.training import loop


def pack_key(config, workdir) -> str:
    """Equal for runs that can train packed: the config but for ``classify``'s :data:`programs.PACKED_FIELDS`, and the
    folders of the synthetic set and the filter's choice it reads (a run may hold a copy of its own, made before
    sharing). ``workdir`` None: the config alone, as ``bobjax.aot`` counts packs before any folder exists (runs of
    equal configs share those stages: ``bobjax.share``)."""
    fields = config.to_dict()
    for name in programs.PACKED_FIELDS:
        fields["classify"].pop(name)
    reads = [s for s, used in (("generate", config.classify.mixing != "real_only"),
                               ("filter", config.filter.rule != "none")) if used and workdir is not None]
    return json.dumps([fields, [str(run_folder.stage_dir(workdir, s)) for s in reads]], sort_keys=True, default=str)


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _keep_best(better, state, best):
    """``best`` with each point's parameters and statistics replaced by ``state``'s where ``better`` says so."""
    def pick(new, old):
        return jnp.where(better.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

    return jax.tree.map(pick, {"params": state["params"], "stats": state["stats"]}, best)


def run(points) -> dict:
    """Trains ``points`` (``[(config, workdir)]``, equal :func:`pack_key`) packed; writes each point's
    ``classify/metrics.json`` as its lone run would; returns ``{workdir: metrics}`` of the points it finished (those
    of a pack that cannot fit the device are left out, to run alone)."""
    keys = {pack_key(config, workdir) for config, workdir in points}
    if len(keys) > 1:
        raise ValueError(f"classify.packed.run: the points {[w for _, w in points]} differ in more than "
                         f"{programs.PACKED_FIELDS}; only such points train packed")
    config, workdir = points[0]
    built = stage.setup(config, workdir)
    cfg, data = config.classify, built.data
    tx, _ = programs.optimizer(cfg, built.params, data.phases[0].steps_per_epoch, data.total_steps)
    # Every point starts alike (same seed); AdamW's state has the same layout for any of the points' values.
    state = jax.device_put({"step": jnp.zeros((), jnp.int32), "params": built.params, "stats": built.stats,
                            "opt_state": tx.init(built.params)}, parallel.replicated(built.mesh))
    best = stage.copy_tree({"params": state["params"], "stats": state["stats"]})
    resumed = {}  # epoch -> [(config, workdir, state, best, meta)]
    for config, workdir in points:
        restored = stage.checkpoints(workdir).restore({"state": state, "best": best}, json=("meta",))
        if restored is None:
            one = (config, workdir, state, best, stage.new_meta())
        else:
            one = (config, workdir, restored["state"], restored["best"], dict(restored["meta"]))
        resumed.setdefault(one[-1]["epoch"], []).append(one)
    # largest: the most points a pack holds (fewer once a pack did not fit); compiled: programs for the next pack.
    finished, largest, compiled = {}, len(points), {}
    for epoch in sorted(resumed):
        if epoch:
            logging.info("classify: %d packed point(s) resume after epoch %d", len(resumed[epoch]), epoch)
        waiting = resumed[epoch]
        while waiting and largest > 1:
            pack, waiting = waiting[:largest], waiting[largest:]
            try:
                finished |= _train(built, pack, compiled)
            except fit.DoesNotFit as e:
                largest, waiting = len(pack) // 2, pack + waiting
                logging.warning("classify: %d points do not fit the device packed (%s); %s", len(pack), e,
                                f"packs of {largest} next" if largest > 1 else "they train one by one")
    return finished


def _train(built: stage.Setup, points, compiled: dict) -> dict:
    """Trains ``points`` (``(config, workdir, state, best, meta)``, their checkpoints at one epoch) as one pack;
    ``compiled``: the packed programs by (batch layout, points), kept for the next pack (the points' values are
    arguments). Raises :class:`bobjax.fit.DoesNotFit`, before the first step, if the pack cannot fit the device."""
    configs, workdirs = [p[0] for p in points], [p[1] for p in points]
    cfgs, metas, count = [c.classify for c in configs], [p[4] for p in points], len(points)
    config, cfg, data, mesh, frozen = configs[0], configs[0].classify, built.data, built.mesh, built.frozen
    replicated = parallel.replicated(mesh)
    trained = ("params", "stats", "opt_state")
    state = jax.device_put({"step": points[0][2]["step"], **_stack([{k: p[2][k] for k in trained} for p in points])},
                           replicated)
    best = jax.device_put(_stack([p[3] for p in points]), replicated)
    unstack = jax.jit(lambda tree: [jax.tree.map(lambda x: x[k], tree) for k in range(count)],  # noqa: E731
                      out_shardings=replicated)
    keep_best = jax.jit(_keep_best, out_shardings=replicated)
    schedules = [programs.optimizer(c, built.params, data.phases[0].steps_per_epoch, data.total_steps)[1]
                 for c in cfgs]  # Each point's learning rate, for its log.

    # Steps: every batch layout still to come, built (and on an accelerator checked against its memory) up front.
    step = int(state["step"])
    train_steps = {}
    for phase in data.phases[data.phases.index(data.phase_at(step)[0]):] if step < data.total_steps else []:
        parts = data.parts(phase)
        hyper = jax.device_put(programs.packed_hyper(cfgs, parts, phase.kind), replicated)
        if (phase.kind, count) not in compiled:
            prepare, train_step = programs.packed_train_programs(
                cfg, mesh, built.graph, parts=parts, kind=phase.kind, hyper=hyper, params=built.params,
                steps_per_epoch=data.phases[0].steps_per_epoch, total_steps=data.total_steps, state=state,
                frozen=frozen, mean=built.classifier.mean, std=built.classifier.std,
                lora_dropout=built.classifier.lora_dropout, dtype=built.dtype, seed=config.seed,
                num_classes=built.num_classes)
            compiled[phase.kind, count] = prepare, stage.checked_update(
                train_step, (state, frozen, hyper, *built.update_inputs(cfg)), headroom=True)
        train_steps[phase.kind] = (*compiled[phase.kind, count], hyper)
    eval_step = built.eval_step(packed=True)

    out_dirs = [run_folder.stage_dir(w, "classify") for w in workdirs]
    writers = [loop.writer(d / "tensorboard") for d in out_dirs]
    saved = [stage.checkpoints(w) for w in workdirs]
    window = loop.MetricWindow()
    batches = data.batches(step)
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(loop.progress_bar(data.total_steps, step, f"classify ({count} points)"))
        for checkpoints in saved:
            stack.enter_context(checkpoints)
        for epoch in range(metas[0]["epoch"], built.total_epochs):
            phase, _ = data.phase_at(step)
            prepare, train_step, hyper = train_steps[phase.kind]
            for _ in range(phase.steps_per_epoch):
                batch = parallel.global_batch(next(batches), mesh, cfg.batch_size)
                if step == 0:  # The first batch as every point's model sees it, once.
                    grid = stage.first_batch_grid(prepare(state["step"], batch)[0])
                    for writer in writers:
                        writer.write_images(0, {"train_batch": grid})
                state, step_metrics = train_step(state, frozen, hyper, batch)
                window.add(step_metrics)
                step += 1
                bar.update()
                if loop.due(step, stage.LOG_EVERY, data.total_steps):
                    scalars = window.mean(per_row=True)
                    for k, writer in enumerate(writers):
                        writer.write_scalars(step, {"train/" + name: v if np.ndim(v) == 0 else v[k]
                                                    for name, v in scalars.items()}
                                             | {"train/lr": float(schedules[k](step - 1))})
            for loss, workdir, checkpoints in zip(np.asarray(step_metrics["loss"]), workdirs, saved):
                loop.check_finite(float(loss), what=f"classifier of {workdir}", step=step - 1, checkpoints=checkpoints,
                                  hint="lower config.classify.learning_rate")
            accuracies = [None] * count
            if built.has_validation:
                predictions, labels = stage.evaluate(eval_step, state, frozen, built.splits.validation, mesh,
                                                     cfg.image_size, cfg.batch_size)
                accuracies = [float(a) for a in np.mean(predictions == labels, axis=-1) * 100]
                for writer, accuracy in zip(writers, accuracies):
                    writer.write_scalars(step, {"validation/accuracy": accuracy})
            better = np.asarray([stage.record_epoch(meta, epoch, a) for meta, a in zip(metas, accuracies)])
            best = keep_best(jax.device_put(better, replicated), state, best)
            states = unstack({k: state[k] for k in trained})
            for checkpoints, one_state, one_best, meta in zip(saved, states, unstack(best), metas):
                checkpoints.save(epoch + 1, {"state": {"step": state["step"], **one_state}, "best": one_best},
                                 json={"meta": meta})

    # Test each point at its best validation epoch.
    predictions, labels = stage.evaluate(eval_step, best, frozen, built.splits.test, mesh, cfg.image_size,
                                         cfg.batch_size)
    finished = {}
    for k, (config, workdir) in enumerate(zip(configs, workdirs)):
        finished[workdir] = stage.result(config, built, metas[k], predictions[k], labels)
        stage.write_result(out_dirs[k], writers[k], step, finished[workdir])
    return finished
