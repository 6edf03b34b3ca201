"""The BOB paper's prompt templates (as in the authors' released code): the context-preserving prompt that
fine-tuning and generation fill with a caption's background and pose, and the class prompt that DataDream's
baseline, class-only generation and CLIP's zero-shot classes use. ``{descriptor}`` is the dataset's object kind
("bird", "aircraft"). Below the config and the stages, so every user imports them downward."""

from __future__ import annotations

from collections.abc import Sequence

BOB_PROMPT = "a {descriptor} photo of a {class_name} in the {background} background with the {pose} pose"
CLASS_PROMPT = "a {descriptor} photo of a {class_name}"


def class_prompts(descriptor: str, class_names: Sequence[str]) -> list[str]:
    """One :data:`CLASS_PROMPT` per class: the texts a CLIP model scores an image against (zero-shot)."""
    return [CLASS_PROMPT.format(descriptor=descriptor, class_name=name) for name in class_names]
