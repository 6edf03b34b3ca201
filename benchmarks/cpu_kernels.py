"""The classifier's CPU gap, reduced to single ops: one convolution or one matmul, forward + backward, JAX vs torch.

    python benchmarks/cpu_kernels.py                                     # XLA:CPU's defaults
    XLA_FLAGS=--xla_cpu_use_xnnpack=true python benchmarks/cpu_kernels.py   # the same ops under an XLA flag

Why: ``benchmarks/classify.py`` shows whole ResNet-50 / ViT-B/16 steps slower than timm's on CPU. If the same
ratio shows on a lone convolution or matmul at the layer shapes of those models, the gap is the kernel library
(XLA:CPU's Eigen/XNNPACK against torch's oneDNN/MKL), not anything bobjax does around it. Each op is timed as the
gradient of sum(op(x, w)) with respect to x and w, so the backward kernels a training step runs are included.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import torch
from classify import median_seconds
from result import emit

# name: (kind, input shape, weight shape) at batch 8, NHWC for JAX / NCHW for torch; the layers that dominate
# ResNet-50 (a 3x3 conv of stage 1, a 1x1 expansion) and ViT-B/16 (the MLP's first matmul over 8 x 197 tokens).
OPS = {
    "resnet50 conv3x3 56px 64->64": ("conv", (8, 56, 56, 64), (3, 3, 64, 64)),
    "resnet50 conv1x1 56px 64->256": ("conv", (8, 56, 56, 64), (1, 1, 64, 256)),
    "resnet50 conv3x3 14px 256->256": ("conv", (8, 14, 14, 256), (3, 3, 256, 256)),
    "vit_b16 mlp matmul 1576x768->3072": ("matmul", (8 * 197, 768), (768, 3072)),
}


def bench_jax(kind: str, x_shape, w_shape, iters: int) -> float:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=w_shape) * 0.05, jnp.float32)

    def op(x, w):
        if kind == "matmul":
            return x @ w
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    grad = jax.jit(jax.grad(lambda x, w: op(x, w).sum(), argnums=(0, 1)))
    return median_seconds(lambda: jax.block_until_ready(grad(x, w)), iters, warmup=2)


def bench_torch(kind: str, x_shape, w_shape, iters: int) -> float:
    gen = torch.Generator().manual_seed(0)
    if kind == "matmul":
        x = torch.randn(*x_shape, generator=gen).requires_grad_()
        w = (torch.randn(*w_shape, generator=gen) * 0.05).requires_grad_()
        op = lambda: (x @ w).sum()  # noqa: E731
    else:
        n, h, wd, c = x_shape
        kh, kw, ci, co = w_shape
        x = torch.randn(n, c, h, wd, generator=gen).requires_grad_()
        w = (torch.randn(co, ci, kh, kw, generator=gen) * 0.05).requires_grad_()
        op = lambda: torch.nn.functional.conv2d(x, w, padding=kh // 2).sum()  # noqa: E731

    def run():
        x.grad = w.grad = None
        op().backward()

    return median_seconds(run, iters, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated names from OPS")
    args = parser.parse_args()
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; torch threads {torch.get_num_threads()}; "
          f"median of {args.iters}")
    for name in args.ops.split(","):
        kind, x_shape, w_shape = OPS[name]
        ours, ref = bench_jax(kind, x_shape, w_shape, args.iters), bench_torch(kind, x_shape, w_shape, args.iters)
        print(f"{name:36s} jax {ours * 1e3:8.1f} ms | torch {ref * 1e3:8.1f} ms | ratio {ref / ours:5.2f}x",
              flush=True)
        emit(f"fwd+bwd {name}", 1 / ours, 1 / ref, "calls/s")


if __name__ == "__main__":
    main()
