"""Images/s of one classifier training step (forward + backward + AdamW), bobjax vs timm, same machine and batch.

    python benchmarks/classify.py --models resnet50,vit_b16 --batch 8 --iters 5            # CPU, fp32
    python benchmarks/classify.py --batch 128 --iters 20 --dtype bf16                       # GPU: + MFU

Both sides run the same architecture on the same random batch; medians over ``--iters`` timed steps after
``--warmup`` untimed ones (the JAX compile happens there). ``--dtype bf16`` computes in bfloat16 with float32
master weights on both sides (torch autocast) and prints the model FLOP utilisation from XLA's cost analysis
against the accelerator's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from result import emit

from bobjax import config_lib
from bobjax.classify import backbones

TIMM_NAMES = {"resnet50": "resnet50", "vit_b16": "vit_base_patch16_224", "resnet18": "resnet18"}
# Dense bf16 peak FLOP/s by device kind (vendor figures).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "TPU v4": 275e12, "TPU v5 lite": 197e12,
             "TPU v5p": 459e12, "TPU v6 lite": 918e12}


def median_seconds(step, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_jax(name: str, batch: int, size: int, dtype, iters: int, warmup: int) -> tuple[float, float | None]:
    """(seconds per step, FLOPs per step from XLA's cost analysis)."""
    run, flops = make_jax_step(name, batch, size, dtype)
    return median_seconds(run, iters, warmup), flops


def make_jax_step(name: str, batch: int, size: int, dtype):
    """(a function that runs one compiled training step and waits for it, its FLOPs from XLA's cost analysis)."""
    cfg = config_lib.base_config().classify
    cfg.backbone, cfg.image_size = name, size
    model = backbones.build(cfg, None, [f"class {c}" for c in range(1000)], "object", rngs=nnx.Rngs(0)).model
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adamw(1e-4, weight_decay=1e-4)
    state = (params, rest, tx.init(params))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(batch, size, size, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 1000, size=batch))

    def train_step(state, images, labels):
        params, rest, opt_state = state

        def loss_fn(params, rest):
            cast = jax.tree.map(lambda p: p.astype(dtype), params)
            model = nnx.merge(graphdef, cast, rest, copy=True)
            logits = model(images.astype(dtype)).astype(jnp.float32)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), nnx.state(model, nnx.Not(nnx.Param))

        (_, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state

    step = jax.jit(train_step, donate_argnums=0)
    compiled = step.lower(state, images, labels).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) if cost else None
    box = {"state": state}

    def run():
        box["state"] = step(box["state"], images, labels)
        jax.block_until_ready(box["state"])

    return run, flops


def bench_torch(name: str, batch: int, size: int, bf16: bool, iters: int, warmup: int) -> float:
    return median_seconds(make_torch_step(name, batch, size, bf16), iters, warmup)


def make_torch_step(name: str, batch: int, size: int, bf16: bool):
    """A function that runs one timm training step (on the GPU if there is one) and waits for it."""
    import timm
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = timm.create_model(TIMM_NAMES[name], pretrained=False, num_classes=1000, img_size=size) if "vit" in name \
        else timm.create_model(TIMM_NAMES[name], pretrained=False, num_classes=1000)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)
    labels = torch.randint(0, 1000, (batch,), generator=gen).to(device)

    def run():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def peak_flops() -> float | None:
    kind = jax.devices()[0].device_kind
    return next((v for k, v in PEAK_BF16.items() if k.lower() in kind.lower()), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,vit_b16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()
    dtype = jnp.bfloat16 if args.dtype == "bf16" else jnp.float32
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, batch {args.batch}, {args.image_size}px, "
          f"{args.dtype}, median of {args.iters} steps")
    for name in args.models.split(","):
        seconds, flops = bench_jax(name, args.batch, args.image_size, dtype, args.iters, args.warmup)
        line = f"{name:10s} bobjax {args.batch / seconds:8.2f} img/s"
        if not args.skip_torch:
            torch_seconds = bench_torch(name, args.batch, args.image_size, args.dtype == "bf16", args.iters, args.warmup)
            line += f" | timm {args.batch / torch_seconds:8.2f} img/s | ratio {torch_seconds / seconds:5.2f}x"
            emit(f"classifier step {name}, batch {args.batch}, {args.image_size} px", args.batch / seconds,
                 args.batch / torch_seconds, "images/s")
        peak = peak_flops()
        if args.dtype == "bf16" and flops and peak:
            line += f" | MFU {flops / seconds / peak * 100:5.1f}% ({flops / 1e9:.0f} GFLOP/step)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
