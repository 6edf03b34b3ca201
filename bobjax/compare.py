"""Side-by-side comparisons: every method of ``config.compare.methods`` with each of ``config.compare.seeds``
seeds (and each point of ``config.compare.sweep``, see :mod:`bobjax.sweep`), each a complete run of its own in
``WORKDIR/<method>/seed<k>/`` (``.../seed<k>/<point>/`` in a sweep).

Why separate run folders: each run is then an ordinary bobjax run (its own config.json, splits, completion markers
and resume), so a killed comparison is finished by rerunning the same command, and any one run can be inspected or
rerun alone. Runs whose earlier stages would be made from the same inputs share them through pointer files
(:mod:`bobjax.share`). The report stage reads them all through :func:`runs`.
"""

from __future__ import annotations

import dataclasses

import ml_collections
from etils import epath

from bobjax import config_lib, sweep
from bobjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Run:
    method: str
    seed: int
    workdir: epath.Path
    config: ml_collections.ConfigDict
    point: str = ""  # Its point of the comparison's sweep ("" without one).


def methods(config) -> list[str]:
    """The comparison's methods: ``config.compare.methods``, or ``config.method`` alone for a sweep without them."""
    names = [m.strip() for m in config.compare.methods.split(",") if m.strip()]
    if not names and config.compare.sweep.strip():
        names = [config.method]
    unknown = [m for m in names if m not in config_lib.METHODS]
    if unknown:
        raise ConfigError(f"config.compare.methods names unknown method(s) {unknown}; expected some of "
                          f"{config_lib.METHODS}")
    if config.compare.seeds < 1:
        raise ConfigError(f"config.compare.seeds must be at least 1, got {config.compare.seeds}")
    return names


def is_comparison(config) -> bool:
    return bool(methods(config))


def run_config(config, method: str, seed: int, point: sweep.Point) -> ml_collections.ConfigDict:
    """``config`` as one run of the comparison: the method's preset and stages (those of ``config.stages`` the
    method needs), that seed and sweep point, no report of its own and no nested comparison."""
    single = ml_collections.ConfigDict(config.to_dict())
    single.compare.methods = ""
    single.compare.sweep = ""
    single.seed = seed
    single.stages = ",".join(config_lib.STAGES)
    config_lib.apply_method(single, method)
    single.update_from_flattened_dict(point.values)
    requested = set(config_lib.parse_stages(config.stages)) - {"report"}
    single.stages = ",".join(s for s in config_lib.parse_stages(single.stages) if s in requested)
    return single


def runs(config, workdir) -> list[Run]:
    """The runs of ``config``: the comparison's, method-major then seed then sweep point, or the single run in
    ``workdir`` itself."""
    if not is_comparison(config):
        return [Run(config.method, config.seed, epath.Path(workdir), config)]
    grid = sweep.points(config)
    return [Run(method, config.seed + k, epath.Path(workdir) / method / f"seed{k}" / point.name,
                run_config(config, method, config.seed + k, point), point.name)
            for method in methods(config) for k in range(config.compare.seeds) for point in grid]
