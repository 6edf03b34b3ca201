"""The pipeline's bookkeeping at the paper's counts: a CUB-shaped run (200 classes, 5 shots, N synthetic images per
class) with the models taken out, each stage's own code timed, with its peak memory, at several N.

    nice -n 10 python benchmarks/counts.py --per_class=25,50,100            # 5,000 / 10,000 / 20,000 images
    nice -n 10 python benchmarks/counts.py --per_class=100 --classifier     # + a classifier step's wait for data
    nice -n 10 python benchmarks/counts.py --datadream                      # + 200 per-class LoRAs (tiny SD)

Per count, in a fresh process (so each count's peak memory is its own), on an image folder with CUB's 200 class
folders (5 train and 2 test JPEGs each, 64 px): the caption bank from TSV files (the caption stage, ``tsv``), the
plan (``generate.plan_run``: splits, bank, BOB's context marginalization), writing the synthetic set in the generate
stage's shards and records (images from a stand-in generator at ``--resolution``: flat colours, as encoding costs
little next to a model), the per-class grids and the fixed-noise grid, the PNG export, reading the set back, the
label scans (the classifier's, without decoding) and the report's context scan, the splits' label and id scans, the
classifier's input (its mixing streams over every label, and batches at 224 px), and the report. Each stage's
seconds and peak resident memory above what the process held before it (``/proc/self/clear_refs``, Linux) are
printed per count, and how each grows from the smallest count to the largest: a ratio near the count ratio is
linear.

``--classifier`` also runs the classify stage's own loop for a few steps (ResNet-50, random weights, 224 px,
RandAugment and MixUp/CutMix on the device, BOB's half real, half synthetic batches from the set) and prints the
share of each step spent waiting for the next batch. On a shared machine every number is indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sd_setup, beside this file
CLASSES = 200
SHOTS, TEST_PER_CLASS, REAL_PX = 5, 2, 64


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def measured(results: dict, name: str, fn):
    """Runs ``fn``, recording its seconds and its peak resident memory above the resident memory before it."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Resets VmHWM (the peak) to the current resident size.
    before, start = _status_mb("VmRSS"), time.perf_counter()
    out = fn()
    results[name] = {"s": time.perf_counter() - start, "peak_mb": _status_mb("VmHWM") - before}
    return out


def cub_folder(root: str) -> None:
    """train/ and test/ with CUB's folder names' shape (``001.Species_1``), 64-px JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", SHOTS), ("test", TEST_PER_CLASS)):
        for c in range(CLASSES):
            folder = os.path.join(root, split, f"{c + 1:03d}.Species_{c + 1}")
            os.makedirs(folder)
            for k in range(count):
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                Image.new("RGB", (REAL_PX, REAL_PX), colour).save(os.path.join(folder, f"{k}.jpg"))


def caption_files(folder: str, image_ids: list[str]) -> None:
    """BOB's caption TSVs: a background and a pose per train image, from 20 of each."""
    from bobjax.caption.tsv import write_tsv

    write_tsv(os.path.join(folder, "background.tsv"), image_ids, [f"background {i % 20}" for i in range(len(image_ids))])
    write_tsv(os.path.join(folder, "pose.tsv"), image_ids, [f"pose {i % 20}" for i in range(len(image_ids))])


def cub_config(root: str, per_class: int, resolution: int):
    from bobjax import config_lib

    config = config_lib.load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", "cub.py"))
    config.data.update(dict(source="folder", data_dir=os.path.join(root, "cub"), val_size=0))
    config.caption.update(dict(method="tsv", tsv_dir=os.path.join(root, "captions")))
    config.generate.update(dict(images_per_class=per_class, resolution=resolution, export_png=True))
    config.quality.metrics = False
    config.report.oracle_steps = 0
    return config


def stand_in(resolution: int):
    """A generator without a model: each planned image a flat colour from its label and seed."""
    def generate(planned):
        return np.stack([np.full((resolution, resolution, 3), ((p.label * 7 + p.seed) % 256, p.label % 256, 80),
                                 np.uint8) for p in planned])
    return generate


def warm_up(folder: str) -> None:
    """What the first stage would otherwise pay for every later one: JAX's backend, TensorFlow's and grain's first
    use (hundreds of MB), so each stage's peak is its own work's."""
    import grain
    import jax

    from bobjax.data.tfds_writer import ShardedWriter, read_dataset
    from bobjax.generate import stage as generate

    jax.process_count()
    writer = ShardedWriter(folder, "warm", generate.features(["a"]), "train", 1)
    writer.write_shard(0, [{"image": np.zeros((8, 8, 3), np.uint8), "label": 0, "image_id": "w", "class_name": "a",
                            "prompt": "", "background": "", "pose": "", "seed": 0, "mix_prompt": "",
                            "source_label": -1, "source_weight": 0.0}])
    writer.finalize([1])
    read_dataset(folder)[0]
    list(grain.MapDataset.range(4).map(lambda i: i).to_iter_dataset())


