"""How good a synthetic set is, per class, in a pretrained encoder's feature space: Fréchet distance to real images
(:mod:`~bobjax.quality.frechet`), diversity, zero-shot fidelity and CLIP score (:mod:`~bobjax.quality.measures`), with
the encoders of :mod:`~bobjax.quality.encoders`. The report and the filter stage use them.
"""
