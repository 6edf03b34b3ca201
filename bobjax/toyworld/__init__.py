"""The procedural toy world: a few-shot bird dataset with a known context bias, small enough for a CPU.

:mod:`~bobjax.toyworld.world` draws it (its names are re-exported here), :mod:`~bobjax.toyworld.renderer` is a
perfect generator for diagnosis, :mod:`~bobjax.toyworld.fidelity` the report's class-fidelity oracle, and
:mod:`~bobjax.toyworld.prior` pre-trains the small Stable Diffusion that ships as ``bobjax:toyworld_prior``.
"""

from bobjax.toyworld.world import (
                                   BACKGROUNDS,
                                   COLOUR_WORDS,
                                   MAX_CLASSES,
                                   POSES,
                                   ToyClass,
                                   ToyWorldSpec,
                                   ToyWorldSplit,
                                   render,
                                   spec_from_config,
                                   toy_classes,
)

__all__ = ["BACKGROUNDS", "COLOUR_WORDS", "MAX_CLASSES", "POSES", "ToyClass", "ToyWorldSpec", "ToyWorldSplit", "render",
           "spec_from_config", "toy_classes"]