def bookkeeping(per_class: int, resolution: int, classifier: bool, datadream: bool) -> dict:
    """Every stage's work but the models' at ``per_class`` images a class; returns {stage: {s, peak_mb}}."""
    from bobjax import artifacts, main, run_folder
    from bobjax.caption import stage as caption
    from bobjax.classify import input as classify_input
    from bobjax.classify import stage as classify
    from bobjax.data import fewshot
    from bobjax.data.tfds_writer import ShardedWriter, read_dataset
    from bobjax.generate import stage as generate
    from bobjax.report import results as report_results
    from bobjax.report import stage as report

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as root:
        if datadream:  # diffusers (torch) before JAX starts: imported after it, triton's import crashes the process.
            from sd_setup import build_pipeline

            tiny_sd = build_pipeline("tiny", os.path.join(root, "sd"))
        warm_up(os.path.join(root, "warm"))
        cub_folder(os.path.join(root, "cub"))
        config = cub_config(root, per_class, resolution)
        workdir = os.path.join(root, "run")
        splits = measured(results, "splits: label and id scans", lambda: fewshot.make_splits(config.data, 0))
        caption_files(os.path.join(root, "captions"), splits.train.image_ids())
        main.prepare_workdir(config, workdir)
        measured(results, "caption bank (TSV)", lambda: caption.run(config, workdir))
        splits, planned = measured(results, "plan", lambda: generate.plan_run(config, workdir))
        out_dir = run_folder.stage_dir(workdir, "generate")
        draw = stand_in(resolution)

        def write():
            shards = [planned[k:k + generate.SHARD_SIZE] for k in range(0, len(planned), generate.SHARD_SIZE)]
            writer = ShardedWriter(out_dir, "synthetic", generate.features(splits.class_names), "train", len(shards))
            for k, shard in enumerate(shards):
                writer.write_shard(k, generate._records(shard, draw(shard)))
            writer.finalize([len(s) for s in shards])

        measured(results, "write synthetic set", write)
        source = read_dataset(out_dir)
        measured(results, "per-class grids", lambda: generate.write_grids(out_dir / "grids", planned, source))
        measured(results, "fixed-noise grid", lambda: generate.write_fixed_noise_grid(
            out_dir / "grids" / generate.FIXED_NOISE_GRID, planned, splits.class_names, splits.descriptor,
            config.generate.prompt, draw, config.generate.batch_size_per_device))
        measured(results, "PNG export", lambda: generate.export_png(out_dir / "png", source))
        measured(results, "read synthetic set", lambda: sum(source[i]["image"].size for i in range(len(source))))
        synthetic = measured(results, "classifier's label scan", lambda: classify._synthetic(config, workdir))
        run = type("Run", (), {"workdir": artifacts.storage_path(workdir, "workdir")})
        measured(results, "report's context scan",
                 lambda: report_results._synthetic_contexts(run, splits.class_names))
        cfg = config.classify
        data = measured(results, "classifier input: streams", lambda: classify_input.TrainInput(
            cfg, splits.train, synthetic, config.seed, cfg.image_size))
        batches = data.batches(0)
        measured(results, f"classifier input: 10 batches of {cfg.batch_size} at {cfg.image_size} px",
                 lambda: [next(batches) for _ in range(10)])
        results["steps per epoch"] = data.phases[0].steps_per_epoch
        artifacts.write_json(run_folder.stage_dir(workdir, "classify") / "metrics.json",
                             {"class_names": splits.class_names, "validation_top1": None,
                              "test": {"top1": 50.0, "per_class": [50.0] * CLASSES}})
        measured(results, "report", lambda: report.run(config, workdir))
        if classifier:
            results["classifier wait"] = classifier_wait(config, splits, synthetic)
        if datadream:
            per_class_loras(results, root, per_class, tiny_sd)
    return results


def per_class_loras(results: dict, root: str, per_class: int, tiny_sd: str) -> None:
    """DataDream: fine-tuning 200 per-class LoRAs (one step each) and generating every class with its own, the two
    stages end to end with sd_setup's tiny random Stable Diffusion (16 px, 2 sampler steps)."""
    from bobjax import config_lib, main
    from bobjax.finetune import stage as finetune
    from bobjax.generate import stage as generate

    config = config_lib.apply_method(cub_config(root, per_class, 16), "datadream")
    config.model.update(dict(sd=tiny_sd, dtype="float32"))
    config.finetune.update(dict(per_class=True, epochs=1, batch_size=8, resolution=16, warmup_steps=0,
                                sample_every=0, checkpoint_every=1000, lora_rank=4, lora_alpha=4.0, remat=False))
    config.generate.update(dict(steps=2, batch_size=16, export_png=False))
    workdir = os.path.join(root, "datadream")
    main.prepare_workdir(config, workdir)
    measured(results, f"DataDream: {CLASSES} per-class LoRAs (tiny SD)", lambda: finetune.run(config, workdir))
    measured(results, "DataDream: generate with them (tiny SD)", lambda: generate.run(config, workdir))


