"""Prompt plans: which prompt, context and noise seed every synthetic image gets.

BOB's context marginalization (``bob``) draws, for every synthetic image of every class, one index uniformly
with replacement over the caption bank of the *whole dataset*, and uses that real image's (background, pose)
pair with the target class: an approximation of P(X | do(Y)). The other plans are the paper's ablations and
baselines, and ``listed`` draws from contexts the user lists (BOB's LLM-invented contexts). Every draw comes from
a generator keyed by (seed, class, index), so image (c, i) gets the same prompt and noise whatever the number of
classes, images, devices or restarts; ``shared_sequence`` reproduces
the authors' released code, which reset the seed before each class so that all classes share one sequence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from bobjax.errors import ConfigError

PLANS = ("bob", "within_class", "independent", "listed", "class_only", "zero_shot")
BANK_PLANS = ("bob", "within_class", "independent")  # Those that draw contexts from the caption bank.
CONTEXT_PLANS = (*BANK_PLANS, "listed")


class ContextBank(Protocol):
    """What a plan needs of the caption bank (``bobjax.caption.bank.CaptionBank`` provides it)."""

    labels: np.ndarray
    backgrounds: Sequence[str]
    poses: Sequence[str]


@dataclasses.dataclass(frozen=True)
class PlannedImage:
    label: int
    index: int  # Within its class.
    class_name: str
    prompt: str
    background: str
    pose: str
    seed: int  # Seeds this image's initial noise.
    # Set by bobjax.generate.guidance (the peers' modes); the defaults are plain text-to-image.
    mix_prompt: str = ""  # MVC: the prompt whose embedding is mixed with this one's.
    source_index: int = -1  # Real-guided: the train-split image sampling starts from.
    source_label: int = -1  # Its class.
    source_weight: float = 0.0  # Its class's share of the image's soft label (Diff-Mix).

    @property
    def image_id(self) -> str:
        return f"{self.label:04d}_{self.index:05d}"


def images_per_class(train_counts: Sequence[int], images_per_class: int, long_tail_total: int, long_tail_m: int) -> list[int]:
    """A fixed number per class, or BOB's long-tail rule: class c gets ``total - n_c * m`` (at least 0)."""
    if long_tail_total:
        return [max(0, long_tail_total - n * long_tail_m) for n in train_counts]
    if images_per_class < 0:
        raise ConfigError(f"config.generate.images_per_class must be >= 0, got {images_per_class}")
    return [images_per_class] * len(train_counts)


def _generator(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _format(prompt: str, **fields: str) -> str:
    try:
        return prompt.format(**fields)
    except (KeyError, IndexError) as e:
        raise ConfigError(f"config.generate.prompt {prompt!r} uses {e}; it may use {{{'}, {'.join(fields)}}}") from e


def make_plan(
    plan: str,
    *,
    class_names: Sequence[str],
    descriptor: str,
    counts: Sequence[int],
    prompt: str,
    seed: int,
    bank: ContextBank | None = None,
    listed: Sequence[tuple[str, str]] = (),
    shared_sequence: bool = False,
) -> list[PlannedImage]:
    """Every synthetic image of the run, class by class; ``listed``: the (background, pose) pairs of ``listed``."""
    if plan not in PLANS:
        raise ConfigError(f"config.generate.plan is {plan!r}; expected one of {PLANS}")
    needs_context = plan in CONTEXT_PLANS
    if plan == "listed" and not listed:
        raise ConfigError("plan 'listed' draws contexts from config.generate.contexts_file, which lists none")
    if plan in BANK_PLANS and (bank is None or len(bank.labels) == 0):
        raise ConfigError(f"plan {plan!r} draws contexts from the caption bank, which is empty or missing; "
                          "run the caption stage first")
    for field in ("{background}", "{pose}"):
        if needs_context and field not in prompt:
            raise ConfigError(f"plan {plan!r} draws contexts but config.generate.prompt has no {field}: {prompt!r}")
        if not needs_context and field in prompt:
            raise ConfigError(f"plan {plan!r} has no contexts but config.generate.prompt uses {field}: {prompt!r}")
    labels = np.asarray(bank.labels) if bank is not None else np.zeros(0, np.int64)

    images = []
    for label, (class_name, count) in enumerate(zip(class_names, counts)):
        own = np.flatnonzero(labels == label)
        if plan == "within_class" and count and not len(own):
            raise ConfigError(f"plan 'within_class': class {class_name!r} has no captioned real image")
        for index in range(count):
            rng = _generator(seed, index) if shared_sequence else _generator(seed, label, index)
            noise_seed = int(rng.integers(2**31 - 1))
            background = pose = ""
            if plan == "bob":
                j = int(rng.integers(len(labels)))
                background, pose = bank.backgrounds[j], bank.poses[j]
            elif plan == "within_class":
                j = int(own[rng.integers(len(own))])
                background, pose = bank.backgrounds[j], bank.poses[j]
            elif plan == "listed":
                background, pose = listed[int(rng.integers(len(listed)))]
            elif plan == "independent":
                background = bank.backgrounds[int(rng.integers(len(labels)))]
                pose = bank.poses[int(rng.integers(len(labels)))]
            text = _format(prompt, descriptor=descriptor, class_name=class_name, background=background, pose=pose)
            images.append(PlannedImage(label, index, class_name, text, background, pose, noise_seed))
    return images


def fixed_noise_plan(planned: Sequence[PlannedImage], class_names: Sequence[str], descriptor: str, prompt: str,
                     rows: int, labels: Sequence[int] | None = None) -> list[PlannedImage]:
    """The report's fixed-noise grid, class-major: the first ``rows`` planned images, each redrawn for every class
    (of ``labels``, if given) with its noise seed and context kept and only the class name changed, so whether the
    class name alone changes the picture is seen at a glance."""
    templates = list(planned[:rows])
    grid = []
    for label in range(len(class_names)) if labels is None else labels:
        name = class_names[label]
        for t in templates:
            text = _format(prompt, descriptor=descriptor, class_name=name, background=t.background, pose=t.pose)
            # A real-guided template keeps its start image; an MVC one mixes the new prompt with itself, as its
            # second prompt names the template's class.
            grid.append(dataclasses.replace(t, label=label, class_name=name, prompt=text,
                                            mix_prompt=text if t.mix_prompt else ""))
    return grid
