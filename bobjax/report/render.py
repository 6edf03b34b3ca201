"""The report as HTML (one self-contained page but for its PNGs) and as its Markdown twin.

Both are built from the same sections, so they cannot disagree: a section is a title plus either a table
(header row, rows) or a list of images, and perhaps a link (to the page of full per-class tables). Charts are inline
SVG (HTML only): no plotting library for a bar chart and a few histograms.
"""

from __future__ import annotations

import dataclasses
import html

from bobjax.report.results import Results


@dataclasses.dataclass
class Section:
    title: str
    text: str = ""
    header: list[str] = dataclasses.field(default_factory=list)
    rows: list[list[str]] = dataclasses.field(default_factory=list)
    images: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (caption, relative path)
    code: str = ""
    svg: str = ""  # A chart, HTML only.
    link: tuple[str, str] | None = None  # (text, relative address): where the rest of the section is.


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


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


def to_html(title: str, parts: list[Section], intro: str = "") -> str:
    body = [f"<h1>{html.escape(title)}</h1>"] + ([f"<p>{intro}</p>"] if intro else [])
    for section in parts:
        body.append(f'<h2 id="{anchor(section.title)}">{html.escape(section.title)}</h2>')
        if section.text:
            body.append(f"<p>{html.escape(section.text)}</p>")
        if section.link:
            body.append(f'<p><a href="{html.escape(section.link[1])}">{html.escape(section.link[0])}</a></p>')
        body.append(section.svg)
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
             "max-width:100%}figure{margin:.5em 0}svg{margin-right:1em}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def anchor(title: str) -> str:
    """A section's id in the HTML page, from its title."""
    return "-".join("".join(ch if ch.isalnum() else " " for ch in title.lower()).split())


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(title: str, parts: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in parts:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        if section.link:
            text, address = section.link
            lines += [f"[{text}]({address.split('#')[0].replace('.html', '.md')})", ""]
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
