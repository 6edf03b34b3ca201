"""The report: one run's or a comparison's results as HTML, Markdown and JSON, with image grids.

``run(config, workdir)`` is the pipeline stage (:mod:`bobjax.report.stage`); collecting results and rendering
them are the other modules of this package.
"""

from bobjax.report.stage import run

__all__ = ["run"]
