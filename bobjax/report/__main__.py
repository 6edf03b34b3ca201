"""``python -m bobjax.report WORKDIR [WORKDIR ...]``: the paper's table with ours beside it, over many runs' reports
(those of ``launch/paper_grid.sh``, say), as Markdown on stdout (:mod:`bobjax.report.paper`)."""

import sys

from bobjax.report import paper, render


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        sys.exit("usage: python -m bobjax.report WORKDIR [WORKDIR ...]: the paper's table with ours beside it, from "
                 "the reports of the workdirs (each a run or comparison whose report stage is complete)")
    part = render.Section("Top-1 (%)", text=paper.published()["paper"], header=paper.HEADER,
                          rows=paper.table(paper.collect(argv)))
    print(render.to_markdown("BOB's published results beside ours", [part]), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
