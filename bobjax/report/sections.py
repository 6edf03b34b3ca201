"""What the report says, section by section (:mod:`bobjax.report.render` writes them as HTML and Markdown).

Per-class tables are :class:`~bobjax.report.classes.PerClass`: whole for a few classes, summarised with the full table
on its own page for many (:func:`bobjax.report.classes.layout`).
"""

from __future__ import annotations

from collections.abc import Sequence

from bobjax.report.classes import INLINE_CLASSES, PerClass
from bobjax.report.render import Section, bar_chart_svg, pct
from bobjax.report.results import Results

MAX_CONTEXT_COLUMNS = 8  # The most frequent backgrounds; the rest are summed into "other".


def shown(names: Sequence[str], indices: Sequence[int]) -> str:
    """The classes a grid shows, for its caption."""
    if len(indices) == len(names):
        return ", ".join(names)
    return (f"{len(indices)} of the {len(names)} classes, spread evenly over the class list: "
            + ", ".join(names[c] for c in indices))


def _sweep_section(results: Results) -> Section:
    """Every point of the grid scored on validation, and in a two-phase sweep the chosen point's full-length run."""
    text = ("Every point of the grid trains on the train split and is scored on the validation split; per method and "
            "seed the point with the best validation top-1 (the first in grid order among equals) is chosen")
    if results.phases:
        short, full = results.phases
        text += (f". The points train {short} epochs (the sweep's schedule); the chosen point then trains again for "
                 f"{full} epochs in its own folder (<method>/seed<k>/final/, the rows marked 'final run'), and that "
                 "run's test top-1 is what the other tables show.")
    else:
        text += ", and its test top-1 is what the other tables show."
    rows = []
    for m in results.methods:
        for seed, chosen, grid, final in zip(m.seeds, m.chosen, m.grids, m.finals):
            rows += [[m.method, str(seed), p.point, pct(p.validation_top1), pct(p.test_top1),
                      "yes" if p.point == chosen else ""] for p in grid]
            if final:
                rows.append([m.method, str(seed), final.point, pct(final.validation_top1), pct(final.test_top1),
                             "final run"])
    return Section("Sweep: each point scored on validation", text=text + " Test accuracy takes no part in the choice.",
                   header=["method", "seed", "point", "validation top-1", "test top-1", "chosen"], rows=rows)


def sections(results: Results, images: list[tuple[str, str]], config_json: str,
             class_fidelity: dict[str, dict] | None = None, paper: Section | None = None,
             ablation: Section | None = None, fixed_noise: list[tuple[str, str]] = (),
             fixed_noise_classes: Sequence[int] = (), image_classes: Sequence[int] = (),
             quality: Sequence[Section | PerClass] = ()) -> list[Section | PerClass]:
    """The report's sections; ``paper`` (:func:`bobjax.report.paper.section`) and ``ablation``
    (:func:`bobjax.report.ablation.section`) follow the accuracy table, ``fixed_noise`` (each method's grid of
    one noise seed per row and one of the ``fixed_noise_classes`` per column) the class-fidelity table, and ``quality``
    (:func:`bobjax.report.quality_section.sections`) those grids; ``images`` show the ``image_classes``, a row each."""
    seeds = sorted({s for m in results.methods for s in m.seeds})
    names = results.class_names
    out: list[Section | PerClass] = [Section(
        "Test top-1 accuracy (%)",
        text=f"Mean and standard deviation over seeds {seeds}; each run is evaluated on the test split at its "
             "best validation epoch.",
        header=["method", "top-1 mean", "std", "per seed"],
        rows=[[m.method, pct(m.top1_mean), pct(m.top1_std), ", ".join(pct(a) for a in m.top1)]
              for m in results.methods], svg=bar_chart_svg(results))]
    out += [s for s in (paper, ablation) if s is not None]
    if any(grid for m in results.methods for grid in m.grids):
        out.append(_sweep_section(results))
    out.append(PerClass("Per-class accuracy (%, mean over seeds)", names,
                        {m.method: m.per_class_mean() for m in results.methods}, pct, percent=True))
    if class_fidelity is not None:
        methods = [m for m in class_fidelity if m != "oracle"]
        title = "Class fidelity of the synthetic images (%, toy-world oracle)"
        text = (f"The share of each method's synthetic images (all seeds) that an oracle classifier, trained on "
                f"plentiful context-balanced real toy images ({pct(class_fidelity['oracle']['test_top1'])} % on "
                f"the real test split), labels as the class they were generated for. Chance is "
                f"{pct(100 / len(names))} %: images at chance carry no class detail, whatever their contexts.")
        few = len(names) <= INLINE_CLASSES
        out.append(Section(title, text=text, header=["method", "all classes"] + (names if few else []),
                           rows=[[m, pct(class_fidelity[m]["top1"])] +
                                 ([pct(a) for a in class_fidelity[m]["per_class"]] if few else []) for m in methods]))
        if not few:
            out.append(PerClass(f"{title} per class", names, {m: class_fidelity[m]["per_class"] for m in methods},
                                pct, percent=True))
    if fixed_noise:
        out.append(Section(
            "Does the class name change the bird? Fixed-noise grids",
            text=f"Per method (first seed): each row is one noise seed and one context, each column one class "
                 f"({shown(names, fixed_noise_classes)}); only the class name in the prompt changes along a row. "
                 "Columns that look alike mean the class name draws no class detail.", images=list(fixed_noise)))
    out += quality
    out.append(Section("Real and synthetic training images",
                       text=f"One row per class ({shown(names, image_classes)}): the real few-shot images, then each "
                            "method's synthetic images (first seed).", images=images))
    for source, per_class in results.contexts.items():
        totals = {}
        for counts in per_class.values():
            for background, n in counts.items():
                totals[background] = totals.get(background, 0) + n
        columns = sorted(totals, key=lambda b: (-totals[b], b))[:MAX_CONTEXT_COLUMNS]
        table = {b: [per_class.get(name, {}).get(b, 0) for name in names] for b in columns}
        table["other"] = [sum(n for b, n in per_class.get(name, {}).items() if b not in columns) for name in names]
        out.append(PerClass(f"Backgrounds of the {source} images (images per class)", names, table, _count,
                            text="A class seen in few backgrounds invites a classifier to learn the background.",
                            higher_better=None))
    if results.shared:
        out.append(Section("Shared stages",
                           text="Runs whose caption bank, LoRA or synthetic set would be made from the same config "
                                "fields share one copy, made once: a pointer file in each run's folder names it.",
                           header=["shared folder", "runs"],
                           rows=[[folder, ", ".join(runs)] for folder, runs in results.shared.items()]))
    timing_rows = [[folder, ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in stages.items()),
                    f"{sum(stages.values()):.0f}"] for folder, stages in results.timings.items()]
    out.append(Section("Wall time", text=f"Total {results.wall_seconds / 60:.1f} min (the attempt that completed "
                                         "each stage).", header=["run", "stages", "seconds"], rows=timing_rows))
    out.append(Section("Config", code=config_json))
    return out


def _count(value: float | None) -> str:
    return "-" if value is None else str(int(value))
