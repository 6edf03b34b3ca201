"""The ``classify`` stage: a classifier trained on the real + synthetic stream, evaluated on the real test split.

Reads the real splits (``bobjax.data.make_splits``) and ``WORKDIR/synthetic/`` (absent for ``real_only``);
trains with AdamW and warm-up + cosine in one sharded jitted step; evaluates on validation after every epoch
and on test with the parameters of the best validation epoch; writes ``WORKDIR/classify/metrics.json``.
Checkpoints (``WORKDIR/classify.partial/``, orbax) carry the state and the best parameters so far, so a killed
run resumes at its last finished epoch and ends exactly as an uninterrupted one. TensorBoard logs (loss, lr,
accuracy, one grid of augmented training images) go to ``WORKDIR/classify/tensorboard``.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tensorflow_datasets as tfds
import tqdm
from absl import logging
from clu import metric_writers
from flax import nnx

from bobjax import artifacts, parallel
from bobjax.classification import input as input_lib
from bobjax.classification import metrics, optim, step as step_lib
from bobjax.data import augment, make_splits
from bobjax.data.tfds_writer import is_finished, read_dataset
from bobjax.models import classifiers

LOG_EVERY = 10  # Steps between TensorBoard training scalars.


def _synthetic(config, workdir: str):
    if config.classify.mixing == "real_only":
        return None
    folder = artifacts.stage_dir(workdir, "generate")
    if not is_finished(folder):
        raise artifacts.ArtifactError(
            f"config.classify.mixing={config.classify.mixing!r} needs the synthetic images of the generate stage in "
            f"{folder}, which holds no finished dataset; run the generate stage first, or set "
            "config.classify.mixing='real_only'")
    # Labels without decoding a single image: the streams need them all before the first step.
    undecoded = tfds.builder_from_directory(folder).as_data_source(
        split="train", decoders={"image": tfds.decode.SkipDecoding()})
    labels = [int(undecoded[i]["label"]) for i in range(len(undecoded))]
    return input_lib.LabelledSource(read_dataset(folder), labels)


def checkpoint_manager(workdir: str) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    return ocp.CheckpointManager(os.path.join(artifacts.partial_dir(workdir, "classify"), "checkpoints"), options=options)


def _evaluate(eval_step, weights, frozen, source, mesh, image_size: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels of ``source`` with ``weights`` (``{"params", "stats"}``)."""
    predictions, labels = [], []
    for batch, valid in input_lib.eval_batches(source, image_size, batch_size):
        batch = parallel.global_batch(batch, mesh)
        predictions.append(np.asarray(eval_step(weights["params"], weights["stats"], frozen, batch["image"]))[:valid])
        labels.append(parallel.to_host(batch["label"])[:valid])
    return np.concatenate(predictions), np.concatenate(labels)


def _copy(tree):
    """A copy that outlives the train step's donation of the state's buffers."""
    return jax.tree.map(lambda x: x.copy(), tree)


def _grid(images) -> np.ndarray:
    """Up to 16 images [N, H, W, 3] in [0, 1] -> one [1, 4H, 4W, 3] grid for TensorBoard."""
    images = np.asarray(images[:16])
    images = np.concatenate([images, np.zeros((16 - len(images), *images.shape[1:]), images.dtype)])
    rows = [np.concatenate(list(images[r * 4:(r + 1) * 4]), axis=1) for r in range(4)]
    return np.concatenate(rows, axis=0)[None]


