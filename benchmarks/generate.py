"""Images/s of bobjax's sampler vs the diffusers torch pipeline: same weights, config, steps, batch, machine.

    python benchmarks/generate.py                      # medium config on the CPU
    python benchmarks/generate.py --config=sd15 --dtype=bf16 --batch=8 --steps=50   # on a GPU (real SD 1.5 size)

Both pipelines are built from one random-initialised diffusers pipeline saved to a temporary folder, so the
comparison covers text encoding, the classifier-free-guided denoising loop and the VAE decode, as users run it.
Prints both throughputs and the ratio ours/torch (above 1 means bobjax is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

CONFIGS = {
    # The medium config: UNet (64, 128, 256), 2 layers per block, cross-attention 256, 32x32 latents.
    "medium": dict(unet=dict(block_out_channels=(64, 128, 256), layers_per_block=2, cross_attention_dim=256,
                             attention_head_dim=8, sample_size=32, norm_num_groups=32,
                             down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
                   vae=dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32),
                   text=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4)),
    # Stable Diffusion 1.5's architecture (random weights): 512 px.
    "sd15": dict(unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                           attention_head_dim=8, sample_size=64),
                 vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2),
                 text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)),
}


def build_pipeline(name: str, folder: str) -> str:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from bobjax.models.clip_tokenizer import write_clip_tokenizer_files

    spec = CONFIGS[name]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**spec["unet"])
    vae = AutoencoderKL(latent_channels=4, down_block_types=("DownEncoderBlock2D",) * len(spec["vae"]["block_out_channels"]),
                        up_block_types=("UpDecoderBlock2D",) * len(spec["vae"]["block_out_channels"]), **spec["vae"])
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
                                        eos_token_id=49407, bos_token_id=49406, pad_token_id=49407, **spec["text"]))
    tokenizer_dir = os.path.join(folder, "_tokenizer")
    write_clip_tokenizer_files(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    path = os.path.join(folder, name)
    pipe.save_pretrained(path)
    return path


def median_seconds(fn, iters: int) -> float:
    fn()  # Warm-up (compilation for JAX, allocator and kernel selection for torch).
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="medium")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--attention", default="xla", help="bobjax attention: xla | cudnn | chunked")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import torch
    from diffusers import StableDiffusionPipeline
    from ml_collections import ConfigDict

    from bobjax import parallel
    from bobjax.generation.sampler import TextToImage
    from bobjax.models.sd import load_stable_diffusion

    with tempfile.TemporaryDirectory() as folder:
        path = build_pipeline(args.config, folder)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = torch.float16 if (args.dtype == "bf16" and device == "cuda") else torch.float32
        pipe = StableDiffusionPipeline.from_pretrained(path, torch_dtype=torch_dtype, safety_checker=None,
                                                       requires_safety_checker=False).to(device)
        pipe.set_progress_bar_config(disable=True)
        sd = load_stable_diffusion(path, dtype=jnp.bfloat16 if args.dtype == "bf16" else jnp.float32,
                                   attention=args.attention)
        size = sd.unet_config["sample_size"] * 2 ** (len(sd.vae_config["block_out_channels"]) - 1)
        mesh = parallel.make_mesh(ConfigDict(dict(data=-1, fsdp=1)))
        ours = TextToImage(sd, scheduler="pndm", steps=args.steps, guidance_scale=2.0, resolution=size, mesh=mesh)
        prompts = [f"a bird photo of a crimson forkedtail, image {i}" for i in range(args.batch)]
        seeds = list(range(args.batch))

        ours_s = median_seconds(lambda: ours(prompts, seeds=seeds), args.iters)
        with torch.inference_mode():
            torch_s = median_seconds(lambda: pipe(prompts, num_inference_steps=args.steps, guidance_scale=2.0,
                                                  height=size, width=size, output_type="np"), args.iters)
    machine = f"{jax.devices()[0].device_kind} x{jax.device_count()} | torch on {device}"
    print(f"generate [{args.config}, {size}px, batch {args.batch}, {args.steps} steps, {args.dtype}] on {machine}")
    print(f"  bobjax : {args.batch / ours_s:8.3f} images/s  ({ours_s:.3f} s/batch)")
    print(f"  torch  : {args.batch / torch_s:8.3f} images/s  ({torch_s:.3f} s/batch)")
    print(f"  ratio ours/torch (throughput): {torch_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
