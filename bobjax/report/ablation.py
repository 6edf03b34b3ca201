"""The report's ablation table, laid out as BOB's (the paper's ablation: Aircraft 10-shot, ResNet-50): which of
BOB's two halves a method has (context preservation in fine-tuning, context marginalization in generation), and where
its contexts come from, with the paper's number (``paper_results.json``, its ``ablation`` table) beside ours.
"""

from __future__ import annotations

from bobjax.report import paper
from bobjax.report.render import Section, pct
from bobjax.report.results import Results

# (row, method preset, the row's method in paper_results.json's ablation table).
ROWS = (
    ("neither (DataDream)", "datadream", "datadream"),
    ("preservation only", "preservation_only", "preservation only"),
    ("marginalization only", "marginalization_only", "marginalization only"),
    ("both (BOB)", "bob", "bob"),
    ("both, contexts drawn within the class", "bob_within_class", "bob_within_class"),
    ("both, listed contexts (paper: 100 LLM-invented)", "bob_listed_contexts", "100 LLM-invented contexts"),
)
ABLATION_ONLY = {"preservation_only", "marginalization_only", "bob_within_class", "bob_listed_contexts"}


def section(results: Results, class_fidelity: dict[str, dict] | None = None) -> Section | None:
    """The table, for a comparison with BOB and at least one of its ablations; None otherwise."""
    by_method = {m.method: m for m in results.methods}
    if "bob" not in by_method or not ABLATION_ONLY & set(by_method):
        return None
    fidelity = class_fidelity or {}
    published = {e["method"]: e["top1"] for e in paper.published()["results"] if e["table"] == "ablation"}
    rows = []
    for row, method, paper_method in ROWS:
        if method in by_method:
            m = by_method[method]
            rows.append([row, method, f"{pct(m.top1_mean)} ± {pct(m.top1_std)}",
                         pct(fidelity.get(method, {}).get("top1")), f"{published[paper_method]:.2f}"])
    seeds = sorted({s for m in results.methods for s in m.seeds})
    return Section(
        "Ablation: BOB's two halves",
        text=f"Context preservation fine-tunes on prompts that name each real image's context; context "
             f"marginalization generates every class in contexts drawn from the whole dataset. Test top-1, mean ± std "
             f"over seeds {seeds}; class fidelity as in its own table ('-' where not measured). The paper's column is "
             "BOB's ablation on Aircraft 10-shot with ResNet-50, for the order, not the level.",
        header=["row", "method", "top-1 (%)", "class fidelity (%)", "paper top-1 (%)"], rows=rows)
