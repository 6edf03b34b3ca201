"""Steps/s and images/s of bobjax's jitted LoRA training step vs diffusers + peft: same weights, adapters, batch.

    python benchmarks/finetune.py                                   # medium config on the CPU
    python benchmarks/finetune.py --config=sd15 --dtype=bf16 --batch=8 --remat --peak_tflops=989   # a GPU

Both sides start from one random-initialised diffusers pipeline saved to a temporary folder and do what a
training step of BOB does: VAE posterior sample of the batch, DDPM noise at random timesteps, the text
encoder (with its LoRA) and the UNet (LoRA on attention) forward and backward, grad-norm clipping, AdamW on
the adapters. The torch side is diffusers' ``train_text_to_image_lora`` step with peft adapters of the same
rank, alpha and targets. The two are timed in turns (the CPU is shared) and compared by medians.
MFU = the compiled step's FLOPs (XLA cost analysis: the whole step, remat recomputation included) / time /
``--peak_tflops``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from sd_setup import CONFIGS, build_pipeline, image_size, interleaved_medians
from result import emit

PROMPT = "a bird photo of a crimson forkedtail in the forest background with the perching pose"


def finetune_config():
    from bobjax import config_lib

    c = config_lib.base_config().finetune  # BOB's rank 16, alpha 16, AdamW, clip 1.0, text-encoder LoRA.
    c.lora_dropout, c.warmup_steps = 0.0, 0
    return c


def ours_step(path: str, args, pixels, input_ids):
    """A no-argument function running one step of bobjax's jitted training step, and that step's FLOPs."""
    import jax
    import jax.numpy as jnp

    from bobjax import parallel
    from bobjax.finetune import step as lora_step
    from bobjax.finetune.adapters import add_adapters, lora_configs
    from bobjax.models.sd import load_stable_diffusion
    from bobjax.models.sd.schedulers import NoiseSchedule
    from bobjax.training import optim

    c = finetune_config()
    dtype = jnp.bfloat16 if args.dtype == "bf16" else jnp.float32
    sd = load_stable_diffusion(path, dtype=dtype, attention=args.attention, remat=args.remat)
    mesh = parallel.make_mesh({"data": 1, "fsdp": 1}, devices=jax.devices()[:1])
    unet, text_encoder = add_adapters(sd, lora_configs(c), seed=0)
    graphs, trainable, frozen = lora_step.split_models(unet, text_encoder, sd.vae)
    optimizer, lr = optim.make_optimizer(c, 10_000)
    step_fn = lora_step.make_train_step(graphs, NoiseSchedule.from_config(sd.scheduler_config), optimizer, lr,
                                        seed=0, lora_dropout=0.0)
    state = [lora_step.init_state(trainable, optimizer)]
    batch = parallel.global_batch({"pixels": pixels, "input_ids": input_ids}, mesh, len(pixels))
    jitted = lora_step.jit_train_step(step_fn, state[0], frozen, mesh, len(pixels))
    compiled = jitted.lower(state[0], frozen, batch).compile()
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))

    def step():
        state[0], metrics = compiled(state[0], frozen, batch)
        jax.block_until_ready(metrics["loss"])

    return step, flops


def torch_step(path: str, args, pixels, input_ids):
    """One step of diffusers' LoRA training script (peft adapters on the UNet and text encoder, AdamW)."""
    import torch
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model

    from bobjax.finetune.adapters import lora_configs

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(path, torch_dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False).to(device)
    c = finetune_config()
    params = []
    for name, module in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder)):
        config = lora_configs(c)[name]
        targets = [t for t in config.targets if any(n.endswith(t) for n, _ in module.named_modules())]
        inject_adapter_in_model(LoraConfig(r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian",
                                           target_modules=targets), module)
        for n, p in module.named_parameters():
            p.requires_grad_("lora_" in n)
            if p.requires_grad:
                p.data = p.data.float()  # fp32 adapters over a bf16 base, as diffusers' cast_training_params
                params.append(p)
        module.train()
    pipe.vae.requires_grad_(False)
    optimizer = torch.optim.AdamW(params, lr=c.learning_rate, betas=(c.adam_b1, c.adam_b2), eps=c.adam_eps,
                                  weight_decay=c.weight_decay)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    pixels = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()).to(device, dtype)
    ids = torch.from_numpy(input_ids).long().to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        with torch.no_grad():
            latents = pipe.vae.encode(pixels).latent_dist.sample() * pipe.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        context = pipe.text_encoder(ids, return_dict=False)[0]
        prediction = pipe.unet(noisy, timesteps, context, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, c.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()

    return step, device


def prompt_ids(path: str, batch: int):
    """``batch`` copies of the benchmark prompt, tokenized as the SD pipeline in ``path`` pads them."""
    import numpy as np
    from transformers import CLIPTokenizer

    from bobjax.models.clip import tokenize_prompts

    with open(os.path.join(path, "text_encoder", "config.json")) as f:
        length = json.load(f)["max_position_embeddings"]
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(path, "tokenizer"))
    return tokenize_prompts(tokenizer, [PROMPT] * batch, length).astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="medium")
    parser.add_argument("--batch", type=int, default=None, help="default: the config's")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--attention", default="auto", help="bobjax attention: auto | xla | cudnn | chunked")
    parser.add_argument("--remat", action="store_true", help="recompute UNet activations in the backward (ours)")
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="the device's peak, for MFU")
    args = parser.parse_args()

    import jax
    import numpy as np

    spec = CONFIGS[args.config]
    batch = args.batch or spec["batch"]
    size = image_size(args.config)
    pixels = np.random.default_rng(0).uniform(-1, 1, size=(batch, size, size, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = build_pipeline(args.config, folder)
        input_ids = prompt_ids(path, batch)
        ours, flops = ours_step(path, args, pixels, input_ids)
        theirs, device = torch_step(path, args, pixels, input_ids)
        ours_s, torch_s = interleaved_medians([ours, theirs], args.iters)

    machine = f"{jax.devices()[0].device_kind} | torch on {device}"
    print(f"finetune step [{args.config}, {size}px, batch {batch}, {args.dtype}, remat={args.remat}] on {machine}")
    for name, seconds in (("bobjax", ours_s), ("torch ", torch_s)):
        print(f"  {name}: {1 / seconds:8.3f} steps/s  {batch / seconds:8.2f} images/s  ({seconds * 1e3:.0f} ms/step)")
    print(f"  ratio ours/torch (throughput): {torch_s / ours_s:.2f}x")
    emit(f"LoRA step {args.config}, batch {batch}, {size} px", batch / ours_s, batch / torch_s, "images/s")
    print(f"  bobjax step: {flops / 1e12:.3f} TFLOP (XLA cost analysis), {flops / ours_s / 1e12:.3f} TFLOP/s"
          + (f", MFU {flops / ours_s / 1e12 / args.peak_tflops:.1%}" if args.peak_tflops else ""))


if __name__ == "__main__":
    main()
