"""Images/s of bobjax's sampler vs the diffusers torch pipeline: same weights, config, steps, batch, machine.

    python benchmarks/generate.py                      # medium config on the CPU
    python benchmarks/generate.py --config=sd15 --dtype=bf16 --batch=8 --steps=50   # on a GPU (real SD 1.5 size)

Both pipelines are built from one random-initialised diffusers pipeline saved to a temporary folder, so the
comparison covers text encoding, the classifier-free-guided denoising loop and the VAE decode, as users run it.
Prints both throughputs and the ratio ours/torch (above 1 means bobjax is faster).
"""

from __future__ import annotations

import argparse
import tempfile

from sd_setup import CONFIGS, build_pipeline, interleaved_medians
from result import emit

GUIDANCE_SCALE = 2.0


def ours_sampler(path: str, args, prompts: list[str]):
    """(A no-argument function drawing ``prompts`` with bobjax's jitted guided sampler, from prompts to decoded
    images, at the pipeline's native size; that size). ``args``: ``dtype``, ``attention``, ``steps``."""
    import jax.numpy as jnp
    from ml_collections import ConfigDict

    from bobjax import parallel
    from bobjax.models.sd.text_to_image import TextToImage
    from bobjax.models.sd import load_stable_diffusion

    sd = load_stable_diffusion(path, dtype=jnp.bfloat16 if args.dtype == "bf16" else jnp.float32,
                               attention=args.attention)
    size = sd.unet_config["sample_size"] * 2 ** (len(sd.vae_config["block_out_channels"]) - 1)
    mesh = parallel.make_mesh(ConfigDict(dict(data=-1, fsdp=1)))
    sampler = TextToImage(sd, scheduler="pndm", steps=args.steps, guidance_scale=GUIDANCE_SCALE, resolution=size,
                          mesh=mesh)
    seeds = list(range(len(prompts)))
    return (lambda: sampler(prompts, seeds=seeds)), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="medium")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--attention", default="auto", help="bobjax attention: auto | xla | cudnn | chunked")
    args = parser.parse_args()

    import jax
    import torch
    from diffusers import StableDiffusionPipeline

    with tempfile.TemporaryDirectory() as folder:
        path = build_pipeline(args.config, folder)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = torch.float16 if (args.dtype == "bf16" and device == "cuda") else torch.float32
        pipe = StableDiffusionPipeline.from_pretrained(path, torch_dtype=torch_dtype, safety_checker=None,
                                                       requires_safety_checker=False).to(device)
        pipe.set_progress_bar_config(disable=True)
        prompts = [f"a bird photo of a crimson forkedtail, image {i}" for i in range(args.batch)]
        ours, size = ours_sampler(path, args, prompts)

        def theirs():
            with torch.inference_mode():
                pipe(prompts, num_inference_steps=args.steps, guidance_scale=GUIDANCE_SCALE, height=size, width=size,
                     output_type="np")

        ours_s, torch_s = interleaved_medians([ours, theirs], args.iters, warmup=1)
    machine = f"{jax.devices()[0].device_kind} x{jax.device_count()} | torch on {device}"
    print(f"generate [{args.config}, {size}px, batch {args.batch}, {args.steps} steps, {args.dtype}] on {machine}")
    print(f"  bobjax : {args.batch / ours_s:8.3f} images/s  ({ours_s:.3f} s/batch)")
    print(f"  torch  : {args.batch / torch_s:8.3f} images/s  ({torch_s:.3f} s/batch)")
    print(f"  ratio ours/torch (throughput): {torch_s / ours_s:.2f}x")
    emit(f"generation {args.config}, batch {args.batch}, {args.steps} steps", args.batch / ours_s, args.batch / torch_s,
         "images/s")


if __name__ == "__main__":
    main()
