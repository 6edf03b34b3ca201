"""Generation from one LoRA per class (``config.finetune.per_class``; DataDream's per-class variant).

Each class's images come from the base model with that class's own LoRA folded in. The base weights are kept
by reference (no copy) and restored before each fold, so memory stays at one model plus the folded kernels.
Plans list images class by class, so a batch meets at most a few classes and a LoRA is folded once per run of
its images. A batch that spans classes is split by class, and each part is padded to a power of two images
so the sampler compiles for a handful of batch sizes, not one per part size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flax import nnx

from bobjax import run_folder
from bobjax.generate.inputs import SamplerInputs
from bobjax.generate.plan import PlannedImage
from bobjax.models.sd.text_to_image import TextToImage
from bobjax.models import lora_file


class PerClassLoras:
    """``planned images -> uint8 images``, each drawn with the LoRA of its own class."""

    def __init__(self, generator: TextToImage, finetune_dir, scale: float, inputs: SamplerInputs):
        self.generator, self.finetune_dir, self.scale, self.inputs = generator, finetune_dir, scale, inputs
        sd = generator.sd
        self._base = [(variable, variable.get_value()) for model in (sd.unet, sd.text_encoder)
                      for _, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))]
        self._folded: int | None = None

    def use(self, label: int) -> None:
        """Folds class ``label``'s LoRA into the base weights (a no-op if it is already in)."""
        if label == self._folded:
            return
        for variable, value in self._base:
            variable.set_value(value)
        self._folded = None  # Until the fold below succeeds, the weights are the base model's.
        lora_file.fold_file_into_pipeline(self.generator.sd,
                                          run_folder.class_lora_dir(self.finetune_dir, label) / run_folder.LORA_FILE,
                                     scale=self.scale)
        self.generator.refresh_weights()
        self._folded = label

    def __call__(self, planned: Sequence[PlannedImage]) -> np.ndarray:
        out: list[np.ndarray | None] = [None] * len(planned)
        for label in dict.fromkeys(p.label for p in planned):  # In plan order: the folded class goes first.
            rows = [i for i, p in enumerate(planned) if p.label == label]
            size = min(len(planned), 1 << (len(rows) - 1).bit_length())  # The next power of two, at most the batch.
            padded = rows + [rows[-1]] * (size - len(rows))
            self.use(label)
            images = self.generator(**self.inputs([planned[i] for i in padded]))
            for i, image in zip(rows, images):
                out[i] = image
        return np.stack(out)
