"""Wall time and peak memory of each JAX stage's work at real size: LoRA fine-tuning and generation of Stable
Diffusion 2.1-base at 512 px, and BOB's CLIP ViT-B/16 classifier step at 224 px.

    python benchmarks/real_size.py                      # CPU: 2 steps each, batch 1 / 1 / 8
    python benchmarks/real_size.py --finetune_batch=8 --sampler_steps=50 --classify_batch=64 --steps=10   # a GPU

No test runs these models at full size on an accelerator, and a CPU test cannot afford their training steps; this
shows that each stage's jitted step builds, compiles and runs at real size, and what it costs. Weights are random
in the real architectures: SD 2.1-base (``sd_setup.CONFIGS["sd21base"]``) built by diffusers and read by
``load_stable_diffusion``, CLIP ViT-B/16 built by bobjax (``clip.CLIP_B16``; ``--classes`` prompts, CUB's 200 by
default). Each stage runs in a fresh process, so its peak memory is its own: host peak RSS (also when ready, before
the first step), and the device's ``peak_bytes_in_use`` where the device reports it (GPU, TPU). Seconds per stage:
to get ready (load, adapters; the fine-tuning step compiles here, ahead of time), the first call (the sampler and
the classifier step compile here) and the median of the calls after it. The steps are the stages' own:
``finetune.ours_step`` (bobjax.finetune.step, remat as ``config.finetune.remat``), ``generate.ours_sampler``
(bobjax.models.sd.text_to_image: prompts to decoded images) and bobjax.classify.step (augmentation, MixUp/CutMix,
BOB's lambda-weighted half real, half synthetic batch, LoRA on both CLIP towers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from sd_setup import build_pipeline, image_size

STAGES = ("setup", "finetune", "generate", "classify")
CUB_CLASSES = 200  # The classifier's text tower encodes one prompt per class at every step.


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _host_peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB


def _status_gb(field: str) -> float:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    return kib * 1024 / 1e9


def _repeat(fn, steps: int) -> dict:
    """The host peak when ready, seconds of the first call and the median of the ``steps - 1`` after it (all of
    them when there is one), and how far the calls raise the resident memory above what it was when ready
    (``step_growth_gb``: the peak is reset first, through /proc/self/clear_refs; what ``python -m bobjax.aot
    --target=cpu`` predicts as temporaries + outputs not aliased to inputs)."""
    ready_peak = _host_peak_gb()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: resets VmHWM to the current resident size.
    ready = _status_gb("VmRSS")
    times = [_timed(fn) for _ in range(steps)]
    return {"ready_peak_gb": ready_peak, "first_s": times[0], "step_s": statistics.median(times[1:] or times),
            "step_growth_gb": _status_gb("VmHWM") - ready}


def setup(args) -> dict:
    """The random diffusers pipeline the SD stages read (torch; not a bobjax stage, shown for its cost)."""
    return {"ready_s": _timed(lambda: build_pipeline(args.config, args.folder)), "work": f"random {args.config} saved"}


def finetune(args) -> dict:
    import numpy as np

    from finetune import ours_step, prompt_ids

    path, size, batch = os.path.join(args.folder, args.config), image_size(args.config), args.finetune_batch
    pixels = np.random.default_rng(0).uniform(-1, 1, size=(batch, size, size, 3)).astype(np.float32)
    input_ids = prompt_ids(path, batch)
    start = time.perf_counter()
    step, _ = ours_step(path, argparse.Namespace(dtype=args.dtype, attention=args.attention, remat=args.remat),
                        pixels, input_ids)
    ready = time.perf_counter() - start
    return {"ready_s": ready, **_repeat(step, args.steps),
            "work": f"LoRA step {size}px batch {batch} remat={args.remat}"}


def generate(args) -> dict:
    from generate import ours_sampler

    batch, steps = args.generate_batch, args.sampler_steps
    prompts = [f"a bird photo of a crimson forkedtail, image {i}" for i in range(batch)]
    start = time.perf_counter()
    draw, size = ours_sampler(os.path.join(args.folder, args.config),
                              argparse.Namespace(dtype=args.dtype, attention=args.attention, steps=steps), prompts)
    ready = time.perf_counter() - start
    return {"ready_s": ready, **_repeat(draw, args.steps),
            "work": f"{steps} PNDM steps + decode {size}px batch {batch}"}


def classify(args) -> dict:
    """Built as the classify stage builds it (bobjax.classify.stage.run), on a uint8 batch half real, half synthetic."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from ml_collections import ConfigDict

    from bobjax import config_lib, parallel
    from bobjax.classify import backbones, optim
    from bobjax.classify import step as step_lib

    cfg = config_lib.base_config().classify
    cfg.backbone, cfg.image_size, cfg.batch_size = args.backbone, args.classify_size, args.classify_batch
    mesh = parallel.make_mesh(ConfigDict(dict(data=-1, fsdp=1)))
    start = time.perf_counter()
    classes = [f"class {i}" for i in range(args.classes)]
    classifier = backbones.build(cfg, None, classes, "bird", rngs=nnx.Rngs(0))  # Random weights time the same.
    graph, params, stats, frozen = nnx.split(classifier.model, classifier.trainable, nnx.BatchStat, ...)
    frozen = jax.device_put(frozen, parallel.replicated(mesh))
    tx = optim.optimizer(cfg, params, optim.schedule(cfg, args.steps, args.steps))
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "stats": stats, "opt_state": tx.init(params)}
    state = jax.device_put(state, parallel.replicated(mesh))
    half = cfg.batch_size // 2
    parts = [np.arange(half), np.arange(half, cfg.batch_size)]  # BOB's lambda mixing: real rows, synthetic rows
    prepare = step_lib.make_prepare(mesh, seed=0, parts=parts,
                                    num_classes=args.classes, mix_prob=cfg.mix_prob)
    train_step = step_lib.make_train_step(
        graph, mesh, prepare_fn=prepare, weights=step_lib.row_weights(parts, cfg.batch_size, cfg.real_weight),
        mean=classifier.mean, std=classifier.std, tx=tx, state_template=state, frozen_template=frozen, seed=0,
        lora_dropout=classifier.lora_dropout)
    rng = np.random.default_rng(0)
    batch = parallel.global_batch({"image": rng.integers(0, 256, (cfg.batch_size, cfg.image_size, cfg.image_size, 3),
                                                         dtype=np.uint8),
                                   "label": rng.integers(0, args.classes, cfg.batch_size).astype(np.int32),
                                   "source_label": np.full(cfg.batch_size, -1, np.int32),  # Hard labels.
                                   "source_weight": np.zeros(cfg.batch_size, np.float32)}, mesh,
                                  cfg.batch_size)
    ready = time.perf_counter() - start
    box = [state]

    def step():
        box[0], metrics = train_step(box[0], frozen, batch)
        jax.block_until_ready(metrics["loss"])

    return {"ready_s": ready, **_repeat(step, args.steps),
            "work": f"{args.backbone} step {cfg.image_size}px batch {cfg.batch_size} {args.classes} classes"}


