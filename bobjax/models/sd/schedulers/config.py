"""Reads a diffusers ``scheduler_config`` dict the way diffusers does, but refuses what we do not implement.

diffusers builds any scheduler class from any checkpoint's config (``DDIMScheduler.from_config(pndm_config)``):
a field the class does not take is ignored, a missing one gets *that class's* default. We do the same, so a
sampler built here from a checkpoint's config is the one a diffusers pipeline would build. Unlike diffusers,
every field a sampler does read is checked, and a value we do not implement (Karras sigmas, thresholding, ...)
is a ``ValueError`` naming the field, the value and what is accepted, instead of a silently different sampler.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Option:
    """One ``scheduler_config`` field a sampler reads: diffusers' default for it, and which values we accept.

    ``accepts`` checks a value; ``expected`` says in words what it accepts, for the error message.
    """

    default: Any
    accepts: Callable[[Any], bool]
    expected: str


def one_of(*choices: Any, default: Any) -> Option:
    """A field with a closed set of accepted values (the default among them)."""
    return Option(default, lambda v: any(v == c and type(v) is type(c) for c in choices), f"one of {choices!r}")


def switched_off(default: bool | None = False) -> Option:
    """A diffusers feature we do not implement: accepted only while it is off (``false`` or ``null``)."""
    return Option(default, lambda v: v is None or v is False, "false or null (this feature is not implemented)")


def flag(default: bool) -> Option:
    return Option(default, lambda v: isinstance(v, bool), "true or false")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def number(default: float) -> Option:
    return Option(default, _is_number, "a number")


def positive_number(default: float) -> Option:
    return Option(default, lambda v: _is_number(v) and 0 < v < math.inf, "a finite number > 0")


def int_at_least(default: int, minimum: int) -> Option:
    return Option(default, lambda v: _is_int(v) and v >= minimum, f"an integer >= {minimum}")


def _is_beta_list(v: Any) -> bool:
    return v is None or (isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_number(b) and 0 <= b < 1 for b in v))


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

# Fields of the training noise schedule; every diffusers scheduler class reads them with these defaults.
NOISE_SCHEDULE_OPTIONS: dict[str, Option] = {
    "num_train_timesteps": int_at_least(1000, 2),
    "beta_start": positive_number(0.0001),
    "beta_end": positive_number(0.02),
    "beta_schedule": one_of("linear", "scaled_linear", "squaredcos_cap_v2", default="linear"),
    "trained_betas": Option(None, _is_beta_list, "null or a non-empty list of betas in [0, 1)"),
    "rescale_betas_zero_snr": switched_off(),
}


def read_options(scheduler_config: Mapping[str, Any], options: Mapping[str, Option], reader: str) -> dict[str, Any]:
    """Returns ``{field: value}`` for every field in ``options``: the config's value, else the default.

    Fields of ``scheduler_config`` that ``options`` does not name are ignored, as diffusers ignores them
    (checkpoint configs carry the fields of whichever scheduler class they were saved with). ``reader`` names
    the sampler in error messages.
    """
    if not isinstance(scheduler_config, Mapping):
        raise ValueError(f"scheduler_config must be a dict (a diffusers scheduler_config.json), got {scheduler_config!r}")
    values = {}
    for name, option in options.items():
        value = scheduler_config.get(name, option.default)
        if not option.accepts(value):
            raise ValueError(
                f"scheduler_config field {name!r} = {value!r} is not supported by the {reader} sampler; "
                f"expected {option.expected}"
            )
        values[name] = value
    trained = values.get("trained_betas")
    if trained is not None and len(trained) != values["num_train_timesteps"]:
        raise ValueError(
            f"scheduler_config field 'trained_betas' has {len(trained)} betas but 'num_train_timesteps' is "
            f"{values['num_train_timesteps']} (read by the {reader} sampler); expected one beta per training timestep"
        )
    return values
