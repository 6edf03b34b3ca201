"""Which attention kernel serves a call: the ``auto`` rule, and the check of an explicit choice.

Decided at trace time, per call, from the call's shapes, dtype and mask and from the device the program is
compiled for (:func:`bobjax.parallel.target_device`: the mesh in context, so an ahead-of-time compile for an H100
or a v5e from this CPU chooses as the H100 or v5e would). A kernel is only chosen for a call it accepts in both
directions, since whether a gradient will flow is not known while tracing the forward pass.

- ``cudnn`` (NVIDIA GPU, float16/bfloat16): JAX's cuDNN flash attention takes head sizes that are multiples of 8
  up to 128 (up to 256 on Hopper, but JAX asks the *local* GPU, so a compile from a machine without one refuses
  them). Its gradient needs even query and key lengths: JAX passes an empty bias when there is none, which its
  training check counts as a bias, and with a bias cuDNN needs even lengths
  (``jax/_src/cudnn/fused_attention_stablehlo.py``, ``check_is_flash_attention``). So the UNet's cross-attention
  over the text's 77 tokens goes to ``xla``, whose ``[4096, 77]`` scores are small. ``auto`` sends no masked call
  there either: JAX turns a mask into a ``[batch, heads, Lq, Lk]`` bias.
- ``pallas`` (TPU): :mod:`bobjax.models.attention_tpu`; any head size and length (it pads), no boolean mask.
  ``auto`` uses it from 1024 queries on (SD's 32x32 and 64x64 latents, the VAE's mid-block from 256 px): shorter
  sequences (CLIP and ViT towers, 77-257 tokens) would pad to the kernel's 128-blocks for scores that are small.
- on CPU ``chunked`` where one example's float32 scores outgrow 4 MiB of cache, ``xla`` below.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import functools

import jax
from absl import logging

from bobjax.errors import ConfigError

CHUNK_SCORES_BYTES = 4 << 20
PALLAS_MIN_QUERIES = 1024
_HALF = ("float16", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Call:
    """What a kernel choice depends on in one attention call."""

    batch: int
    q_len: int
    kv_len: int
    heads: int
    head_dim: int
    dtype: str
    masked: bool

    @property
    def scores_bytes(self) -> int:  # one example's float32 scores, all heads
        return 4 * self.q_len * self.kv_len * self.heads

    def __str__(self) -> str:
        kind = "self-attention" if self.q_len == self.kv_len else "cross-attention"
        mask = ", masked" if self.masked else ""
        return (f"{kind} of {self.q_len} queries over {self.kv_len} keys ({self.batch} x {self.heads} heads of "
                f"{self.head_dim}, {self.dtype}{mask})")


def is_nvidia(device) -> bool:
    return device.platform == "gpu" and "NVIDIA" in device.device_kind.upper()


def cudnn_refusal(device, call: Call, *, gradient: bool = True) -> str | None:
    """Why JAX's cuDNN attention cannot serve ``call`` on ``device`` (with its ``gradient``); None if it can."""
    if not is_nvidia(device):
        return f"cuDNN runs on NVIDIA GPUs; this program compiles for {device.platform} ({device.device_kind})"
    if call.dtype not in _HALF:
        return f"cuDNN's flash attention takes float16/bfloat16 inputs, got {call.dtype}"
    if call.head_dim % 8 or call.head_dim > 128:
        return f"cuDNN takes head sizes that are multiples of 8 up to 128, got {call.head_dim}"
    if gradient and (call.q_len % 2 or call.kv_len % 2):
        return (f"JAX's cuDNN gradient needs even query and key lengths, got {call.q_len} and {call.kv_len} (it "
                "counts its empty bias as a bias), so a training step would fail")
    return None


def pallas_refusal(device, call: Call, shards: int | None) -> str | None:
    """Why the Pallas TPU kernel cannot serve ``call``; ``shards`` is the size of the mesh in context (None: no mesh
    in context on a machine of several devices)."""
    if device.platform != "tpu" and not interpret_mode():
        return f"the Pallas kernel runs on TPUs; this program compiles for {device.platform} ({device.device_kind})"
    if call.masked:
        return "the Pallas kernel takes no boolean mask"
    if call.dtype not in ("bfloat16", "float32"):
        return f"the Pallas kernel takes bfloat16/float32 inputs, got {call.dtype}"
    if shards is None:
        return ("no mesh in context on several devices, and XLA cannot partition the kernel: trace the step under "
                "jax.set_mesh(mesh) or bobjax.parallel.under_mesh")
    if call.batch % shards:
        return f"the batch of {call.batch} does not split over the {shards} devices of the mesh"
    return None


