"""Filtering the synthetic set between generation and classification (DiffCoRe-Mix's hard cosine, DISEF's zero-shot
test, top-k per class); off by default, as BOB keeps every image.

``run(config, workdir)`` is the pipeline stage (:mod:`bobjax.filter.stage`); the rules and the keep list the
classifier applies are the other modules of this package.
"""

from bobjax.filter.stage import run

__all__ = ["run"]
