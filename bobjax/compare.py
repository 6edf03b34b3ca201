"""Side-by-side comparisons: every method of ``config.compare.methods`` with each of ``config.compare.seeds``
seeds (and each point of ``config.compare.sweep``, see :mod:`bobjax.sweep`), each a complete run of its own in
``WORKDIR/<method>/seed<k>/`` (``.../seed<k>/<point>/`` in a sweep).

A sweep with ``config.compare.sweep_epochs`` (the paper's protocol: ``configs/paper.py``) has two phases: every point
trains that many epochs, then the point chosen on validation per method and seed trains ``classify.epochs`` in
``.../seed<k>/final/``, a run of its own whose results the report shows (a point's folder always holds ``=``, so
``final`` is never one). The second phase is known only once the first has finished (the choice reads the points'
``classify/metrics.json``), and a rerun makes the same choice from the same files, so either phase resumes.

Why separate run folders: each run is then an ordinary bobjax run (its own config.json, splits, completion markers
and resume), so a killed comparison is finished by rerunning the same command, and any one run can be inspected or
rerun alone. Runs whose earlier stages would be made from the same inputs share them through pointer files
(:mod:`bobjax.share`). The report stage reads them all through :func:`runs`. The points of a method and seed that
differ only in the classifier's learning rate, weight decay and lambda train their classifiers together, one program
for the pack (:func:`packs`, ``bobjax.classify.packed``), each still writing its own run's files.
"""

from __future__ import annotations

import dataclasses

import ml_collections
from etils import epath

from bobjax import artifacts, config_lib, run_folder, sweep
from bobjax.errors import ConfigError

FINAL = "final"  # The chosen point's full-length run, beside the points' folders.


@dataclasses.dataclass(frozen=True)
class Run:
    method: str
    seed: int
    workdir: epath.Path
    config: ml_collections.ConfigDict
    point: str = ""  # Its point of the comparison's sweep ("" without one).
    final: bool = False  # The second phase of a two-phase sweep: the chosen point at full length.


@dataclasses.dataclass(frozen=True)
class Choice:
    """One method and seed of a sweep: its points' runs with their ``classify/metrics.json``, and the chosen one."""
    points: list[tuple[Run, dict]]
    index: int

    @property
    def chosen(self) -> Run:
        return self.points[self.index][0]


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


def two_phase(config) -> bool:
    """Whether the sweep trains its points for ``compare.sweep_epochs`` and the chosen one again at full length."""
    short, full = config.compare.sweep_epochs, config.classify.epochs
    if short < 0 or (short and short >= full):
        raise ConfigError(f"config.compare.sweep_epochs is {short}; expected 0 (every point trains classify.epochs, "
                          f"{full}) or fewer epochs than classify.epochs for the sweep's short runs")
    return bool(short) and bool(config.compare.sweep.strip())


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


def point_config(config, method: str, seed: int, point: sweep.Point) -> ml_collections.ConfigDict:
    """A sweep point's run: :func:`run_config`, trained ``compare.sweep_epochs`` in a two-phase sweep."""
    single = run_config(config, method, seed, point)
    if two_phase(config):
        single.classify.epochs = config.compare.sweep_epochs
    return single


def runs(config, workdir) -> list[Run]:
    """The runs of ``config``: the comparison's (the sweep's first phase), method-major then seed then sweep point, or
    the single run in ``workdir`` itself."""
    if not is_comparison(config):
        return [Run(config.method, config.seed, epath.Path(workdir), config)]
    grid = sweep.points(config)
    two_phase(config)  # Its errors before any run.
    return [Run(method, config.seed + k, epath.Path(workdir) / method / f"seed{k}" / point.name,
                point_config(config, method, config.seed + k, point), point.name)
            for method in methods(config) for k in range(config.compare.seeds) for point in grid]


def metrics(run: Run) -> dict:
    """The run's ``classify/metrics.json``."""
    path = run_folder.stage_dir(run.workdir, "classify") / "metrics.json"
    if not path.exists():
        raise artifacts.ArtifactError(f"{path} does not exist; run the classify stage of method {run.method!r} "
                                      f"(seed {run.seed}{', point ' + run.point if run.point else ''}) first")
    return artifacts.read_json(path)


def choices(points: list[Run]) -> list[Choice]:
    """Per method and seed of ``points`` (:func:`runs`), in their order, the point chosen by validation."""
    by_seed: dict[tuple[str, int], list[tuple[Run, dict]]] = {}
    for run in points:
        by_seed.setdefault((run.method, run.seed), []).append((run, metrics(run)))
    return [Choice(group, sweep.choose([r.point for r, _ in group], [m["validation_top1"] for _, m in group]))
            for group in by_seed.values()]


def final_run(config, choice: Choice) -> Run | None:
    """The chosen point's full-length run of a two-phase sweep; None in a one-phase one."""
    if not two_phase(config):
        return None
    chosen = choice.chosen
    point = next(p for p in sweep.points(config) if p.name == chosen.point)
    return Run(chosen.method, chosen.seed, chosen.workdir.parent / FINAL,
               run_config(config, chosen.method, chosen.seed, point), chosen.point, final=True)


def final_runs(config, workdir) -> list[Run]:
    """The second phase of a two-phase sweep, per method and seed; needs the first phase's ``classify`` done."""
    if not is_comparison(config) or not two_phase(config):
        return []
    return [final_run(config, choice) for choice in choices(runs(config, workdir))]


def packs(phase: list[Run], linked: bool = True) -> list[list[Run]]:
    """The runs of ``phase`` (:func:`runs`, after :func:`bobjax.share.link_runs`) whose classifiers train in one
    program (``bobjax.classify.packed``), in their order: with ``config.compare.pack_points``, two or more sweep points
    of one method and seed whose configs differ only in the fields a pack stacks and that read one synthetic set. A
    final run trains alone (one point). ``linked=False``: by the configs alone, before any run folder exists (what
    ``bobjax.aot`` counts)."""
    from bobjax.classify import packed  # The stage's code: only a comparison that packs needs it.

    groups: dict[str, list[Run]] = {}
    for run in phase:
        if run.final or not run.point or not run.config.compare.pack_points:
            continue
        if "classify" in config_lib.run_stages(run.config):
            groups.setdefault(packed.pack_key(run.config, run.workdir if linked else None), []).append(run)
    return [group for group in groups.values() if len(group) > 1]
