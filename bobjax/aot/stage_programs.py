"""Each JAX stage's compiled programs, built as the stage builds them and lowered on abstract values.

A stage here calls the stage's own builders (``finetune.step.build_step``, the generate stage's sampler
``models.sd.text_to_image.TextToImage``, ``classify.programs.train_programs``, ``classify.step.make_eval_step``,
``quality.encoders.image_embeds``) with the config's sizes and the mesh of the target's devices, and returns how to
lower each program (``jax.stages.Lowered``) with how often a run calls each (``bobjax.aot.counts``). Compiling them is
the caller's (it takes minutes at real size).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
from flax import nnx

from bobjax import meshes, parallel
from bobjax.aot import abstract, counts

STAGES = ("finetune", "generate", "classify", "quality")
# Each stage's program names, as the table prints them (``python -m bobjax.aot --programs``); the compile checks that
# every program built is named here.
PROGRAMS = {"finetune": ("LoRA step",), "generate": ("sampler call",),
            "classify": ("prepare", "train step", "eval step", "packed train step", "packed eval step"),
            "quality": ("CLIP image encoder",)}


@dataclasses.dataclass
class Program:
    stage: str
    name: str
    lower: object  # () -> jax.stages.Lowered; called under the target's mesh (jax.set_mesh), so kernels suit it
    calls: int | None  # per run of the config; None where the dataset's sizes are unknown
    work: str  # what one call does, for the table
    loop: tuple | None = None  # (lower the loop body, times more it runs): XLA's cost analysis counts a body once
    points: int = 1  # Sweep points one call trains or evaluates (a packed classifier program: classify.packed)


def _class_names(config, data) -> tuple[list[str], str]:
    classes = data.classes if data else 200
    return [f"class {i}" for i in range(classes)], config.data.descriptor


def finetune(config, mesh) -> list[Program]:
    """The LoRA step (``finetune.stage.LoraTrainer``): adapters on the UNet and text encoder, remat as configured."""
    from bobjax.finetune import step as lora_step
    from bobjax.finetune.adapters import lora_configs

    c, data = config.finetune, counts.dataset(config)
    steps = counts.lora_steps(config, data) if data else None
    sd = abstract.AbstractSD(abstract.sd_configs(config.model.sd), dtype=jnp.dtype(config.model.dtype),
                             attention=config.model.attention, remat=c.remat, adapters=lora_configs(c),
                             seed=config.seed)
    _, trainable, frozen, optimizer, train_step = lora_step.build_step(
        c, sd.unet, sd.text_encoder, sd.vae, sd.scheduler_config, max(steps or 1, 1), mesh, seed=config.seed)
    state = jax.eval_shape(lambda t: lora_step.init_state(t, optimizer), trainable)
    batch = lora_step.batch_shapes(c, sd.tokenize([""]).shape[1])
    return [Program("finetune", "LoRA step", lambda: train_step.lower(state, frozen, batch), steps,
                    f"{c.resolution}px batch {c.batch_size}, remat={c.remat}, rank {c.lora_rank}")]


def generate(config, mesh) -> list[Program]:
    """One sampler call (``generate.stage.load_generator``): text encoder, the guided loop, VAE decode."""
    from bobjax.models.sd.text_to_image import TextToImage

    g, data = config.generate, counts.dataset(config)
    sd = abstract.AbstractSD(abstract.sd_configs(config.model.sd), dtype=jnp.dtype(config.model.dtype),
                             attention=config.model.attention, remat=False)
    sampler = TextToImage(sd, scheduler=g.scheduler, steps=g.steps, guidance_scale=g.guidance_scale,
                          resolution=g.resolution, mesh=mesh, negative_prompt=g.negative_prompt,
                          strength=g.strength if g.real_guidance else None, mix_weight=g.mvc_weight,
                          place_weights=False)
    batch = meshes.generation_batch(config, mesh.size)
    calls = counts.generation_calls(config, data, batch)[1] if data else None
    steps = sampler.sampler.num_steps
    return [Program("generate", "sampler call", lambda: sampler.lower(batch), calls,
                    f"{steps} {g.scheduler} steps (guidance {g.guidance_scale}) + decode, {g.resolution}px "
                    f"batch {batch} ({g.batch_size_per_device} per device)",
                    loop=(lambda: sampler.lower_denoise(batch), steps - 1))]


@dataclasses.dataclass
class _Classifier:
    """What the classify stage builds before its programs (``classify.stage.setup``), on abstract values."""
    names: list
    steps: int | None
    evals: int | None
    graph: object
    eval_graph: object
    params: object
    stats: object
    frozen: object
    mean: object
    std: object
    dropout: float
    dtype: object
    work: str
    schedule: tuple  # (steps per epoch, total steps) of the learning-rate schedule
    tx: object  # The lone run's AdamW
    state: dict  # The lone run's training state: step, params, stats, opt_state


def _classifier(config, mesh) -> _Classifier:
    from bobjax.classify import programs
    from bobjax.classify import step as step_lib

    cfg, data = config.classify, counts.dataset(config)
    names, descriptor = _class_names(config, data)
    dtype = step_lib.compute_dtype(cfg.dtype, mesh)
    model, eval_graph, trainable, mean, std, dropout = abstract.classifier(cfg, names, descriptor, dtype)
    graph, params, stats, frozen = nnx.split(model, trainable, nnx.BatchStat, ...)
    steps, evals = counts.classifier_steps(config, data) if data else (None, None)
    work = f"{cfg.backbone} {cfg.image_size}px batch {cfg.batch_size}, {len(names)} classes, {jnp.dtype(dtype).name}"
    total = max(steps or 1, 1)
    schedule = (max(1, total // max(cfg.epochs, 1)), total)
    tx, _ = programs.optimizer(cfg, params, *schedule)
    state = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params, "stats": stats,
             "opt_state": jax.eval_shape(tx.init, params)}
    return _Classifier(names, steps, evals, graph, eval_graph, params, stats, frozen, mean, std, dropout, dtype,
                       work, schedule, tx, state)


def _replicated(mesh, tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(mesh)), tree)


def _batch_images(cfg, mesh, classes: int):
    from bobjax.classify import step as step_lib

    images = step_lib.batch_shapes(cfg, classes)[0]["image"]
    return jax.ShapeDtypeStruct(images.shape, images.dtype, sharding=parallel.batch_sharding(mesh, cfg.batch_size))


def classify(config, mesh) -> list[Program]:
    """The classifier's prepare, update and evaluation programs (``classify.stage.run``), for BOB's lambda batch
    layout (or the config's own)."""
    from bobjax.classify import input as input_lib
    from bobjax.classify import programs
    from bobjax.classify import step as step_lib

    cfg, c = config.classify, _classifier(config, mesh)
    state = c.state
    kind = cfg.mixing  # The batch layout of BOB's lambda phase, or the config's own.
    prepare, train_step = programs.train_programs(
        cfg, mesh, c.graph, parts=input_lib.batch_parts(kind, cfg.batch_size), kind=kind, tx=c.tx, state=state,
        frozen=c.frozen, mean=c.mean, std=c.std, lora_dropout=c.dropout, dtype=c.dtype, seed=config.seed,
        num_classes=len(c.names))
    eval_step = step_lib.make_eval_step(c.eval_graph, mesh, mean=c.mean, std=c.std, dtype=c.dtype)
    batch, (images, targets, labels) = step_lib.batch_shapes(cfg, len(c.names), realmix=cfg.mixing == "realmix")
    return [
        Program("classify", "prepare", lambda: prepare.lower(state["step"], batch), c.steps,
                "MixUp/CutMix (augmentation: on the host)"),
        Program("classify", "train step", lambda: train_step.update.lower(state, c.frozen, images, targets, labels),
                c.steps, c.work),
        Program("classify", "eval step", lambda: eval_step.lower(
            *_replicated(mesh, (c.params, c.stats, c.frozen)), _batch_images(cfg, mesh, len(c.names))), c.evals,
            c.work),
    ]


def pack_size(config) -> int:
    """The most sweep points one packed classifier program would hold (``classify.packed``): the largest group
    ``compare.packs`` forms, by the configs; 0 when nothing packs (no comparison, no sweep, ``pack_points`` off)."""
    from bobjax import compare

    if not compare.is_comparison(config):
        return 0
    return max(map(len, compare.packs(compare.runs(config, "."), linked=False)), default=0)


def classify_packed(config, mesh, points: int) -> list[Program]:
    """The packed train and evaluation steps (``classify.packed``) of ``points`` sweep points: the first ``points``
    of the largest pack's, their values stacked; calls: one run of the sweep's short schedule. A pack's MixUp/CutMix
    is the lone ``prepare``, run once for all its points."""
    from bobjax import compare
    from bobjax.classify import input as input_lib
    from bobjax.classify import programs
    from bobjax.classify import step as step_lib

    groups = compare.packs(compare.runs(config, "."), linked=False)  # The config's own method's, if it packs.
    group = max(groups, key=lambda g: (len(g), g[0].method == config.method))[:points]
    first = group[0].config  # A point's own config: the sweep's schedule.
    cfg, c = first.classify, _classifier(first, mesh)
    kind = cfg.mixing
    parts = input_lib.batch_parts(kind, cfg.batch_size)
    hyper = programs.packed_hyper([run.config.classify for run in group], parts, kind)
    stack = lambda tree: jax.tree.map(  # noqa: E731
        lambda x: jax.ShapeDtypeStruct((points,) + x.shape, x.dtype), tree)
    state = {"step": c.state["step"], **stack({k: v for k, v in c.state.items() if k != "step"})}
    _, train_step = programs.packed_train_programs(
        cfg, mesh, c.graph, parts=parts, kind=kind, hyper=hyper, params=c.params,
        steps_per_epoch=c.schedule[0], total_steps=c.schedule[1], state=state, frozen=c.frozen,
        mean=c.mean, std=c.std, lora_dropout=c.dropout, dtype=c.dtype, seed=first.seed, num_classes=len(c.names))
    eval_step = step_lib.make_eval_step(c.eval_graph, mesh, mean=c.mean, std=c.std, dtype=c.dtype, packed=True)
    _, (images, targets, labels) = step_lib.batch_shapes(cfg, len(c.names), realmix=kind == "realmix")
    work = f"{points} points, {c.work}"
    return [
        Program("classify", "packed train step",
                lambda: train_step.update.lower(state, c.frozen, hyper, images, targets, labels), c.steps, work,
                points=points),
        Program("classify", "packed eval step", lambda: eval_step.lower(
            *_replicated(mesh, (stack(c.params), stack(c.stats), c.frozen)), _batch_images(cfg, mesh, len(c.names))),
            c.evals, work, points=points),
    ]


def quality(config, mesh) -> list[Program]:
    """The quality metrics' and filters' CLIP image encoder (``quality.encoders``), on one device as the report and
    filter stages run it. The toy world's oracle is not a real-size program and is skipped."""
    from bobjax.models import clip
    from bobjax.prompt_templates import class_prompts
    from bobjax.quality import encoders

    name = encoders.encoder_name(config)
    if name == encoders.ORACLE:
        return []
    data = counts.dataset(config)
    names, descriptor = _class_names(config, data)
    clip_config = clip.read_config(name) if os.path.isdir(name) else clip.CLIP_B16  # the default's: ViT-B/16
    size = {**clip.VISION_B16, **clip_config["vision_config"]}["image_size"]
    length = {**clip.TEXT_B16, **clip_config["text_config"]}["max_position_embeddings"]
    ids = clip.tokenize_prompts(abstract.clip_tokenizer(), class_prompts(descriptor, names), length)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: encoders.clip_model(clip_config, ids, size)))
    device = parallel.replicated(mesh) if mesh.size == 1 else jax.sharding.SingleDeviceSharding(mesh.devices.flat[0])
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)
    batch = config.quality.batch_size
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32, sharding=device)
    calls = -(-counts.encoded_images(config, data) // batch) if data else None
    return [Program("quality", "CLIP image encoder", lambda: encoders.image_embeds.lower(graphdef, state, images),
                    calls, f"CLIP {name} {size}px batch {batch}, one device")]
