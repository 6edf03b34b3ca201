"""The roofline bound of a whole comparison (``configs/paper.py``: a cell of the paper's table): every method, seed
and sweep point, each stage's compiled programs times how often that run calls them.

A grid over classifier settings shares the fine-tuning and generation of a method and seed (``bobjax.share``), so
those count once per method and seed, the classifier once per point, at the sweep's schedule; a two-phase sweep
(``bobjax.compare.two_phase``, the paper's) adds one full-length classifier run per method and seed, the chosen
point's (any point counts alike: the counts do not depend on the values swept). The programs' shapes do not change
between methods (the prompt length, batches and resolutions are the config's), so one compile per program serves
every run; only the counts differ (``real_only`` trains on the real images alone). The caption stage (PyTorch) is
not included.
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


def cell_bound(config, rows: list[dict], slice_shape: tuple[int, int] = (1, 1)) -> dict | None:
    """``{"seconds": bound of the comparison on one slice, "runs": ..., "by_stage": {...}, "missing": [...]}``;
    None when ``config`` is no comparison or its dataset's sizes are unknown. ``rows``: ``compiled_figures.row``s of
    this config's programs on one target, ``slice_shape`` its (devices per host, hosts); stages without a row are
    listed as missing (not compiled)."""
    data = counts.dataset(config)
    if data is None or not compare.is_comparison(config):
        return None
    bounds = {(r["stage"], r["program"]): r["bound_s"] for r in rows if r["bound_s"] is not None}
    points = sweep.points(config)
    seconds, by_stage, missing, runs = 0.0, {}, set(), 0
    for method in compare.methods(config):
        for seed in range(config.seed, config.seed + config.compare.seeds):
            phases = [compare.point_config(config, method, seed, point) for point in points]
            if compare.two_phase(config):
                phases.append(compare.run_config(config, method, seed, points[0]))
            for k, run in enumerate(phases):
                runs += 1
                for (stage, program), calls in _CALLS.items():
                    if stage not in config_lib.run_stages(run) or (k and stage in _SHARED_BY_POINTS):
                        continue
                    if (stage, program) not in bounds:
                        missing.add(f"{stage} {program}")
                        continue
                    s = bounds[(stage, program)] * calls(run, data, slice_shape)
                    seconds += s
                    by_stage[stage] = by_stage.get(stage, 0.0) + s
    return {"seconds": seconds, "runs": runs, "by_stage": by_stage, "missing": sorted(missing)}
