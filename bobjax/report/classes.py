"""Per-class tables that read at 6 classes and at 200: inline in full for a few classes; for many, a summary (mean,
median, worst and best class, a histogram of percentages), the best and worst classes ranked, and the full table on
its own page (``classes.html`` / ``classes.md`` beside the report's index), linked.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable

import numpy as np

from bobjax.report.render import Section, anchor

INLINE_CLASSES = 12  # Up to this many classes a table is shown whole; a 200-row table would drown the page.
SHOWN = 5  # Best and worst classes shown inline when summarised.
BINS = np.linspace(0.0, 100.0, 11)  # Histogram bands of a percentage: 0-10, ..., 90-100.
PAGE = "classes"  # classes.html and classes.md: every per-class table in full.


@dataclasses.dataclass
class PerClass:
    """One value per class and column (a method, or "real"); None where a class has no value."""

    title: str
    class_names: list[str]
    columns: dict[str, list[float | None]]
    format: Callable[[float | None], str]
    text: str = ""
    # Ranked and summarised when True or False (whether higher is better); None: counts, neither (shown first classes).
    higher_better: bool | None = True
    percent: bool = False  # Values in [0, 100]: the summary gets a histogram.
    rank_by: str = ""  # The column that ranks the classes; "": the first.

    @property
    def ranking(self) -> str:
        return self.rank_by or next(iter(self.columns))

    @property
    def many(self) -> bool:
        return len(self.class_names) > INLINE_CLASSES

    def full(self) -> Section:
        """Every class, in the dataset's order, with its rank by :attr:`ranking` where ranked."""
        ranks = self._ranks() if self.higher_better is not None else None
        header = ["class"] + ([f"rank by {self.ranking}"] if ranks is not None else []) + list(self.columns)
        rows = [[name] + ([str(ranks[c])] if ranks is not None else []) +
                [self.format(values[c]) for values in self.columns.values()] for c, name in enumerate(self.class_names)]
        return Section(self.title, text=self.text, header=header, rows=rows)

    def inline(self) -> list[Section]:
        """What the report's index shows: the whole table for a few classes, else the summary, the ranked ends and a
        link to the full table."""
        if not self.many:  # The whole table, without the rank column.
            full, width = self.full(), len(self.columns)
            return [dataclasses.replace(full, header=["class"] + list(self.columns),
                                        rows=[[row[0]] + row[-width:] for row in full.rows])]
        link = (f"every class ({len(self.class_names)})", f"{PAGE}.html#{anchor(self.title)}")
        if self.higher_better is None:
            shown = self.full()
            return [dataclasses.replace(shown, rows=shown.rows[:INLINE_CLASSES], link=link,
                                        text=f"{self.text} The first {INLINE_CLASSES} of {len(self.class_names)} "
                                             "classes.".strip())]
        first = self.ranking
        known = [c for c in self._order() if self.columns[first][c] is not None]  # A class without a value: no end.
        ends = list(enumerate(known))[:SHOWN] + list(enumerate(known))[max(SHOWN, len(known) - SHOWN):]
        ranked = [[self.class_names[c], str(r + 1)] + [self.format(values[c]) for values in self.columns.values()]
                  for r, c in ends]
        better = "higher" if self.higher_better else "lower"
        summary = Section(
            self.title,
            text=f"{self.text} {len(self.class_names)} classes, summarised per column ({better} is better); below, the "
                 f"{SHOWN} best and {SHOWN} worst classes by {first}.".strip(),
            header=["column", "mean", "median", "worst class", "best class"] +
                   ([f"{lo:.0f}-{hi:.0f}" for lo, hi in zip(BINS[:-1], BINS[1:])] if self.percent else []),
            rows=[self._summary_row(name, values) for name, values in self.columns.items()],
            svg=histograms_svg(self.columns) if self.percent else "", link=link)
        ends_section = Section(f"{self.title}: best and worst classes by {first}", header=["class", "rank"] +
                               list(self.columns), rows=ranked)
        return [summary, ends_section]

    def _order(self) -> np.ndarray:
        """Class indices from best to worst by :attr:`ranking` (classes without a value last)."""
        values = np.array([np.nan if v is None else v for v in self.columns[self.ranking]], np.float64)
        key = np.where(np.isnan(values), np.inf, -values if self.higher_better else values)
        return np.argsort(key, kind="stable")

    def _ranks(self) -> np.ndarray:
        ranks = np.empty(len(self.class_names), np.int64)
        ranks[self._order()] = np.arange(1, len(self.class_names) + 1)
        return ranks

    def _summary_row(self, name: str, values: list[float | None]) -> list[str]:
        known = [(v, c) for c, v in enumerate(values) if v is not None]
        if not known:
            return [name] + ["-"] * (4 + (len(BINS) - 1 if self.percent else 0))
        numbers = np.array([v for v, _ in known])
        low, high = min(known), max(known)
        worst, best = (low, high) if self.higher_better else (high, low)
        row = [name, self.format(float(numbers.mean())), self.format(float(np.median(numbers))),
               f"{self.class_names[worst[1]]} ({self.format(worst[0])})",
               f"{self.class_names[best[1]]} ({self.format(best[0])})"]
        if self.percent:
            row += [str(n) for n in histogram(numbers)]
        return row


def histogram(values: np.ndarray) -> np.ndarray:
    """Classes per band of :data:`BINS` (100 % falls in the last band)."""
    return np.histogram(np.clip(values, 0.0, 100.0), bins=BINS)[0]


def histograms_svg(columns: dict[str, list[float | None]], width: int = 200, height: int = 90) -> str:
    """One small bar chart per column: classes per 10-point band of a percentage."""
    parts = []
    for name, values in columns.items():
        counts = histogram(np.array([v for v in values if v is not None], np.float64))
        top = max(int(counts.max(initial=0)), 1)
        bar = (width - 20) / len(counts)
        body = [f'<text x="{width / 2}" y="12" text-anchor="middle">{html.escape(name)}</text>']
        for k, n in enumerate(counts):
            h = (height - 34) * n / top
            body.append(f'<rect x="{10 + k * bar:.1f}" y="{height - 18 - h:.1f}" width="{bar - 1:.1f}" '
                        f'height="{h:.1f}" fill="#4878a8"><title>{BINS[k]:.0f}-{BINS[k + 1]:.0f} %: {n}</title></rect>')
        body.append(f'<text x="10" y="{height - 4}">0</text><text x="{width - 10}" y="{height - 4}" '
                    'text-anchor="end">100 %</text>')
        parts.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                     f'font-family="sans-serif" font-size="11">{"".join(body)}</svg>')
    return "".join(parts)


def layout(parts: list[Section | PerClass]) -> tuple[list[Section], list[Section]]:
    """(the index's sections, the full tables' page's sections): each per-class table inline as it fits, and, where
    summarised, in full on the page."""
    index, page = [], []
    for part in parts:
        if isinstance(part, PerClass):
            index += part.inline()
            if part.many:
                page.append(part.full())
        else:
            index.append(part)
    return index, page
