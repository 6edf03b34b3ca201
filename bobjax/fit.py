"""Whether a compiled program fits a device: the check each JAX stage runs before its first step, and the verdict
``python -m bobjax.aot`` gives for a target, with one meaning.

A program *fits* when the compiler's bytes per device (arguments + outputs - aliased + temporaries + code) are at most
what JAX may allocate on the device: the device's own ``bytes_limit`` where a stage runs, the chip's HBM times JAX's
share (:data:`JAX_SHARE`) for a target compiled without it. That limit is the allocator's, so a program above it
cannot run, and one below it is never refused. A program that fits but leaves less than :data:`HEADROOM` of that
limit free is *tight*: the stage warns and ``bobjax.aot`` says so, naming the setting to change, because what a
stage holds beside its program (batches in flight, a checkpoint being written) is not in the compiler's figure.
"""

from __future__ import annotations

from collections.abc import Callable

from absl import logging

from bobjax.errors import ConfigError

GiB = 2**30
# The share of a device's memory a JAX process may allocate: XLA's GPU client preallocates 75 % by default
# (XLA_PYTHON_CLIENT_MEM_FRACTION); on TPU the runtime hands the program all of HBM.
JAX_SHARE = {"gpu": 0.75, "tpu": 1.0, "cpu": 1.0}
HEADROOM = 0.10  # A real config should leave this share of what JAX may use free (issue 28).
# What to change when a stage's program does not fit.
SETTINGS = {
    "finetune": "config.mesh.fsdp (shard the frozen weights over the slice), config.finetune.batch_size or "
                "config.finetune.remat",
    "generate": "config.generate.batch_size_per_device",
    "classify": "config.classify.batch_size",
    "quality": "config.quality.batch_size",
}


def program_bytes(memory) -> int:
    """Bytes per device of a compiled program, from its ``memory_analysis()``."""
    return (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes + memory.generated_code_size_in_bytes)


def usable_on_chip(hbm_bytes: float, platform: str) -> float:
    """What a JAX program may allocate on one device with ``hbm_bytes`` of memory, on ``platform``."""
    return hbm_bytes * JAX_SHARE[platform]


def verdict(total: float, usable: float) -> str:
    """``"fits"``, ``"tight"`` (fits with less than :data:`HEADROOM` of ``usable`` left) or ``"does not fit"``."""
    if total > usable:
        return "does not fit"
    return "tight" if total > (1 - HEADROOM) * usable else "fits"


def describe(total: float, usable: float, what: str, where: str, setting: str) -> str | None:
    """One line for a program that is tight or does not fit, naming ``setting``; None when it fits with room."""
    said = verdict(total, usable)
    if said == "fits":
        return None
    line = (f"{what} needs {total / GiB:.2f} GiB per device (compiler's figure) of the {usable / GiB:.2f} GiB JAX "
            f"may use")
    if said == "does not fit":
        return f"{line} on {where}: it cannot fit; change {setting}"
    return f"{line} on {where}: less than {HEADROOM:.0%} left; consider {setting}"


class DoesNotFit(ConfigError):
    """A stage's compiled program needs more memory than the device has (the message says how much and what to
    change); a caller with a smaller program to try instead (packed grid points run one by one) catches it."""


def refused(said: str, headroom: bool) -> bool:
    """Whether a program of :func:`verdict` ``said`` is refused: one that does not fit, and with ``headroom`` (a size
    bobjax chose itself, such as a pack of grid points, rather than the user's config) one that is tight too."""
    return said == "does not fit" or (headroom and said == "tight")


def check_device(compiled, what: str, setting: str, device, headroom: bool = False) -> None:
    """Stops a stage whose compiled step does not fit ``device`` (one line naming ``setting``), before its first step;
    warns when it is tight (refuses it too with ``headroom``: :func:`refused`). Silent where the device does not
    report its memory (CPU)."""
    usable = (device.memory_stats() or {}).get("bytes_limit")
    if not usable:
        return
    total = program_bytes(compiled.memory_analysis())
    line = describe(total, usable, what, device.device_kind, setting)
    if refused(verdict(total, usable), headroom):
        raise DoesNotFit(line)
    if line:
        logging.warning("%s", line)


def device_to_check():
    """This process's first device if it reports its memory (an accelerator), else ``None`` (a CPU)."""
    import jax

    device = jax.local_devices()[0]  # memory_stats answers only for this process's devices.
    return device if device.memory_stats() else None


def program_to_run(jitted, lower: Callable, what: str, stage: str, headroom: bool = False):
    """The program a stage runs for one step: on an accelerator (this process's device reports its memory),
    ``lower()`` compiled, after :func:`check_device` with the stage's :data:`SETTINGS` (and ``headroom``), so a stage
    that cannot fit stops before its first step and runs the program it compiled for the check (no second compile);
    on a CPU, ``jitted`` itself."""
    device = device_to_check()
    if device is None:
        return jitted
    compiled = lower().compile()
    check_device(compiled, what, SETTINGS[stage], device, headroom)
    return compiled
