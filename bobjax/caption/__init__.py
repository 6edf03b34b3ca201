"""BOB step 1: class-agnostic context captions (background, pose) of the real training images.

``run(config, workdir)`` is the pipeline stage; later stages read its bank with ``read_caption_bank(workdir)``.
"""

from bobjax.caption.bank import CaptionBank, read_caption_bank
from bobjax.caption.stage import run

__all__ = ["CaptionBank", "read_caption_bank", "run"]
