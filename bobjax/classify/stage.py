"""The ``classify`` stage: a classifier trained on the real + synthetic stream, evaluated on the real test split.

Reads the real splits (``bobjax.data.make_splits``) and ``WORKDIR/synthetic/`` (absent for ``real_only``), only the
images the filter kept when ``config.filter.rule`` is set (``WORKDIR/filter/keep.json``);
trains with AdamW and warm-up + cosine in one sharded jitted step; evaluates on validation after every epoch
and on test with the parameters of the best validation epoch; writes ``WORKDIR/classify/metrics.json``.
Checkpoints (``WORKDIR/classify.partial/``, orbax) carry the state and the best parameters so far, so a killed
run resumes at its last finished epoch and ends exactly as an uninterrupted one. TensorBoard logs (loss, lr,
accuracy, one grid of augmented training images) go to ``WORKDIR/classify/tensorboard``.

The pieces a run is made of (:func:`setup`, :func:`evaluate`, :func:`record_epoch`, :func:`result`, the checkpoints)
are the ones ``classify.packed`` trains several grid points with at once, so a packed point ends as a lone run does.
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


def evaluate(eval_step, weights, frozen, source, mesh, image_size: int,
             batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels of ``source`` with ``weights`` (``{"params", "stats"}``); predictions ``[..., images]``
    (a packed ``eval_step`` gives one row per point)."""
    predictions, labels = [], []
    for batch, valid in input_lib.eval_batches(source, image_size, batch_size, parallel.host_rows(batch_size, mesh)):
        batch = parallel.global_batch(batch, mesh, batch_size)
        predicted = eval_step(weights["params"], weights["stats"], frozen, batch["image"])
        predictions.append(np.asarray(predicted)[..., :valid])
        labels.append(parallel.to_host(batch["label"])[:valid])
    return np.concatenate(predictions, axis=-1), np.concatenate(labels)


def copy_tree(tree):
    """A copy that outlives the train step's donation of the state's buffers."""
    return jax.tree.map(lambda x: x.copy(), tree)


@dataclasses.dataclass
class Setup:
    """What a classifier run has before its first step: the mesh, the real splits, the training stream, the model
    split as the steps take it (training graph, what trains, BatchNorm statistics, the frozen rest, placed). A pack of
    grid points (``classify.packed``) shares one: same seed, data and shapes."""

    mesh: object
    splits: object
    data: input_lib.TrainInput
    classifier: backbones.Classifier
    dtype: object
    graph: nnx.GraphDef
    params: nnx.State
    stats: nnx.State
    frozen: nnx.State

    @property
    def num_classes(self) -> int:
        return len(self.splits.class_names)

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.data.phases)

    @property
    def has_validation(self) -> bool:
        return self.splits.validation is not None and len(self.splits.validation) > 0

    def eval_step(self, packed: bool = False):
        return step_lib.make_eval_step(self.classifier.eval_graph, self.mesh, mean=self.classifier.mean,
                                       std=self.classifier.std, dtype=self.dtype, packed=packed)

    def update_inputs(self, cfg) -> tuple:
        """The abstract ``(images, targets, labels)`` an update takes (for its fit check)."""
        return step_lib.batch_shapes(cfg, self.num_classes, realmix=cfg.mixing == "realmix")[1]


def setup(config, workdir: str) -> Setup:
    """Mesh, data and model of the run ``config`` in ``workdir`` (parameters and optimiser state in float32,
    computation in ``config.classify.dtype``)."""
    cfg = config.classify
    checkpoint = backbones.resolve_checkpoint(cfg)  # First: weights that cannot be fetched fail before any work.
    mesh = meshes.stage_mesh(config, "classify")
    splits = make_splits(config.data, config.seed)
    workers = input_lib.worker_count(cfg.input_workers, mesh.devices.flat[0].platform)
    data = input_lib.TrainInput(cfg, splits.train, _synthetic(config, workdir), config.seed, cfg.image_size,
                                parallel.host_rows(cfg.batch_size, mesh), workers)
    dtype = step_lib.compute_dtype(cfg.dtype, mesh)
    classifier = backbones.build(cfg, checkpoint, splits.class_names, splits.descriptor, dtype=dtype,
                                 rngs=nnx.Rngs(config.seed))
    graph, params, stats, frozen = nnx.split(classifier.model, classifier.trainable, nnx.BatchStat, ...)
    frozen = jax.device_put(frozen, parallel.replicated(mesh))
    return Setup(mesh, splits, data, classifier, dtype, graph, params, stats, frozen)


def checked_update(train_step, lower_args: tuple, headroom: bool = False):
    """``train_step`` with the update it will run: compiled and checked against the device's memory first on an
    accelerator (``bobjax.fit``), so a step that cannot fit stops the stage before its first step (``headroom``:
    :func:`bobjax.fit.refused`)."""
    update = fit.program_to_run(train_step.update, lambda: train_step.update.lower(*lower_args),
                                "the classifier's train step", "classify", headroom)
    return dataclasses.replace(train_step, update=update)


def new_meta() -> dict:
    return {"epoch": 0, "best_epoch": 0, "best_validation": -1.0, "history": []}


