"""BOB step 2: a LoRA on Stable Diffusion fine-tuned with context-preserving prompts.

``run(config, workdir)`` is the pipeline stage (:mod:`bobjax.finetune.stage`); its step, adapters, input and
previews are the other modules of this package.
"""

from bobjax.finetune.stage import run

__all__ = ["run"]
