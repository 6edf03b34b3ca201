"""Synthetic images: prompt plans and the sampler behind the ``generate`` stage."""
