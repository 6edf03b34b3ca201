"""A chat VLM on transformers (PyTorch) that answers one question about each image: BOB's captioner.

Qwen2.5-VL-7B-Instruct by default; any model served by transformers' image-text-to-text interface
(``AutoProcessor`` + ``AutoModelForImageTextToText`` + chat template) works. Batches are left-padded so every
answer starts right after its prompt; decoding is greedy (the model's generation config otherwise, e.g. its
repetition penalty) and bounded by ``max_new_tokens``. bf16 on CUDA, fp32 on CPU.

torch and transformers are imported here only, lazily, so the JAX stages never load them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from bobjax.errors import ConfigError


def _image_only(processor_class):
    """``processor_class`` without its video processor.

    transformers builds the video processors of Qwen-VL models on torchvision only, and refuses to build the
    processor at all without it; captioning needs images only, so bobjax does not require torchvision.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_class.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(f"ImageOnly{processor_class.__name__}", (processor_class,), {"__init__": __init__})


def load_processor(model: str):
    """``AutoProcessor.from_pretrained(model)``, or, where a video backend is missing, its image-only form."""
    from transformers import AutoConfig, AutoProcessor
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    try:
        return AutoProcessor.from_pretrained(model)
    except ImportError:
        processor_class = PROCESSOR_MAPPING.get(type(AutoConfig.from_pretrained(model)), None)
        if processor_class is None or "video_processor" not in processor_class.get_attributes():
            raise
        return _image_only(processor_class).from_pretrained(model)


class VLMCaptioner:
    """``captioner(images, prompts) -> answers``: one greedy answer per (image, prompt) pair, in one batch."""

    def __init__(self, model: str, max_new_tokens: int, device: str | None = None):
        try:
            import torch
        except ImportError as e:  # The JAX-only installs ('.[tpu]', '.[cuda]') leave torch out.
            raise ConfigError(
                f"config.caption.method='vlm' runs the caption VLM in PyTorch, which is not installed ({e}): "
                f"pip install '.[torch]' (on a Cloud TPU VM: launch/tpu_vm.sh TPU ZONE --caption-here ..., for "
                f"torch's CPU build), or caption elsewhere first, or give captions as TSV (config.caption.method='tsv')"
            ) from e
        from transformers import AutoModelForImageTextToText

        if max_new_tokens < 1:
            raise ConfigError(f"config.caption.max_new_tokens must be >= 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        try:
            self.processor = load_processor(model)
            self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"config.caption.model={model!r} cannot be loaded as a transformers image-text-to-text model "
                f"(a hub id or a local folder with its processor): {e}"
            ) from e
        self.processor.tokenizer.padding_side = "left"

    def prompt_text(self, prompt: str) -> str:
        """The chat-formatted text of a user turn holding one image and ``prompt``, ready for the answer."""
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    def __call__(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> list[str]:
        import torch

        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if not images:
            return []
        inputs = self.processor(
            text=[self.prompt_text(p) for p in prompts],
            images=[Image.fromarray(np.asarray(image)) for image in images],
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         pad_token_id=self.processor.tokenizer.pad_token_id)
        answers = output[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(answers, skip_special_tokens=True)