def record_epoch(meta: dict, epoch: int, accuracy: float | None) -> bool:
    """Books finished ``epoch`` (from 0) and its validation ``accuracy`` in ``meta``; whether it is the best so far.
    Without validation the last epoch is best."""
    meta["epoch"] = epoch + 1
    meta["history"].append(accuracy)
    if accuracy is None or accuracy > meta["best_validation"]:
        meta["best_validation"], meta["best_epoch"] = -1.0 if accuracy is None else accuracy, epoch + 1
        return True
    return False


def result(config, built: Setup, meta: dict, predictions: np.ndarray, labels: np.ndarray) -> dict:
    """``metrics.json``: the run's schedule, best epoch, validation history and test metrics."""
    cfg, splits, classes = config.classify, built.splits, built.num_classes
    train_counts = np.bincount(splits.train.labels(), minlength=classes) if config.data.imbalance > 0 else None
    validation = meta["best_validation"] if built.has_validation else None
    return {"backbone": cfg.backbone, "mixing": cfg.mixing, "epochs": built.total_epochs,
            "steps": built.data.total_steps, "best_epoch": meta["best_epoch"], "validation_top1": validation,
            "validation_history": meta["history"], "class_names": splits.class_names,
            "test": metrics.summarize(predictions, labels, classes, train_counts)}


def write_result(out_dir, writer, step: int, result: dict) -> None:
    writer.write_scalars(step, {"test/accuracy": result["test"]["top1"]})
    writer.flush()
    if parallel.is_main_process():
        artifacts.write_json(out_dir / "metrics.json", result)


def first_batch_grid(images) -> np.ndarray:
    """The first batch as the model sees it (16 images), for TensorBoard."""
    return image_grid(to_uint8(parallel.to_host(images)[:16], low=0.0))[None]


def run(config, workdir: str) -> dict:
    """Trains, evaluates and writes ``metrics.json`` (returned)."""
    cfg = config.classify
    built = setup(config, workdir)
    mesh, data, frozen = built.mesh, built.data, built.frozen
    steps_per_epoch = [p.steps_per_epoch for p in data.phases]
    tx, learning_rate = programs.optimizer(cfg, built.params, steps_per_epoch[0], data.total_steps)
    state = {"step": jnp.zeros((), jnp.int32), "params": built.params, "stats": built.stats,
             "opt_state": tx.init(built.params)}
    state = jax.device_put(state, parallel.replicated(mesh))
    best = copy_tree({"params": state["params"], "stats": state["stats"]})
    meta = new_meta()

    # Resume after the last finished epoch, if any.
    saved = checkpoints(workdir)
    restored = saved.restore({"state": state, "best": best}, json=("meta",))
    if restored is not None:
        state, best, meta = restored["state"], restored["best"], dict(restored["meta"])
        logging.info("classify: resumed after epoch %d", meta["epoch"])

    # Steps: one jitted train step per batch layout (a phase of real only, lambda or alpha batches).
    eval_step = built.eval_step()
    train_steps = {}

    def step_fns(phase):
        """(prepare, train step) of a phase's batch layout, built once per layout."""
        if phase.kind not in train_steps:
            prepare, train_step = programs.train_programs(
                cfg, mesh, built.graph, parts=data.parts(phase), kind=phase.kind, tx=tx, state=state, frozen=frozen,
                mean=built.classifier.mean, std=built.classifier.std, lora_dropout=built.classifier.lora_dropout,
                dtype=built.dtype, seed=config.seed, num_classes=built.num_classes)
            train_steps[phase.kind] = prepare, checked_update(train_step, (state, frozen, *built.update_inputs(cfg)))
        return train_steps[phase.kind]

    # Loop: epochs of steps, validation and a checkpoint after each epoch.
    out_dir = run_folder.stage_dir(workdir, "classify")
    writer = loop.writer(out_dir / "tensorboard")
    window = loop.MetricWindow()
    step = int(state["step"])
    batches = data.batches(step)
    with saved, loop.progress_bar(data.total_steps, step, "classify") as bar:
        for epoch in range(meta["epoch"], built.total_epochs):
            phase, _ = data.phase_at(step)
            for _ in range(phase.steps_per_epoch):
                batch = parallel.global_batch(next(batches), mesh, cfg.batch_size)
                prepare, train_step = step_fns(phase)
                if step == 0:  # The first batch as the model sees it, once.
                    writer.write_images(0, {"train_batch": first_batch_grid(prepare(state["step"], batch)[0])})
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
            accuracy = None
            if built.has_validation:
                predictions, labels = evaluate(eval_step, state, frozen, built.splits.validation, mesh, cfg.image_size,
                                               cfg.batch_size)
                accuracy = float(np.mean(predictions == labels) * 100)
                writer.write_scalars(step, {"validation/accuracy": accuracy})
            if record_epoch(meta, epoch, accuracy):
                best = copy_tree({"params": state["params"], "stats": state["stats"]})
            saved.save(epoch + 1, {"state": state, "best": best}, json={"meta": meta})

    # Test at the best validation epoch.
    predictions, labels = evaluate(eval_step, best, frozen, built.splits.test, mesh, cfg.image_size, cfg.batch_size)
    out = result(config, built, meta, predictions, labels)
    write_result(out_dir, writer, step, out)
    return out
