"""The ``classify`` stage: a classifier trained on the real + synthetic stream, evaluated on the real test split.

Reads the real splits (``bobjax.data.make_splits``) and ``WORKDIR/synthetic/`` (absent for ``real_only``), only the
images the filter kept when ``config.filter.rule`` is set (``WORKDIR/filter/keep.json``);
trains with AdamW and warm-up + cosine in one sharded jitted step; evaluates on validation after every epoch
and on test with the parameters of the best validation epoch; writes ``WORKDIR/classify/metrics.json``.
Checkpoints (``WORKDIR/classify.partial/``, orbax) carry the state and the best parameters so far, so a killed
run resumes at its last finished epoch and ends exactly as an uninterrupted one. TensorBoard logs (loss, lr,
accuracy, one grid of augmented training images) go to ``WORKDIR/classify/tensorboard``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from flax import nnx

from bobjax import artifacts, fit, meshes, parallel, run_folder
from bobjax.classify import backbones, metrics, programs
from bobjax.classify import input as input_lib
from bobjax.classify import step as step_lib
from bobjax.data import make_splits
from bobjax.data.fewshot import Subset
from bobjax.errors import ConfigError
from bobjax.filter import keep_list
from bobjax.data.tfds_writer import is_finished, read_dataset
from bobjax.grid import image_grid, to_uint8
from bobjax.training import loop

LOG_EVERY = 10  # Steps between TensorBoard training scalars.


def _synthetic(config, workdir: str):
    if config.classify.mixing == "real_only":
        return None
    folder = run_folder.stage_dir(workdir, "generate")
    if not is_finished(folder):
        raise artifacts.ArtifactError(
            f"config.classify.mixing={config.classify.mixing!r} needs the synthetic images of the generate stage in "
            f"{folder}, which holds no finished dataset; run the generate stage first, or set "
            "config.classify.mixing='real_only'")
    # Labels without decoding a single image: the streams need them all before the first step.
    undecoded = tfds.builder_from_directory(folder).as_data_source(
        split="train", decoders={"image": tfds.decode.SkipDecoding()})
    labels = [int(undecoded[i]["label"]) for i in range(len(undecoded))]
    source = input_lib.LabelledSource(read_dataset(folder), labels)
    if config.filter.rule == "none":
        return source
    kept = keep_list.kept_indices(workdir)  # The filter stage's choice (bobjax.filter): only these images train.
    if not len(kept):
        raise ConfigError(f"config.filter.rule={config.filter.rule!r} kept none of the {len(labels)} synthetic images "
                          f"({keep_list.path(workdir)}); loosen the rule or set config.filter.rule='none'")
    return Subset(source, kept)


def checkpoints(workdir: str) -> loop.Checkpoints:
    """The run's checkpoints: after each epoch, the state, the best weights so far and the epoch bookkeeping."""
    return loop.Checkpoints(run_folder.partial_dir(workdir, "classify") / "checkpoints", max_to_keep=1)