def run_stage(args) -> None:
    """This process's stage; prints one ``RESULT {json}`` line with its timings and peak memory."""
    result = globals()[args.stage](args)
    result["host_peak_gb"] = _host_peak_gb()
    if args.stage != "setup":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        result["device_peak_gb"] = stats["peak_bytes_in_use"] / 1e9 if "peak_bytes_in_use" in stats else None
        result["device"] = f"{jax.devices()[0].device_kind} x{jax.device_count()}"
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    from bobjax import config_lib

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sd21base", help="sd_setup config of the SD stages")
    parser.add_argument("--steps", type=int, default=2, help="calls of each stage's step (first + timed)")
    parser.add_argument("--finetune_batch", type=int, default=1)
    parser.add_argument("--generate_batch", type=int, default=1)
    parser.add_argument("--sampler_steps", type=int, default=2)
    parser.add_argument("--remat", action=argparse.BooleanOptionalAction,
                        default=config_lib.base_config().finetune.remat)
    parser.add_argument("--backbone", default="clip_vit_b16")
    parser.add_argument("--classify_batch", type=int, default=8)
    parser.add_argument("--classify_size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=CUB_CLASSES)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--attention", default="auto", help="bobjax attention: auto | xla | cudnn | chunked")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        return run_stage(args)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for stage in args.stages.split(","):
            start = time.perf_counter()
            child = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:], f"--stage={stage}",
                                    f"--folder={folder}"], stdout=subprocess.PIPE, text=True, check=True)
            result = json.loads(next(line[7:] for line in child.stdout.splitlines() if line.startswith("RESULT ")))
            rows.append((stage, time.perf_counter() - start, result))

    device = next((r["device"] for _, _, r in rows if "device" in r), "?")
    print(f"real size [{args.config}, {args.dtype}, attention {args.attention}] on {device}; {args.steps} calls each")
    print(f"{'stage':9s} {'wall s':>7s} {'ready s':>8s} {'first s':>8s} {'median s':>9s} {'host peak GB':>13s} "
          f"{'(when ready)':>13s} {'step growth GB':>15s} {'device peak GB':>15s}  work")
    for stage, wall, r in rows:
        cells = [f"{r[k]:{w}.{2 if k == 'step_growth_gb' else 1}f}" if k in r else " " * (w - 1) + "-" for k, w in
                 (("ready_s", 8), ("first_s", 8), ("step_s", 9), ("host_peak_gb", 13), ("ready_peak_gb", 13),
                  ("step_growth_gb", 15))]
        device_peak = f"{r['device_peak_gb']:15.2f}" if r.get("device_peak_gb") is not None else " " * 14 + "-"
        print(f"{stage:9s} {wall:7.1f} {' '.join(cells)} {device_peak}  {r['work']}")


if __name__ == "__main__":
    main()
