"""The classifier's host input as ``python -m bobjax.aot`` counts it: the cores each host needs to feed its chips at
the compiled train step's roofline bound.

The classifier's augmentation runs on the host (``bobjax.classify.augment``), so a target's chips train only as fast
as its hosts prepare images. At the bound each host consumes ``batch / bound / hosts`` images a second; one image
costs what :func:`bobjax.classify.host_cost.row_ms` measures on a core of this machine (the config's augmentation,
plus half a synthetic decode where a method trains on synthetic images). Host CPUs differ from this one, and real
steps are slower than their bound, so the count is a guide to ``config.classify.input_workers``, not a measurement of
the target's host.
"""

from __future__ import annotations

from bobjax import compare
from bobjax.classify import augment, host_cost
from bobjax.classify import input as input_lib
from bobjax.sweep import Point


def trains_on_synthetic(config) -> bool:
    """Whether any run of ``config`` (every method of a comparison) mixes synthetic images in."""
    if not compare.is_comparison(config):
        return config.classify.mixing != "real_only"
    return any(compare.run_config(config, method, config.seed, Point("", {})).classify.mixing != "real_only"
               for method in compare.methods(config))


def _step(rows: list[dict], program: str) -> dict | None:
    step = next((r for r in rows if (r["stage"], r["program"]) == ("classify", program)), None)
    return step if step is not None and step["bound_s"] else None


def figures(config, rows: list[dict], hosts: int, row_ms: float | None = None) -> dict | None:
    """``{"images_per_s", "row_ms", "cores", "synthetic", "packed"}`` per host at the train step's bound; None without
    a compiled train step. ``packed``: ``{"points", "images_per_s", "cores"}`` at the packed train step's bound (a
    pack's points read one input stream), or None without one. ``row_ms``: one row's CPU milliseconds (measured here
    when not given)."""
    step, packed = _step(rows, "train step"), _step(rows, "packed train step")
    if step is None:
        return None
    synthetic = trains_on_synthetic(config)
    if row_ms is None:
        row_ms = host_cost.row_ms(augment.spec_from_config(config.classify), synthetic)
    rate = lambda row: config.classify.batch_size / row["bound_s"] / hosts  # noqa: E731
    return {"images_per_s": rate(step), "row_ms": row_ms, "cores": rate(step) * row_ms / 1e3, "synthetic": synthetic,
            "packed": None if packed is None else {"points": packed["points"], "images_per_s": rate(packed),
                                                   "cores": rate(packed) * row_ms / 1e3}}


def line(config, f: dict, hosts: int) -> str:
    """The printed line."""
    what = "augmentation plus half a synthetic decode" if f["synthetic"] else "augmentation"
    cap = input_lib.MAX_WORKERS
    short = (f"; more than the {cap} input workers classify.input_workers=-1 starts: set it to "
             f"{int(f['cores']) + 1} or the input bounds the step") if f["cores"] > cap else ""
    packed = f["packed"]
    packs = (f"; a pack of {packed['points']} sweep points reads one stream: {packed['images_per_s']:,.0f} images/s, "
             f"{packed['cores']:.1f} cores per host") if packed else ""
    return (f"classify host input: {config.classify.batch_size} images a step at the train step's bound over "
            f"{hosts} host(s): {f['images_per_s']:,.0f} images/s per host; the config's {what} takes "
            f"{f['row_ms']:.2f} ms per image on one core of this machine: {f['cores']:.1f} cores per host{short}"
            f"{packs}")
