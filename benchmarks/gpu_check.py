"""On a lent GPU: each JAX stage's real-size step as ``python -m bobjax.aot`` builds it, compiled and run for real, with
PyTorch (diffusers, timm) beside it on the same card; measured step time and peak memory next to the compiled figures.

    python benchmarks/gpu_check.py                           # one GPU, CUB's defaults at SD 2.1-base size, < 8 min
    python benchmarks/gpu_check.py --config=tiny --calls=2   # the same on a CPU with tiny models (a smoke test)
    python benchmarks/gpu_check.py --aot_json=cub_h100.json  # also print the figures compiled for an H100 on a CPU

Stages (each side in its own process, so each peak is its own): the LoRA step (bobjax vs diffusers' LoRA script step
with peft, benchmarks/finetune.py), one generation call (the guided sampler + decode vs diffusers'
StableDiffusionPipeline, same steps, guidance and batch), the classifier's train step (ResNet-50, bobjax vs timm;
BOB's CLIP has no PyTorch twin here). bobjax's programs come from ``bobjax.aot.stage_programs`` (the stages' own
builders, the config's mesh, dtypes and remat), compiled on the GPU and run on random weights of the same shapes. Peak
memory: JAX's ``peak_bytes_in_use``, torch's ``max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from sd_setup import CONFIGS, build_pipeline, image_size

STAGES = ("finetune", "generate", "classify")
PROGRAM = {"finetune": "LoRA step", "generate": "sampler call", "classify": "train step"}
GiB = 2**30


def stage_config(args):
    """CUB's config as the aot command compiles it, with the architecture of ``--config`` (its real sizes for
    ``sd21base``/``sd15``; a tiny size everywhere for ``tiny``)."""
    from bobjax import config_lib

    config = config_lib.load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", "cub.py"))
    config.model.sd = os.path.join(args.folder, args.config)
    config.classify.backbone, config.classify.checkpoint = "resnet50", "random"
    if args.config == "tiny":
        size = image_size("tiny")
        config.finetune.resolution = config.generate.resolution = size
        config.finetune.batch_size = config.generate.batch_size_per_device = 2
        config.generate.steps = 3
        config.classify.backbone, config.classify.image_size, config.classify.batch_size = "resnet_tiny", 32, 4
    return config


def _random_like(info, sharding, key):
    import jax
    import jax.numpy as jnp

    if jnp.issubdtype(info.dtype, jnp.floating):
        value = 0.02 * jax.random.normal(key, info.shape, jnp.float32)
    else:
        value = jnp.zeros(info.shape, jnp.float32)
    return jax.device_put(value.astype(info.dtype), sharding)


def ours(args) -> dict:
    """The stage's program compiled here and called ``--calls`` times on random values of its arguments' shapes."""
    import jax

    from bobjax import meshes, parallel
    from bobjax.aot import compiled_figures, stage_programs

    config = stage_config(args)
    mesh = meshes.stage_mesh(config, args.stage)
    program = next(p for p in getattr(stage_programs, args.stage)(config, mesh) if p.name == PROGRAM[args.stage])
    start = time.perf_counter()
    with jax.set_mesh(mesh):
        lowered = program.lower()
    compiled = lowered.compile()
    figures = compiled_figures.figures(program, compiled, time.perf_counter() - start)
    infos = jax.tree.leaves(lowered.args_info[0])
    # Arguments the program does not read (the VAE's encoder in generation) have no sharding: any placement does.
    shardings = [s or parallel.replicated(mesh) for s in
                 jax.tree.leaves(compiled.input_shardings[0], is_leaf=lambda x: x is None)]
    keys = jax.random.split(jax.random.key(0), len(infos))
    values = [_random_like(i, s, k) for i, s, k in zip(infos, shardings, keys)]
    call_args = jax.tree.unflatten(jax.tree.structure(lowered.args_info[0]), values)
    times = []
    for _ in range(args.calls):
        begin = time.perf_counter()
        out = compiled(*call_args)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - begin)
        if args.stage != "generate":  # The state is donated: the next step takes the new one.
            call_args = (out[0], *call_args[1:])
    stats = jax.devices()[0].memory_stats() or {}
    return {"step_s": sorted(times[1:] or times)[len(times[1:] or times) // 2],
            "peak_gib": stats["peak_bytes_in_use"] / GiB if "peak_bytes_in_use" in stats else None,
            "compiled_gib": figures.total / GiB, "tflop": figures.flops / 1e12, "work": program.work,
            "device": f"{jax.devices()[0].device_kind} x{mesh.size}"}


def torch_side(args) -> dict:
    import numpy as np
    import torch

    config = stage_config(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = os.path.join(args.folder, args.config)
    if args.stage == "finetune":
        from finetune import prompt_ids, torch_step

        c = config.finetune
        pixels = np.random.default_rng(0).uniform(-1, 1, (c.batch_size, c.resolution, c.resolution, 3))
        step = torch_step(path, argparse.Namespace(dtype="bf16" if device == "cuda" else "fp32"),
                          pixels.astype(np.float32), prompt_ids(path, c.batch_size))[0]
    elif args.stage == "generate":
        from diffusers import StableDiffusionPipeline

        from bobjax import meshes

        g = config.generate
        pipe = StableDiffusionPipeline.from_pretrained(
            path, torch_dtype=torch.bfloat16 if device == "cuda" else torch.float32, safety_checker=None,
            requires_safety_checker=False).to(device)
        pipe.set_progress_bar_config(disable=True)

        def step():
            pipe(["a bird photo of a crimson forkedtail"] * meshes.generation_batch(config, 1),
                 num_inference_steps=g.steps, guidance_scale=g.guidance_scale, height=g.resolution,
                 width=g.resolution, output_type="np")
    else:
        from classify import make_torch_step

        cfg = config.classify
        step = make_torch_step(cfg.backbone if cfg.backbone in ("resnet50", "resnet18") else "resnet18",
                               cfg.batch_size, cfg.image_size, bf16=device == "cuda")
    times = []
    for _ in range(args.calls):
        begin = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - begin)
    peak = torch.cuda.max_memory_allocated() / GiB if device == "cuda" else None
    return {"step_s": sorted(times[1:] or times)[len(times[1:] or times) // 2], "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="sd21base")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--calls", type=int, default=4, help="calls per side and stage (the first is not timed)")
    parser.add_argument("--aot_json", default="", help="a bobjax.aot --json of the same config, to print beside")
    parser.add_argument("--part", choices=("ours", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print("RESULT " + json.dumps((ours if args.part == "ours" else torch_side)(args)), flush=True)
        return

    aot = {}
    if args.aot_json:
        with open(args.aot_json) as f:
            aot = {(r["stage"], r["program"]): r for r in json.load(f)["rows"]}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        build_pipeline(args.config, folder)
        for stage in args.stages.split(","):
            result = {}
            for part in ("ours", "torch"):
                child = subprocess.run([sys.executable, os.path.abspath(__file__), f"--config={args.config}",
                                        f"--calls={args.calls}", f"--part={part}", f"--stage={stage}",
                                        f"--folder={folder}"], stdout=subprocess.PIPE, text=True)
                lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
                result[part] = json.loads(lines[-1][7:]) if lines else {"error": f"exit {child.returncode}"}
            rows.append((stage, result))
            print(f"[gpu_check] {stage}: {json.dumps(result)}", flush=True)

    print(f"\n{args.config} on {next((r['ours'].get('device') for _, r in rows if 'device' in r['ours']), '?')}; "
          f"median of {args.calls - 1} calls after the first")
    print(f"{'stage':9s} {'compiled GiB':>12s} {'(CPU aot)':>10s} {'JAX peak':>9s} {'torch peak':>10s} "
          f"{'JAX s':>8s} {'torch s':>8s}  work")
    for stage, r in rows:
        o, t = r["ours"], r["torch"]
        cross = aot.get((stage, PROGRAM[stage]), {}).get("total")
        cell = lambda v, w, f: f"{v:{w}{f}}" if isinstance(v, (int, float)) else " " * (w - 1) + "-"  # noqa: E731
        print(f"{stage:9s} {cell(o.get('compiled_gib'), 12, '.2f')} {cell(cross / GiB if cross else None, 10, '.2f')} "
              f"{cell(o.get('peak_gib'), 9, '.2f')} {cell(t.get('peak_gib'), 10, '.2f')} "
              f"{cell(o.get('step_s'), 8, '.3f')} {cell(t.get('step_s'), 8, '.3f')}  {o.get('work', o.get('error'))}")


if __name__ == "__main__":
    main()