def _evaluate(eval_step, weights, frozen, source, mesh, image_size: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels of ``source`` with ``weights`` (``{"params", "stats"}``)."""
    predictions, labels = [], []
    for batch, valid in input_lib.eval_batches(source, image_size, batch_size, parallel.host_rows(batch_size, mesh)):
        batch = parallel.global_batch(batch, mesh, batch_size)
        predictions.append(np.asarray(eval_step(weights["params"], weights["stats"], frozen, batch["image"]))[:valid])
        labels.append(parallel.to_host(batch["label"])[:valid])
    return np.concatenate(predictions), np.concatenate(labels)


def _copy(tree):
    """A copy that outlives the train step's donation of the state's buffers."""
    return jax.tree.map(lambda x: x.copy(), tree)


def run(config, workdir: str) -> dict:
    """Trains, evaluates and writes ``metrics.json`` (returned)."""
    cfg = config.classify
    checkpoint = backbones.resolve_checkpoint(cfg)  # First: weights that cannot be fetched fail before any work.
    # Mesh and data.
    mesh = meshes.stage_mesh(config, "classify")
    splits = make_splits(config.data, config.seed)
    num_classes = len(splits.class_names)
    workers = input_lib.worker_count(cfg.input_workers, mesh.devices.flat[0].platform)
    data = input_lib.TrainInput(cfg, splits.train, _synthetic(config, workdir), config.seed, cfg.image_size,
                                parallel.host_rows(cfg.batch_size, mesh), workers)
    steps_per_epoch = [p.steps_per_epoch for p in data.phases]

    # Model and optimizer: parameters and optimiser state in float32, computation in ``dtype``.
    dtype = step_lib.compute_dtype(cfg.dtype, mesh)
    classifier = backbones.build(cfg, checkpoint, splits.class_names, splits.descriptor, dtype=dtype,
                                 rngs=nnx.Rngs(config.seed))
    train_graph, params, stats, frozen = nnx.split(classifier.model, classifier.trainable, nnx.BatchStat, ...)
    frozen = jax.device_put(frozen, parallel.replicated(mesh))
    tx, learning_rate = programs.optimizer(cfg, params, steps_per_epoch[0], data.total_steps)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "stats": stats, "opt_state": tx.init(params)}
    state = jax.device_put(state, parallel.replicated(mesh))
    best = _copy({"params": state["params"], "stats": state["stats"]})
    meta = {"epoch": 0, "best_epoch": 0, "best_validation": -1.0, "history": []}

    # Resume after the last finished epoch, if any.
    saved = checkpoints(workdir)
    restored = saved.restore({"state": state, "best": best}, json=("meta",))
    if restored is not None:
        state, best, meta = restored["state"], restored["best"], dict(restored["meta"])
        logging.info("classify: resumed after epoch %d", meta["epoch"])

    # Steps: one jitted train step per batch layout (a phase of real only, lambda or alpha batches).
    mean, std = classifier.mean, classifier.std
    eval_step = step_lib.make_eval_step(classifier.eval_graph, mesh, mean=mean, std=std, dtype=dtype)
    train_steps = {}

    def step_fns(phase):
        """(prepare, train step) of a phase's batch layout, built once per layout."""
        if phase.kind not in train_steps:
            prepare, train_step = programs.train_programs(
                cfg, mesh, train_graph, parts=data.parts(phase), kind=phase.kind, tx=tx, state=state, frozen=frozen,
                mean=mean, std=std, lora_dropout=classifier.lora_dropout, dtype=dtype, seed=config.seed,
                num_classes=num_classes)
            _, update_inputs = step_lib.batch_shapes(cfg, num_classes, realmix=cfg.mixing == "realmix")
            update = fit.program_to_run(train_step.update,
                                        lambda: train_step.update.lower(state, frozen, *update_inputs),
                                        "the classifier's train step", "classify")
            train_step = dataclasses.replace(train_step, update=update)
            train_steps[phase.kind] = prepare, train_step
        return train_steps[phase.kind]

    # Loop: epochs of steps, validation and a checkpoint after each epoch.
    out_dir = run_folder.stage_dir(workdir, "classify")
    writer = loop.writer(out_dir / "tensorboard")
    window = loop.MetricWindow()
    total_epochs = sum(p.epochs for p in data.phases)
    has_validation = splits.validation is not None and len(splits.validation) > 0
    step = int(state["step"])
    batches = data.batches(step)
    with saved, loop.progress_bar(data.total_steps, step, "classify") as bar:
        for epoch in range(meta["epoch"], total_epochs):
            phase, _ = data.phase_at(step)
            for _ in range(phase.steps_per_epoch):
                batch = parallel.global_batch(next(batches), mesh, cfg.batch_size)
                prepare, train_step = step_fns(phase)
                if step == 0:  # The first batch as the model sees it, once.
                    images, _ = prepare(state["step"], batch)
                    grid = image_grid(to_uint8(parallel.to_host(images)[:16], low=0.0))
                    writer.write_images(0, {"train_batch": grid[None]})
                state, step_metrics = train_step(state, frozen, batch)
                window.add(step_metrics)
                step += 1
                bar.update()
                if loop.due(step, LOG_EVERY, data.total_steps):
                    scalars = window.mean()
                    writer.write_scalars(step, {"train/" + k: v for k, v in scalars.items()}
                                         | {"train/lr": float(learning_rate(step - 1))})
            loop.check_finite(float(step_metrics["loss"]), what="classifier", step=step - 1, checkpoints=saved,
                              hint="lower config.classify.learning_rate")
            meta["epoch"] = epoch + 1
            accuracy = None
            if has_validation:
                predictions, labels = _evaluate(eval_step, state, frozen, splits.validation, mesh, cfg.image_size,
                                                cfg.batch_size)
                accuracy = float(np.mean(predictions == labels) * 100)
                writer.write_scalars(step, {"validation/accuracy": accuracy})
            meta["history"].append(accuracy)
            if accuracy is None or accuracy > meta["best_validation"]:  # Without validation the last epoch is best.
                meta["best_validation"], meta["best_epoch"] = -1.0 if accuracy is None else accuracy, epoch + 1
                best = _copy({"params": state["params"], "stats": state["stats"]})
            saved.save(epoch + 1, {"state": state, "best": best}, json={"meta": meta})

    # Test at the best validation epoch.
    predictions, labels = _evaluate(eval_step, best, frozen, splits.test, mesh, cfg.image_size, cfg.batch_size)
    train_counts = np.bincount(splits.train.labels(), minlength=num_classes) if config.data.imbalance > 0 else None
    result = {"backbone": cfg.backbone, "mixing": cfg.mixing, "epochs": total_epochs, "steps": data.total_steps,
              "best_epoch": meta["best_epoch"], "validation_top1": meta["best_validation"] if has_validation else None,
              "validation_history": meta["history"], "class_names": splits.class_names,
              "test": metrics.summarize(predictions, labels, num_classes, train_counts)}
    writer.write_scalars(step, {"test/accuracy": result["test"]["top1"]})
    writer.flush()
    if parallel.is_main_process():
        artifacts.write_json(out_dir / "metrics.json", result)
    return result
