"""Pre-training of the toy-world Stable Diffusion prior (``bobjax:toyworld_prior``): data, models, loop, export.

``python -m bobjax.toyworld.prior --config=configs/toyworld_prior.py --workdir=DIR [--export=PATH]``.
"""
