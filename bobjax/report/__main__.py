"""``python -m bobjax.report WORKDIR [WORKDIR ...]``: the paper's table with ours beside it, over many runs' reports
(those of ``launch/paper_grid.sh``, say), as Markdown on stdout (:mod:`bobjax.report.paper`)."""

import sys

from bobjax import artifacts, run_folder
from bobjax.report import paper, render


def collect(workdirs: list[str]) -> dict[paper.Cell, dict[str, paper.Score]]:
    """Ours per cell, from the reports of ``workdirs`` (each a run or comparison whose report stage is complete)."""
    ours = {}
    for workdir in workdirs:
        folder = artifacts.storage_path(workdir, "WORKDIR")
        results = run_folder.stage_dir(folder, "report") / "results.json"
        if not results.exists():
            print(f"{folder}: no {results.name} (its report stage has not run), skipped", file=sys.stderr)
            continue
        at = paper.cell(artifacts.read_json(folder / "config.json"))
        if at is None or at in ours:
            print(f"{folder}: " + ("matches no cell of the paper" if at is None else f"a second run of {at}") +
                  ", skipped", file=sys.stderr)
            continue
        ours[at] = {method: paper.Score(r["top1"], r["top1_std"], len(r["seeds"]))
                    for method, r in artifacts.read_json(results).items()}
    return ours


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        sys.exit("usage: python -m bobjax.report WORKDIR [WORKDIR ...]: the paper's table with ours beside it, from "
                 "the reports of the workdirs (each a run or comparison whose report stage is complete)")
    part = render.Section("Top-1 (%)", text=paper.published()["paper"], header=paper.HEADER,
                          rows=paper.table(collect(argv)))
    print(render.to_markdown("BOB's published results beside ours", [part]), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
