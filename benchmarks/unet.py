"""Times our Flax UNet against diffusers' torch UNet: same config, batch, dtype and machine.

    python benchmarks/unet.py --config=medium [--batch=8 --iters=10 --attention=chunked --dtype=fp32]

Prints the median forward and forward+backward (gradient of the mean squared output with respect to all
parameters) times of both, and the throughput ratio ours/torch (above 1: bobjax is faster). bf16 runs use
bfloat16 torch on CPU and float16 (its fused SDPA) on GPU. Other processes share a CPU: the two are timed in turns and compared by medians; still,
repeat a run before trusting a ratio.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch
from diffusers import UNet2DConditionModel as TorchUNet
from flax import nnx

from sd_setup import CONFIGS as SD_CONFIGS, interleaved_medians  # noqa: E402  (puts this checkout's bobjax first on the path)
from result import emit  # noqa: E402

from bobjax.models import weights  # noqa: E402
from bobjax.models.attention import IMPLEMENTATIONS  # noqa: E402
from bobjax.models.sd.unet import UNet2DConditionModel  # noqa: E402

CONFIGS = {  # name: (diffusers UNet config, default batch, latent size, text length)
    name: (spec["unet"], spec["batch"], spec["unet"]["sample_size"], 77) for name, spec in SD_CONFIGS.items()
}


def jax_timers(config, state_dict, inputs, attention, dtype):
    """Jitted forward and forward+backward of our UNet over split params (no NNX graph work per call)."""
    unet = nnx.eval_shape(lambda: UNet2DConditionModel(config, dtype=dtype, attention=attention, rngs=nnx.Rngs(0)))
    weights.load_state_dict(unet, state_dict)
    graphdef, params = nnx.split(unet)
    sample, timesteps, context = (jnp.asarray(x) for x in inputs)
    sample = sample.transpose(0, 2, 3, 1)

    def loss(params):
        out = nnx.merge(graphdef, params)(sample, timesteps, context)
        return jnp.mean(out.astype(jnp.float32) ** 2)

    forward = jax.jit(lambda p: nnx.merge(graphdef, p)(sample, timesteps, context))
    grad = jax.jit(jax.grad(loss))
    return (lambda: forward(params).block_until_ready()), (lambda: jax.block_until_ready(grad(params)))


def torch_timers(model, inputs, dtype, device):
    model = model.to(device=device, dtype=dtype)
    sample, timesteps, context = (torch.as_tensor(x).to(device) for x in inputs)
    sample, context = sample.to(dtype), context.to(dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            model(sample, timesteps, context)
        sync()

    def forward_backward():
        model.zero_grad(set_to_none=True)
        out = model(sample, timesteps, context).sample
        out.float().pow(2).mean().backward()
        sync()

    return forward, forward_backward


def timers(config_name: str, batch: int, attention: str = "auto", dtype: str = "fp32"):
    """((our forward, our forward+backward), (torch's forward, torch's forward+backward)) on the same random
    weights and inputs: each a function that runs one call and waits for it."""
    config, _, size, text_len = CONFIGS[config_name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = torch.float32 if dtype == "fp32" else (torch.float16 if device == "cuda" else torch.bfloat16)
    torch.manual_seed(0)
    model = TorchUNet(**config)
    state_dict = {k: v.numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    inputs = (
        rng.normal(size=(batch, 4, size, size)).astype(np.float32),
        rng.integers(0, 1000, size=(batch,)),
        rng.normal(size=(batch, text_len, config["cross_attention_dim"])).astype(np.float32),
    )
    ours = jax_timers(config, state_dict, inputs, attention, jnp.float32 if dtype == "fp32" else jnp.bfloat16)
    return ours, torch_timers(model, inputs, torch_dtype, device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="medium")
    parser.add_argument("--batch", type=int, default=None, help="default: the config's")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--attention", choices=IMPLEMENTATIONS, default="auto")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--skip_backward", action="store_true", help="time the forward only")
    args = parser.parse_args()

    _, batch, size, text_len = CONFIGS[args.config]
    batch = args.batch or batch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ours, theirs = timers(args.config, batch, args.attention, args.dtype)
    print(f"config={args.config} batch={batch} latents={size}x{size} text={text_len} "
          f"dtype={args.dtype} attention={args.attention} | jax {jax.devices()[0].device_kind} | torch {device} "
          f"threads={torch.get_num_threads()}")  # fmt: skip
    for name, index in (("forward", 0), ("forward+backward", 1)):
        if index and args.skip_backward:
            break
        ours_ms, torch_ms = (1e3 * s for s in interleaved_medians([ours[index], theirs[index]], args.iters))
        print(f"{name:>17}: ours {ours_ms:8.1f} ms   torch {torch_ms:8.1f} ms   "
              f"ratio ours/torch (throughput) {torch_ms / ours_ms:.2f}x")
        emit(f"unet {name}, {args.config}, batch {batch}", batch * 1e3 / ours_ms, batch * 1e3 / torch_ms, "images/s")


if __name__ == "__main__":
    main()
