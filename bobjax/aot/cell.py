"""The roofline bound of a whole comparison (``configs/paper.py``: a cell of the paper's table): every method, seed
and sweep point, each stage's compiled programs times how often that run calls them.

A grid over classifier settings shares the fine-tuning and generation of a method and seed (``bobjax.share``), so
those count once per method and seed, the classifier once per point, at the sweep's schedule; a two-phase sweep
(``bobjax.compare.two_phase``, the paper's) adds one full-length classifier run per method and seed, the chosen
point's (any point counts alike: the counts do not depend on the values swept). The programs' shapes do not change
between methods (the prompt length, batches and resolutions are the config's), so one compile per program serves
every run; only the counts differ (``real_only`` trains on the real images alone). Points that train packed
(``classify.packed``) count once per pack: one MixUp/CutMix ``prepare`` and the packed train and evaluation steps,
whose calls cost what their points together do. The caption stage (PyTorch) is not included.
"""

from __future__ import annotations

from bobjax import compare, config_lib, meshes, sweep
from bobjax.aot import counts

# A program's calls in one run, by (stage, program): from the run's config, the dataset's sizes and the slice's
# (devices per host, hosts).
_CALLS = {
    ("finetune", "LoRA step"): lambda c, d, s: counts.lora_steps(c, d),
    ("generate", "sampler call"): lambda c, d, s: counts.generation_calls(c, d, meshes.generation_batch(c, s[0]),
                                                                          s[1])[1],
    ("classify", "prepare"): lambda c, d, s: counts.classifier_steps(c, d)[0],
    ("classify", "train step"): lambda c, d, s: counts.classifier_steps(c, d)[0],
    ("classify", "eval step"): lambda c, d, s: counts.classifier_steps(c, d)[1],
}
_SHARED_BY_POINTS = ("finetune", "generate")
PACKED_TRAIN = ("classify", "packed train step")


def cell_bound(config, rows: list[dict], slice_shape: tuple[int, int] = (1, 1)) -> dict | None:
    """``{"seconds": bound of the comparison on one slice, "runs": ..., "packs": ..., "by_stage": {...}, "missing":
    [...]}``; None when ``config`` is no comparison or its dataset's sizes are unknown. ``rows``:
    ``compiled_figures.row``s of this config's programs on one target, ``slice_shape`` its (devices per host, hosts);
    stages without a row are listed as missing (not compiled). Sweep points that pack (``compare.packs``) count as
    packs of the compiled packed programs' size (the last pack of a group as a whole one); without packed rows (not
    even two points fit the device) they count as lone runs, as they would train."""
    data = counts.dataset(config)
    if data is None or not compare.is_comparison(config):
        return None
    bounds = {(r["stage"], r["program"]): r["bound_s"] for r in rows if r["bound_s"] is not None}
    pack_size = max((r.get("points", 1) for r in rows if (r["stage"], r["program"]) == PACKED_TRAIN
                     and r["bound_s"] is not None), default=1)
    points = compare.runs(config, ".")
    packed_of = {id(run): group for group in compare.packs(points, linked=False) for run in group} \
        if pack_size > 1 else {}
    total = {"seconds": 0.0, "by_stage": {}, "missing": set(), "runs": 0, "packs": 0}

    def add(stage, program, calls):
        if (stage, program) not in bounds:
            total["missing"].add(f"{stage} {program}")
            return
        total["seconds"] += bounds[(stage, program)] * calls
        total["by_stage"][stage] = total["by_stage"].get(stage, 0.0) + bounds[(stage, program)] * calls

    chosen = sweep.points(config)[0]  # The final run's point: any counts alike.
    for method in compare.methods(config):
        for seed in range(config.seed, config.seed + config.compare.seeds):
            phase = [run for run in points if (run.method, run.seed) == (method, seed)]
            if compare.two_phase(config):
                phase.append(compare.Run(method, seed, None, compare.run_config(config, method, seed, chosen),
                                         final=True))
            for k, run in enumerate(phase):
                total["runs"] += 1
                group = packed_of.get(id(run))
                for (stage, program), calls in _CALLS.items():
                    if stage not in config_lib.run_stages(run.config) or (k and stage in _SHARED_BY_POINTS):
                        continue
                    if stage == "classify" and group is not None:
                        continue  # Its pack's programs, below.
                    add(stage, program, calls(run.config, data, slice_shape))
                if group is not None and group[0] is run:  # A pack's programs, once, at its first point.
                    steps, evals = counts.classifier_steps(run.config, data)
                    packs = -(-len(group) // pack_size)
                    total["packs"] += packs
                    for program, calls in (("prepare", steps), (PACKED_TRAIN[1], steps), ("packed eval step", evals)):
                        add("classify", program, packs * calls)
    return {**total, "missing": sorted(total["missing"])}