def run(config, workdir: str, *, mesh=None, stop_after_epoch: int | None = None) -> dict | None:
    """Trains, evaluates and writes ``metrics.json`` (returned).

    ``mesh`` defaults to ``config.mesh`` over every device. ``stop_after_epoch`` ends the run after that epoch's
    checkpoint, as a kill would (for tests of resumption); it then returns None.
    """
    cfg = config.classify
    mesh = parallel.make_mesh(config.mesh) if mesh is None else mesh
    parallel.local_batch_size(cfg.batch_size, mesh)  # Checks that the batch splits over the devices.
    splits = make_splits(config.data, config.seed)
    num_classes = len(splits.class_names)
    data = input_lib.TrainInput(cfg, splits.train, _synthetic(config, workdir), config.seed, cfg.image_size)
    steps_per_epoch = [p.steps_per_epoch for p in data.phases]

    classifier = classifiers.build(cfg, splits.class_names, splits.descriptor, rngs=nnx.Rngs(config.seed))
    train_graph, params, stats, frozen = nnx.split(classifier.model, classifier.trainable, nnx.BatchStat, ...)
    frozen = jax.device_put(frozen, parallel.replicated(mesh))
    learning_rate = optim.schedule(cfg, steps_per_epoch[0], data.total_steps)
    tx = optim.optimizer(cfg, params, learning_rate)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "stats": stats, "opt_state": tx.init(params)}
    state = jax.device_put(state, parallel.replicated(mesh))
    best = _copy({"params": state["params"], "stats": state["stats"]})
    meta = {"epoch": 0, "best_epoch": 0, "best_validation": -1.0, "history": []}

    manager = checkpoint_manager(workdir)
    if manager.latest_step() is not None:
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), (state, best))
        restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target[0]), best=ocp.args.StandardRestore(target[1]),
            meta=ocp.args.JsonRestore()))
        state, best, meta = restored["state"], restored["best"], dict(restored["meta"])
        logging.info("classify: resumed after epoch %d", meta["epoch"])

    mean, std = classifier.mean, classifier.std
    spec = augment.spec_from_config(cfg)
    eval_step = step_lib.make_eval_step(classifier.eval_graph, mesh, mean=mean, std=std)
    out_dir = artifacts.stage_dir(workdir, "classify")
    main = parallel.is_main_process()
    writer = metric_writers.create_default_writer(os.path.join(out_dir, "tensorboard"), just_logging=not main)
    train_steps = {}

    def step_fns(phase):
        """(prepare, train step) of a phase's batch layout, built once per layout."""
        if phase.kind not in train_steps:
            parts = data.parts(phase)
            weights = step_lib.row_weights(parts, cfg.batch_size, cfg.real_weight if phase.kind == "lambda" else None)
            prepare = step_lib.make_prepare(mesh, seed=config.seed, spec=spec, parts=parts, num_classes=num_classes,
                                            mix_prob=cfg.mix_prob)
            train_steps[phase.kind] = prepare, step_lib.make_train_step(
                train_graph, mesh, prepare_fn=prepare, weights=weights, mean=mean, std=std, tx=tx,
                state_template=state, frozen_template=frozen, seed=config.seed, lora_dropout=classifier.lora_dropout)
        return train_steps[phase.kind]

    total_epochs = sum(p.epochs for p in data.phases)
    has_validation = splits.validation is not None and len(splits.validation) > 0
    step = int(state["step"])
    progress = tqdm.tqdm(total=data.total_steps, initial=step, unit="step", desc="classify", disable=not main)
    batches = data.batches(step)
    for epoch in range(meta["epoch"], total_epochs):
        phase, _ = data.phase_at(step)
        for _ in range(phase.steps_per_epoch):
            batch = parallel.global_batch(next(batches), mesh)
            prepare, train_step = step_fns(phase)
            if step == 0:  # The first batch as the model sees it, once.
                images, _ = prepare(state["step"], batch)
                writer.write_images(0, {"train_batch": _grid(parallel.to_host(images))})
            state, step_metrics = train_step(state, frozen, batch)
            if step % LOG_EVERY == 0:  # Reading a metric waits for the device: not every step.
                writer.write_scalars(step, {"train/" + k: float(v) for k, v in step_metrics.items()}
                                     | {"train/lr": float(learning_rate(step))})
            step += 1
            progress.update(1)
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
        manager.save(epoch + 1, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), best=ocp.args.StandardSave(best), meta=ocp.args.JsonSave(meta)))
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            manager.wait_until_finished()
            progress.close()
            return None
    manager.wait_until_finished()
    progress.close()

    predictions, labels = _evaluate(eval_step, best, frozen, splits.test, mesh, cfg.image_size, cfg.batch_size)
    train_counts = np.bincount(splits.train.labels(), minlength=num_classes) if config.data.imbalance > 0 else None
    result = {"backbone": cfg.backbone, "mixing": cfg.mixing, "epochs": total_epochs, "steps": data.total_steps,
              "best_epoch": meta["best_epoch"], "validation_top1": meta["best_validation"] if has_validation else None,
              "validation_history": meta["history"], "class_names": splits.class_names,
              "test": metrics.summarize(predictions, labels, num_classes, train_counts)}
    writer.write_scalars(step, {"test/accuracy": result["test"]["top1"]})
    writer.flush()
    if main:
        artifacts.write_json(os.path.join(out_dir, "metrics.json"), result)
    return result
