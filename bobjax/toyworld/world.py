"""The toy world: a procedural, seeded, fine-grained bird dataset with ground-truth context words.

Why it exists: no real weights or datasets reach a development machine, yet the method must be shown to work.
Every toy bird has the same shape; classes differ in plumage colour (a crest and cap in the class colour, the
body tinted by it), wing bar and tail shape, while the picture is dominated by a background and a pose that
are independent of the class, exactly the situation in which a classifier trained on few images latches onto
context. With ``correlated=True`` the
training pool sees each class mostly in its own one or two backgrounds, while validation and test are
context-balanced: a spurious class-context link that BOB is meant to break.

Each image is rendered on demand from (seed, split, index), so the dataset costs no disk and is identical on
every machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
from PIL import Image, ImageDraw

from bobjax.errors import ConfigError

BACKGROUNDS = ("blue sky", "green grass", "sandy desert", "snowy field", "dark forest", "lake water", "city street")
POSES = ("flying with wings spread", "perched on a branch", "standing on the ground", "diving downward")

# The fine-grained details. A class is one (crest colour, wing bar, tail shape) combination.
_CREST_COLOURS = {
    "crimson": (200, 30, 40),
    "golden": (235, 185, 20),
    "azure": (40, 110, 230),
    "violet": (140, 60, 190),
    "emerald": (20, 160, 90),
    "ivory": (245, 240, 225),
}
_TAILS = ("forked", "fan")
MAX_CLASSES = len(_CREST_COLOURS) * 2 * len(_TAILS)  # Every (crest, wing bar, tail) combination.
_BODY = (120, 100, 85)
_BAR = (25, 25, 25)


# Species names, as opaque to a text encoder as "Laysan Albatross" or "737-400" are to SD's: no name holds a word
# for what tells the classes apart, so a zero-shot prompt carries no class information, and a LoRA has to tie each
# name to plumage words the prior knows (``ToyClass.descriptions``).
_SPECIES = ("Ashby", "Brenner", "Calder", "Dorran", "Ellery", "Fenwick", "Galloway", "Harlan", "Iverson", "Jarrow",
            "Kessler", "Lindqvist", "Marlow", "Norcott", "Oakley", "Pemberton", "Quennel", "Rathbone", "Selwyn",
            "Thornby", "Upton", "Varley", "Wexford", "Yardley")

# Plain words for each detail, with synonyms, as captions on the web would vary them.
COLOUR_WORDS = {
    "crimson": ("red", "crimson", "scarlet"),
    "golden": ("yellow", "golden", "gold"),
    "azure": ("blue", "azure", "cobalt"),
    "violet": ("purple", "violet", "lilac"),
    "emerald": ("green", "emerald", "jade"),
    "ivory": ("white", "ivory", "cream"),
}
WING_BAR_WORDS = ("a black wing bar", "barred wings")
TAIL_WORDS = {"forked": ("a forked tail", "a split tail"), "fan": ("a fan tail", "a rounded tail")}


@dataclasses.dataclass(frozen=True)
class ToyClass:
    name: str
    crest: str
    wing_bar: bool
    tail: str

    def descriptions(self, descriptor: str) -> list[str]:
        """Every plain-word description of how this class looks ("red-crested bird with a forked tail", ...):
        the colour always (it is what a bird is seen by first), the wing bar and tail in some, with synonyms."""
        out = []
        for colour in COLOUR_WORDS[self.crest]:
            for head in (f"{colour}-crested {descriptor}", f"{descriptor} with a {colour} head"):
                bars = [None] + (list(WING_BAR_WORDS) if self.wing_bar else [])
                for bar in bars:
                    for tail in (None, *TAIL_WORDS[self.tail]):
                        parts = [p for p in (bar, tail) if p]
                        joiner = " with " if head.endswith(descriptor) else " and "
                        out.append(head + (joiner + " and ".join(parts) if parts else ""))
        return out


def toy_classes(num_classes: int) -> list[ToyClass]:
    """The first ``num_classes`` classes, each one (crest colour, wing bar, tail) combination under a species
    name that names none of them."""
    combos = [(c, bar, tail) for tail in _TAILS for bar in (False, True) for c in _CREST_COLOURS]
    if not 2 <= num_classes <= len(combos):
        raise ConfigError(f"config.data.toyworld.num_classes must be in [2, {len(combos)}], got {num_classes}")
    return [ToyClass(name=f"{_SPECIES[i]} finch", crest=crest, wing_bar=bar, tail=tail)
            for i, (crest, bar, tail) in enumerate(combos[:num_classes])]


@dataclasses.dataclass(frozen=True)
class ToyWorldSpec:
    """Everything that determines the world's images."""

    num_classes: int = 6
    image_size: int = 64
    seed: int = 0
    train_per_class: int = 40
    val_per_class: int = 10
    test_per_class: int = 30
    correlated: bool = True
    # With ``correlated``, the probability that a training image uses one of its class's own backgrounds.
    correlation: float = 0.9
    num_backgrounds: int = 6

    def __post_init__(self):
        if not 1 <= self.num_backgrounds <= len(BACKGROUNDS):
            raise ConfigError(f"config.data.toyworld.num_backgrounds must be in [1, {len(BACKGROUNDS)}], got {self.num_backgrounds}")
        if not 0.0 <= self.correlation <= 1.0:
            raise ConfigError(f"config.data.toyworld.correlation must be in [0, 1], got {self.correlation}")
        if self.image_size < 16:
            raise ConfigError(f"config.data.toyworld.image_size must be >= 16, got {self.image_size}")


