"""BOB step 4: a classifier trained on the real + synthetic stream, evaluated on the real test split.

``run(config, workdir)`` is the pipeline stage (:mod:`bobjax.classify.stage`); its input streams, augmentation,
step, optimizer and metrics are the other modules of this package.
"""

from bobjax.classify.stage import run

__all__ = ["run"]