def classifier_wait(config, splits, synthetic, steps: int = 4) -> dict:
    """The classify stage's loop on ResNet-50 (random weights) at 224 px with RandAugment: per step, seconds waiting
    for the batch (``next`` on the stage's reader, which reads ahead on a thread pool) and seconds in the step."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from bobjax import meshes, parallel
    from bobjax.classify import backbones, optim
    from bobjax.classify import input as classify_input
    from bobjax.classify import step as step_lib

    cfg = config.classify
    cfg.backbone, cfg.checkpoint, cfg.batch_size = "resnet50", "random", 32
    mesh = meshes.stage_mesh(config, "classify")
    classifier = backbones.build(cfg, None, splits.class_names, "bird", rngs=nnx.Rngs(0))
    graph, params, stats, frozen = nnx.split(classifier.model, classifier.trainable, nnx.BatchStat, ...)
    frozen = jax.device_put(frozen, parallel.replicated(mesh))
    tx = optim.optimizer(cfg, params, optim.schedule(cfg, 100, 100))
    state = jax.device_put({"step": jnp.zeros((), jnp.int32), "params": params, "stats": stats,
                            "opt_state": tx.init(params)}, parallel.replicated(mesh))
    data = classify_input.TrainInput(cfg, splits.train, synthetic, config.seed, cfg.image_size,
                                     parallel.host_rows(cfg.batch_size, mesh))
    parts = data.parts(data.phases[0])
    prepare = step_lib.make_prepare(mesh, seed=0, parts=parts,
                                    num_classes=len(splits.class_names), mix_prob=cfg.mix_prob)
    train_step = step_lib.make_train_step(
        graph, mesh, prepare_fn=prepare, weights=step_lib.row_weights(parts, cfg.batch_size, cfg.real_weight),
        mean=classifier.mean, std=classifier.std, tx=tx, state_template=state, frozen_template=frozen, seed=0,
        lora_dropout=classifier.lora_dropout)
    batches, waits, computes = data.batches(0), [], []
    for k in range(steps + 1):  # The first step compiles: not counted.
        start = time.perf_counter()
        batch = parallel.global_batch(next(batches), mesh, cfg.batch_size)
        waited = time.perf_counter() - start
        state, metrics = train_step(state, frozen, batch)
        jax.block_until_ready(metrics["loss"])
        if k:
            waits.append(waited)
            computes.append(time.perf_counter() - start - waited)
    wait, compute = float(np.median(waits)), float(np.median(computes))
    return {"backbone": "resnet50", "batch": cfg.batch_size, "px": cfg.image_size, "randaugment": cfg.randaugment,
            "wait_s": wait, "step_s": compute, "wait_share": wait / (wait + compute)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per_class", default="25,50,100", help="synthetic images per class, one process each")
    parser.add_argument("--resolution", type=int, default=64, help="pixels of the stand-in synthetic images")
    parser.add_argument("--classifier", action="store_true", help="also the classifier's wait for data")
    parser.add_argument("--datadream", action="store_true", help="also 200 per-class LoRAs and their generation")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # set in the child processes
    args = parser.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(bookkeeping(args.one, args.resolution, args.classifier, args.datadream)),
              flush=True)
        return
    counts = [int(n) for n in args.per_class.split(",")]
    table = {}
    for n in counts:
        child = subprocess.run([sys.executable, os.path.abspath(__file__), f"--one={n}",
                                f"--resolution={args.resolution}"] + (["--classifier"] if args.classifier else [])
                               + (["--datadream"] if args.datadream else []),
                               stdout=subprocess.PIPE, text=True, check=True)
        table[n] = json.loads(next(line[7:] for line in child.stdout.splitlines() if line.startswith("RESULT ")))
        print(f"{n} per class: " + json.dumps(table[n]), flush=True)
    first, last = counts[0], counts[-1]
    print(f"\n{CLASSES} classes x {SHOTS} shots; synthetic images per class {counts} ({args.resolution} px stand-ins); "
          f"seconds and peak MB above the process's resident memory before each stage")
    print(f"{'stage':58s}" + "".join(f"{f'{n}: s':>9s}{'MB':>7s}" for n in counts) + f"{'s ratio':>9s}")
    for stage, value in table[first].items():
        if not isinstance(value, dict) or "s" not in value:
            continue
        cells = "".join(f"{table[n][stage]['s']:9.2f}{table[n][stage]['peak_mb']:7.0f}" for n in counts)
        ratio = table[last][stage]["s"] / max(table[first][stage]["s"], 1e-9)
        print(f"{stage:58s}{cells}{ratio:9.1f}")
    print(f"(count ratio {last / first:.0f}: a stage's ratio near it grows linearly, near 1 does not grow)")
    for n in counts:
        if "classifier wait" in table[n]:
            print(f"{n} per class, classifier: " + json.dumps(table[n]["classifier wait"]))


if __name__ == "__main__":
    main()