def spec_from_config(toyworld_config) -> ToyWorldSpec:
    """``config.data.toyworld`` -> the spec of the world it describes."""
    return ToyWorldSpec(**{f.name: toyworld_config[f.name] for f in dataclasses.fields(ToyWorldSpec)
                           if f.name in toyworld_config})


def _rng(*key) -> np.random.Generator:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class ToyWorldSplit:
    """One split of the toy world as a random-access record source (``len`` and ``[i]``, as grain expects).

    Records: ``image`` (uint8 HxWx3), ``label``, ``image_id``, ``class_name``, ``background``, ``pose``.
    """

    def __init__(self, spec: ToyWorldSpec, split: str):
        sizes = {"train": spec.train_per_class, "validation": spec.val_per_class, "test": spec.test_per_class}
        if split not in sizes:
            raise ValueError(f"toyworld has splits {sorted(sizes)}, not {split!r}")
        self.spec, self.split = spec, split
        self.classes = toy_classes(spec.num_classes)
        self._per_class = sizes[split]
        self._contexts = [self._context(i) for i in range(len(self))]

    def __len__(self) -> int:
        return self._per_class * self.spec.num_classes

    def label(self, index: int) -> int:
        return index % self.spec.num_classes

    def labels(self) -> np.ndarray:
        return np.arange(len(self)) % self.spec.num_classes

    def image_ids(self) -> list[str]:
        return [self.image_id(i) for i in range(len(self))]

    def images(self) -> np.ndarray:
        """Every image of the split, drawn now: [N, H, W, 3] uint8, in index order (``labels()``'s order)."""
        return np.stack([self[i]["image"] for i in range(len(self))])

    def image_id(self, index: int) -> str:
        return f"toyworld/{self.split}/{index:06d}"

    def context(self, index: int) -> tuple[str, str]:
        """(background, pose) words of image ``index``."""
        return self._contexts[index]

    def _context(self, index: int) -> tuple[str, str]:
        spec, label = self.spec, self.label(index)
        rng = _rng("context", spec.seed, self.split, index)
        if self.split == "train" and spec.correlated:
            own = [(label + j) % spec.num_backgrounds for j in range(min(2, spec.num_backgrounds))]
            if rng.random() < spec.correlation:
                background = own[rng.integers(len(own))]
            else:
                background = int(rng.integers(spec.num_backgrounds))
            pose = int(rng.integers(len(POSES)))
        else:  # Balanced: cycle through every (background, pose) pair within each class.
            slot = index // spec.num_classes
            cells = spec.num_backgrounds * len(POSES)
            order = _rng("balanced", spec.seed, self.split, label).permutation(cells)
            cell = int(order[slot % cells])
            background, pose = cell % spec.num_backgrounds, cell // spec.num_backgrounds
        return BACKGROUNDS[background], POSES[pose]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"toyworld {self.split} index {index} out of range [0, {len(self)})")
        label = self.label(index)
        background, pose = self.context(index)
        rng = _rng("render", self.spec.seed, self.split, index)
        image = render(self.classes[label], background, pose, self.spec.image_size, rng)
        return {
            "image": image,
            "label": label,
            "image_id": self.image_id(index),
            "class_name": self.classes[label].name,
            "background": background,
            "pose": pose,
        }


