"""Sweeps chosen by validation, BOB's protocol: each point of a grid over config fields trains on the train split and is
scored on the validation split; the point with the best validation top-1 is chosen, and its test top-1 is the run's
result. Test accuracy never takes part in the choice.

A sweep is part of a comparison, ``config.compare.sweep``: axes separated by ``;``, each a config field and its values
separated by ``|``::

    --config.compare.sweep='classify.learning_rate=1e-3|3e-3;classify.real_weight=0.5|0.8'

Values are typed like the field (``true``/``false``, ``1``/``0``, ``yes``/``no`` for a boolean). A field of the
sections a run's stages read may be swept (data, caption, model, finetune, generate, filter, classify); ``seed``
and ``method`` are the comparison's own axes (``compare.seeds``, ``compare.methods``). Every method and seed of the
comparison runs every point of the grid (the product of the axes, in the order written), each an ordinary run in
``WORKDIR/<method>/seed<k>/<point>/`` (point ``classify.learning_rate=1e-3,classify.real_weight=0.5``), with the
point's values set after the method's preset. Points share the stages their values do not reach (:mod:`bobjax.share`):
a grid over classifier settings captions, fine-tunes and generates once. A killed sweep resumes like any comparison:
finished points are complete runs, and are skipped.

The choice, per method and seed: the highest ``validation_top1`` of ``classify/metrics.json`` (the best epoch's); among
equal ones the first point in grid order, so write the value you would keep on a tie (a default) first.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import re

import ml_collections

from bobjax.artifacts import ArtifactError
from bobjax.errors import ConfigError

SWEEPABLE = ("data", "caption", "model", "finetune", "generate", "filter", "classify")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclasses.dataclass(frozen=True)
class Point:
    name: str  # Its run folder: "field=value,field=value" as written, "_" for "/" and the like; "" outside a sweep.
    values: dict  # {"classify.learning_rate": 0.001, ...}


def _fields(config, prefix: str = "") -> list[str]:
    """Every leaf field of ``config``, dotted."""
    out = []
    for name, value in config.items():
        out += _fields(value, f"{prefix}{name}.") if isinstance(value, ml_collections.ConfigDict) else [prefix + name]
    return out


def _typed(config, field: str, text: str):
    """``text`` as a value of ``field``: the field's type, or a ConfigError naming both."""
    *parents, leaf = field.split(".")
    section = config
    for part in parents:
        section = section[part]
    current = section[leaf]
    try:
        if isinstance(current, bool):
            return _BOOLEANS[text.lower()]
        return type(current)(text)
    except (KeyError, ValueError):
        raise ConfigError(f"config.compare.sweep: {field}={text!r} is not of the field's type, "
                          f"{type(current).__name__} (its value now: {current!r})") from None


def _axis(config, item: str) -> tuple[str, list[tuple[str, object]]]:
    """``"field=a|b"`` -> (field, [(text, value), ...]), checked."""
    if "=" not in item:
        raise ConfigError(f"config.compare.sweep: {item!r} is not field=value|value|...")
    field, values = (part.strip() for part in item.split("=", 1))
    known = _fields(config)
    if field not in known:
        close = difflib.get_close_matches(field, known, n=1)
        hint = f"did you mean {close[0]}?" if close else "expected a field such as classify.learning_rate"
        raise ConfigError(f"config.compare.sweep names unknown field {field!r}; {hint}")
    if field.split(".")[0] not in SWEEPABLE:
        raise ConfigError(f"config.compare.sweep cannot sweep {field!r}: a point's fields must be in one of "
                          f"{SWEEPABLE} (seeds and methods are config.compare.seeds and config.compare.methods)")
    texts = [v.strip() for v in values.split("|")]
    if "" in texts:
        raise ConfigError(f"config.compare.sweep: {field} has an empty value in {values!r}; expected "
                          f"{field}=value|value|...")
    typed = [(text, _typed(config, field, text)) for text in texts]
    if len({repr(value) for _, value in typed}) < len(typed):
        raise ConfigError(f"config.compare.sweep: {field} lists a value twice in {values!r}")
    return field, typed


def points(config) -> list[Point]:
    """The grid of ``config.compare.sweep``, in grid order (the last axis fastest); one empty point without a sweep."""
    items = [item.strip() for item in config.compare.sweep.split(";") if item.strip()]
    if not items:
        return [Point("", {})]
    axes = [_axis(config, item) for item in items]
    fields = [field for field, _ in axes]
    twice = sorted({f for f in fields if fields.count(f) > 1})
    if twice:
        raise ConfigError(f"config.compare.sweep names {twice} more than once; give each field one axis")
    grid = []
    for combination in itertools.product(*(values for _, values in axes)):
        name = ",".join(f"{field}={text}" for field, (text, _) in zip(fields, combination))
        # A folder name: a value with a "/" (a path) must not make folders of its own, nor a space break a command.
        grid.append(Point(re.sub(r"[^\w.=,+-]", "_", name), {f: value for f, (_, value) in zip(fields, combination)}))
    if len({p.name for p in grid}) < len(grid):
        raise ConfigError(f"config.compare.sweep: two points of {config.compare.sweep!r} get the same folder name; "
                          "write values that differ in letters, digits or . + -")
    return grid


def choose(names: list[str], validation: list[float | None]) -> int:
    """The index of the chosen point: the best validation top-1, the first in grid order among equals."""
    if len(names) == 1:  # Nothing to choose: a run outside a sweep needs no validation split.
        return 0
    missing = [name for name, value in zip(names, validation) if value is None]
    if missing:
        raise ArtifactError(f"config.compare.sweep chooses by validation top-1, but point(s) {missing} had no "
                            "validation split; set config.data.val_size (images held out of train)")
    return max(range(len(names)), key=lambda k: (validation[k], -k))
