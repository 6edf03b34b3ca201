"""Stable Diffusion in Flax NNX: modules named like diffusers' so its checkpoints load without renames.

``load_stable_diffusion`` and ``StableDiffusion`` are imported on first use, so that importing one submodule
(e.g. ``sd.norms`` from the CLIP tower) does not pull in the whole pipeline and its import cycle.
"""

__all__ = ["StableDiffusion", "load_stable_diffusion"]


def __getattr__(name: str):
    if name in __all__:
        from bobjax.models.sd import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'bobjax.models.sd' has no attribute {name!r}")