def render(cls: ToyClass, background: str, pose: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draws one bird of class ``cls`` in ``background`` and ``pose``; jittered by ``rng``."""
    s = 4  # Supersampling factor, for smooth edges after the final resize.
    big = size * s
    canvas = Image.fromarray(_background(background, big, rng))
    draw = ImageDraw.Draw(canvas)
    scale = big * (0.30 + 0.06 * rng.random())
    cx = big * (0.5 + 0.12 * (rng.random() - 0.5))
    cy_by_pose = {POSES[0]: 0.40, POSES[1]: 0.50, POSES[2]: 0.62, POSES[3]: 0.45}
    cy = big * (cy_by_pose[pose] + 0.08 * (rng.random() - 0.5))
    facing = 1 if rng.random() < 0.5 else -1
    tilt = {POSES[0]: 0.0, POSES[1]: 0.0, POSES[2]: 0.0, POSES[3]: 0.7}[pose] * facing
    tilt += 0.15 * (rng.random() - 0.5)

    def pt(x: float, y: float) -> tuple[float, float]:
        """Bird-frame point (x forward, y down, in units of ``scale``) to canvas pixels."""
        x *= facing
        c, sn = math.cos(tilt), math.sin(tilt)
        return cx + scale * (c * x - sn * y), cy + scale * (sn * x + c * y)

    def ellipse(x, y, rx, ry, colour):
        pts = [pt(x + rx * math.cos(a), y + ry * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 40)]
        draw.polygon(pts, fill=colour)

    if pose == POSES[1]:  # The branch under the feet.
        draw.line([pt(-1.2, 0.42), pt(1.2, 0.42)], fill=(90, 60, 30), width=max(2, int(scale * 0.08)))
    if pose == POSES[2]:  # Legs.
        for x in (-0.1, 0.12):
            draw.line([pt(x, 0.25), pt(x, 0.5)], fill=(60, 40, 20), width=max(1, int(scale * 0.04)))
    crest = _CREST_COLOURS[cls.crest]
    # Plumage: the body is tinted by the class colour, as species differ in plumage. With the colour on the cap
    # alone (~2% of the picture) a toy prior pre-trained on a CPU drew no class detail at all: a LoRA fine-tuned
    # per class from it made images an oracle labelled right 24.6% of the time (chance 16.7%).
    body = tuple(int(0.5 * b + 0.5 * c) for b, c in zip(_BODY, crest))
    # Tail: the fine-grained detail number three.
    if cls.tail == "forked":
        draw.polygon([pt(-0.45, 0.0), pt(-1.0, -0.25), pt(-0.8, 0.0), pt(-1.0, 0.25)], fill=body)
    else:
        draw.polygon([pt(-0.45, -0.05), pt(-0.95, -0.3), pt(-1.02, 0.0), pt(-0.95, 0.3), pt(-0.45, 0.05)], fill=body)
    ellipse(0.0, 0.0, 0.55, 0.3, body)  # Body.
    # Wing: spread up when flying or diving, folded on the body otherwise.
    if pose in (POSES[0], POSES[3]):
        wing = [pt(-0.2, -0.05), pt(0.05, -0.85), pt(0.3, -0.05)]
        bar_line = [pt(-0.05, -0.45), pt(0.2, -0.45)]
    else:
        wing = [pt(-0.35, -0.05), pt(0.25, -0.12), pt(0.1, 0.12), pt(-0.4, 0.1)]
        bar_line = [pt(-0.3, 0.0), pt(0.15, -0.02)]
    draw.polygon(wing, fill=tuple(int(v * 0.8) for v in body))
    if cls.wing_bar:  # Fine-grained detail number two.
        draw.line(bar_line, fill=_BAR, width=max(1, int(scale * 0.07)))
    # Crest and head in the class colour: at 64 px a crest alone is ~15 pixels, below what a 16x16 latent keeps
    # or a small classifier learns from a few hundred images; with the head it is ~80.
    draw.polygon([pt(0.38, -0.32), pt(0.40, -0.72), pt(0.55, -0.42), pt(0.68, -0.68), pt(0.72, -0.32)], fill=crest)
    ellipse(0.55, -0.22, 0.22, 0.22, crest)  # Head.
    draw.polygon([pt(0.74, -0.28), pt(0.97, -0.2), pt(0.74, -0.14)], fill=(230, 150, 30))  # Beak.
    ellipse(0.62, -0.27, 0.045, 0.045, (10, 10, 10))  # Eye.
    return np.asarray(canvas.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def _background(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A textured scene that a captioner (or the oracle) would call ``name``."""
    y, x = np.mgrid[0:size, 0:size] / size
    noise = rng.normal(0, 6, (size, size, 1))

    def mix(top, bottom, t):
        return np.asarray(top) * (1 - t[..., None]) + np.asarray(bottom) * t[..., None]

    phase = rng.random() * 2 * math.pi
    if name == "blue sky":
        img = mix((70, 130, 220), (170, 210, 245), y)
        for _ in range(3):  # Clouds.
            cx, cy, r = rng.random(), rng.random() * 0.6, 0.08 + 0.08 * rng.random()
            img[((x - cx) ** 2 + ((y - cy) * 2) ** 2) < r**2] = (240, 245, 250)
    elif name == "green grass":
        img = mix((110, 170, 70), (40, 110, 30), y) + 18 * np.sin(x[..., None] * 90 + phase)
    elif name == "sandy desert":
        img = mix((225, 195, 140), (200, 160, 100), y) + 14 * np.sin((x + 0.3 * y)[..., None] * 14 + phase)
    elif name == "snowy field":
        img = mix((225, 230, 240), (250, 250, 252), y)
        img[rng.random((size, size)) < 0.01] = (170, 175, 190)
    elif name == "dark forest":
        img = mix((30, 60, 35), (20, 40, 20), y)
        for i in range(6):  # Trunks.
            cx = (i + rng.random()) / 6
            img[np.abs(x - cx) < 0.025] = (60, 40, 25)
    elif name == "lake water":
        img = mix((40, 90, 140), (20, 60, 110), y) + 16 * np.sin(y[..., None] * 70 + 3 * np.sin(x[..., None] * 9) + phase)
    elif name == "city street":
        img = mix((150, 150, 155), (95, 95, 100), y)
        for i in range(5):  # Windows of buildings.
            img[(np.abs(x - (i + 0.5) / 5) < 0.05) & (y < 0.5) & ((y * 20).astype(int) % 2 == 0)] = (240, 220, 120)
    else:
        raise ValueError(f"unknown toyworld background {name!r}; expected one of {BACKGROUNDS}")
    return np.clip(img + noise, 0, 255).astype(np.uint8)
