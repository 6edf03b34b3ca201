"""The report as HTML (one self-contained page but for its PNGs) and as its Markdown twin.

Both are built from the same sections, so they cannot disagree: a section is a title plus either a table
(header row, rows) or a list of images. The bar chart is inline SVG: no plotting library for one chart.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence

from bobjax.report.results import Results

MAX_CONTEXT_CLASSES = 12  # Rows of a context table; a 200-class dataset would drown the page.
MAX_CONTEXT_COLUMNS = 8  # The most frequent backgrounds; the rest are summed into "other".


@dataclasses.dataclass
class Section:
    title: str
    text: str = ""
    header: list[str] = dataclasses.field(default_factory=list)
    rows: list[list[str]] = dataclasses.field(default_factory=list)
    images: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (caption, relative path)
    code: str = ""


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def sections(results: Results, images: list[tuple[str, str]], config_json: str,
             class_fidelity: dict[str, dict] | None = None, paper: Section | None = None,
             ablation: Section | None = None, fixed_noise: list[tuple[str, str]] = (),
             quality: Sequence[Section] = ()) -> list[Section]:
    """The report's sections; ``paper`` (:func:`bobjax.report.paper.section`) and ``ablation``
    (:func:`bobjax.report.ablation.section`) follow the accuracy table, ``fixed_noise`` (each method's grid of
    one noise seed per row and one class per column) the class-fidelity table, and ``quality``
    (:func:`bobjax.report.quality.sections`) those grids."""
    seeds = sorted({s for m in results.methods for s in m.seeds})
    out = [Section(
        "Test top-1 accuracy (%)",
        text=f"Mean and standard deviation over seeds {seeds}; each run is evaluated on the test split at its "
             "best validation epoch.",
        header=["method", "top-1 mean", "std", "per seed"],
        rows=[[m.method, pct(m.top1_mean), pct(m.top1_std), ", ".join(pct(a) for a in m.top1)]
              for m in results.methods])]
    out += [s for s in (paper, ablation) if s is not None]
    if any(grid for m in results.methods for grid in m.grids):
        out.append(Section(
            "Sweep: each point scored on validation",
            text="Every point of the grid trains on the train split and is scored on the validation split; per method "
                 "and seed the point with the best validation top-1 (the first in grid order among equals) is chosen, "
                 "and its test top-1 is what the other tables show. Test accuracy takes no part in the choice.",
            header=["method", "seed", "point", "validation top-1", "test top-1", "chosen"],
            rows=[[m.method, str(seed), p.point, pct(p.validation_top1), pct(p.test_top1),
                   "yes" if p.point == chosen else ""]
                  for m in results.methods for seed, chosen, grid in zip(m.seeds, m.chosen, m.grids) for p in grid]))
    out.append(Section("Per-class accuracy (%, mean over seeds)",
                       header=["class"] + [m.method for m in results.methods],
                       rows=[[name] + [pct(m.per_class_mean()[c]) for m in results.methods]
                             for c, name in enumerate(results.class_names)]))
    if class_fidelity is not None:
        methods = [m for m in class_fidelity if m != "oracle"]
        out.append(Section(
            "Class fidelity of the synthetic images (%, toy-world oracle)",
            text=f"The share of each method's synthetic images (all seeds) that an oracle classifier, trained on "
                 f"plentiful context-balanced real toy images ({pct(class_fidelity['oracle']['test_top1'])} % on "
                 f"the real test split), labels as the class they were generated for. Chance is "
                 f"{pct(100 / len(results.class_names))} %: images at chance carry no class detail, whatever their "
                 "contexts.",
            header=["method", "all classes"] + results.class_names,
            rows=[[m, pct(class_fidelity[m]["top1"])] + [pct(a) for a in class_fidelity[m]["per_class"]]
                  for m in methods]))
    if fixed_noise:
        names = ", ".join(results.class_names)
        out.append(Section(
            "Does the class name change the bird? Fixed-noise grids",
            text=f"Per method (first seed): each row is one noise seed and one context, each column one class "
                 f"({names}); only the class name in the prompt changes along a row. Columns that look alike "
                 "mean the class name draws no class detail.", images=list(fixed_noise)))
    out += quality
    out.append(Section("Real and synthetic training images",
                       text="One row per class: the real few-shot images, then each method's synthetic images "
                            "(first seed).", images=images))
    for source, per_class in results.contexts.items():
        totals = {}
        for counts in per_class.values():
            for background, n in counts.items():
                totals[background] = totals.get(background, 0) + n
        columns = sorted(totals, key=lambda b: (-totals[b], b))[:MAX_CONTEXT_COLUMNS]
        rows = []
        for name in results.class_names[:MAX_CONTEXT_CLASSES]:
            counts = per_class.get(name, {})
            other = sum(n for b, n in counts.items() if b not in columns)
            rows.append([name] + [str(counts.get(b, 0)) for b in columns] + [str(other)])
        out.append(Section(f"Backgrounds of the {source} images (images per class)",
                           text="A class seen in few backgrounds invites a classifier to learn the background.",
                           header=["class"] + columns + ["other"], rows=rows))
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


def bar_chart_svg(results: Results, width: int = 480, bar_height: int = 28) -> str:
    """Horizontal bars of mean top-1 with a +-1 std whisker, 0-100 %."""
    left, right = 110, 60
    scale = (width - left - right) / 100.0
    height = bar_height * len(results.methods) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             'font-size="13">']
    for i, m in enumerate(results.methods):
        y = 10 + i * bar_height
        mean, std = m.top1_mean, m.top1_std
        parts.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{html.escape(m.method)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 4}" width="{mean * scale:.1f}" height="{bar_height - 8}" '
                     'fill="#4878a8"/>')
        lo, hi = max(mean - std, 0) * scale + left, min(mean + std, 100) * scale + left
        parts.append(f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{y + 14}" y2="{y + 14}" stroke="black"/>')
        parts.append(f'<text x="{mean * scale + left + 6:.1f}" y="{y + 17}">{mean:.1f}</text>')
    axis_y = 10 + len(results.methods) * bar_height
    parts.append(f'<line x1="{left}" x2="{left + 100 * scale}" y1="{axis_y}" y2="{axis_y}" stroke="#888"/>')
    for tick in (0, 50, 100):
        parts.append(f'<text x="{left + tick * scale}" y="{axis_y + 15}" text-anchor="middle">{tick}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(title: str, results: Results, parts: list[Section]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for k, section in enumerate(parts):
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            body.append(f"<p>{html.escape(section.text)}</p>")
        if k == 0:
            body.append(bar_chart_svg(results))
        if section.header:
            body.append(_html_table(section.header, section.rows))
        for caption, path in section.images:
            body.append(f'<figure><img src="{html.escape(path)}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        if section.code:
            body.append(f"<details><summary>config.json</summary><pre>{html.escape(section.code)}</pre></details>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{image-rendering:pixelated;"
             "max-width:100%}figure{margin:.5em 0}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(title: str, parts: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in parts:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        if section.header:
            lines.append("| " + " | ".join(_md_cell(h) for h in section.header) + " |")
            lines.append("|" + "---|" * len(section.header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in section.rows]
            lines.append("")
        for caption, path in section.images:
            lines += [f"![{caption}]({path})", ""]
        if section.code:
            lines += ["```json", section.code.rstrip(), "```", ""]
    return "\n".join(lines)
