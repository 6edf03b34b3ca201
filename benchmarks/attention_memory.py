"""Bytes per device of one Stable Diffusion attention at 512 px on a target, with ``auto`` against ``xla``.

    JAX_PLATFORMS=cpu python benchmarks/attention_memory.py --target=v5e:2x4
    PYTHONPATH=/work/cuda-plugin JAX_PLATFORMS=cpu XLA_FLAGS=--xla_gpu_enable_triton_gemm=false \\
        python benchmarks/attention_memory.py --target=h100

For SD 2.1-base's and SD 1.5's UNet levels (64x64, 32x32, 16x16 latents; self-attention and the 77-key
cross-attention), compiles one ``dot_product_attention`` call, with and without its gradient, for the target
(bobjax.targets) under ``jax.set_mesh`` of its mesh, and prints one JSON line per call: the kernel each
implementation lowered to and its temporaries by the compiler's ``memory_analysis()``. No hardware needed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's bobjax, not an installed one

LEVELS = {"sd2.1-base": [(4096, 5, 64), (1024, 10, 64), (256, 20, 64)],  # (positions, heads, head size)
          "sd1.5": [(4096, 8, 40), (1024, 8, 80), (256, 8, 160)]}


def kernel(text: str) -> str:
    return "pallas" if "tpu_custom_call" in text else "cudnn" if "__cudnn$fmha" in text else "xla"


def measure(mesh, batch: int, q_len: int, kv_len: int, heads: int, head_dim: int, gradient: bool, implementation):
    import jax
    import jax.numpy as jnp

    from bobjax.models.attention import dot_product_attention

    def attend(q, k, v):
        return dot_product_attention(q, k, v, implementation=implementation)

    fun = jax.grad(lambda *a: jnp.sum(attend(*a).astype(jnp.float32)), argnums=(0, 1, 2)) if gradient else attend
    shapes = [jax.ShapeDtypeStruct((batch, n, heads, head_dim), jnp.bfloat16) for n in (q_len, kv_len, kv_len)]
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names))
    with jax.set_mesh(mesh):
        compiled = jax.jit(fun, in_shardings=sharding).trace(*shapes).lower().compile()
    return {"kernel": kernel(compiled.as_text()),
            "temp_MiB": round(compiled.memory_analysis().temp_size_in_bytes / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="a bobjax.targets name: v5e:2x4, h100, ...")
    parser.add_argument("--batch", type=int, default=8, help="global batch, split over the target's devices")
    args = parser.parse_args()
    from bobjax import targets

    mesh = targets.mesh(args.target)
    for model, levels in LEVELS.items():
        for q_len, heads, head_dim in levels:
            for kv_len in (q_len, 77):
                for gradient in (True, False):
                    row = dict(target=args.target, model=model, q=q_len, kv=kv_len, heads=heads, head_dim=head_dim,
                               gradient=gradient)
                    for implementation in ("auto", "xla"):
                        row[implementation] = measure(mesh, args.batch, q_len, kv_len, heads, head_dim, gradient,
                                                      implementation)
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
