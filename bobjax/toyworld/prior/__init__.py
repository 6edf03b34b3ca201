"""Pre-training of the toy-world Stable Diffusion prior (``bobjax:toyworld_prior``): data, models, training
phases, export.

``python -m bobjax.toyworld.prior --config=configs/toyworld_prior.py --workdir=DIR [--export=PATH]``.
"""
