"""BOB step 3: context-marginalized generation of the synthetic dataset.

``run(config, workdir)`` is the pipeline stage (:mod:`bobjax.generate.stage`); the plan of every image, the
guided sampler and per-class LoRA generation are the other modules of this package.
"""

from bobjax.generate.stage import run

__all__ = ["run"]