def interpret_mode() -> bool:
    """Whether Pallas TPU kernels run in interpret mode here (``pltpu.force_tpu_interpret_mode``; tests)."""
    from jax._src import config

    return config.pallas_tpu_interpret_mode_context_manager.value is not None


# The counters of the recorded_choices() blocks open in this context (a context variable: no module global patched,
# and a recording in one thread or task does not see another's calls).
_RECORDERS: contextvars.ContextVar[tuple] = contextvars.ContextVar("attention_choice_recorders", default=())


def choose(device, call: Call, shards: int | None) -> str:
    """The kernel ``auto`` runs for ``call`` on ``device`` (logged once per case, with the reason)."""
    kernel = _choose(device.platform, device.device_kind, call, shards, interpret_mode())
    for counts in _RECORDERS.get():
        counts[(str(call), kernel)] += 1
    return kernel


@contextlib.contextmanager
def recorded_choices():
    """Yields a Counter of ``(call description, kernel)`` that :func:`choose` fills for the calls traced inside
    (``bobjax.aot`` reports which kernel each attention call of a compiled program got)."""
    counts: collections.Counter = collections.Counter()
    token = _RECORDERS.set((*_RECORDERS.get(), counts))
    try:
        yield counts
    finally:
        _RECORDERS.reset(token)


@functools.cache
def _choose(platform: str, device_kind: str, call: Call, shards: int | None, interpret: bool) -> str:
    device = jax.sharding.AbstractDevice(device_kind=device_kind, num_cores=None, platform=platform)
    if platform == "gpu" and is_nvidia(device) and call.dtype in _HALF:
        refusal = cudnn_refusal(device, call) or ("a mask becomes a [batch, heads, Lq, Lk] bias in JAX's cuDNN "
                                                  "wrapper" if call.masked else None)
        choice, why = ("xla", refusal) if refusal else ("cudnn", "cuDNN's fused flash kernel")
    elif platform == "tpu":
        refusal = pallas_refusal(device, call, shards) or (
            f"under {PALLAS_MIN_QUERIES} queries: the kernel's 128-blocks would pad more than the scores cost"
            if call.q_len < PALLAS_MIN_QUERIES else None)
        choice, why = ("xla", refusal) if refusal else ("pallas", "Pallas flash attention: no scores in HBM")
    elif platform == "cpu" and call.scores_bytes > CHUNK_SCORES_BYTES:
        choice, why = "chunked", "scores larger than the cache"
    elif platform == "cpu":
        choice, why = "xla", "scores fit the cache"
    else:
        choice, why = "xla", f"no faster kernel wired for {platform} ({device_kind}) {call.dtype}"
    logging.info("attention 'auto' on %s (%s), %s, %.1f MiB of scores per example: %s (%s)", platform, device_kind,
                 call, call.scores_bytes / 2**20, choice, why)
    return choice


def check_explicit(implementation: str, device, call: Call, shards: int | None) -> None:
    """An explicit ``cudnn`` or ``pallas`` that cannot serve ``call`` stops the trace (before the first step).

    For ``cudnn`` this checks the forward pass; :mod:`bobjax.models.attention_gpu` checks the gradient when one
    is taken."""
    refusal = {"cudnn": lambda: cudnn_refusal(device, call, gradient=False),
               "pallas": lambda: pallas_refusal(device, call, shards)}[implementation]()
    if refusal:
        raise refused(implementation, device, call, shards, refusal)


def refused(implementation: str, device, call: Call, shards: int | None, refusal: str,
            what: str = "") -> ConfigError:
    """The error for an explicit kernel that cannot serve ``call``: which call, why, and what to set."""
    return ConfigError(
        f"attention={implementation!r} cannot serve {what}the {call} on {device.platform} ({device.device_kind}): "
        f"{refusal}. Set the model's attention (config.model.attention) to 'auto', which sends this call to "
        f"{choose(device, call, shards)!r}, or to 'xla'")
