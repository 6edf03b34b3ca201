"""Makes the README's picture from a demo run: DataDream's and BOB's fixed-noise grids side by side.

    python docs/make_pictures.py runs/demo            # writes docs/images/fixed_noise.png

The run is a comparison with DataDream and BOB (the quick-start demo is one). Each method's generate stage draws a
fixed-noise grid (one row per noise seed and context, one column per class: ``synthetic/grids/fixed_noise.png``,
found through the run's pointer to a shared folder) and ``splits.json`` names the classes in column order. This
script only lays the first seed's grids out with titles and class names, so the picture is bobjax's own output and
can be remade from any such run.
"""

from __future__ import annotations

import argparse
import os
import sys

from PIL import Image, ImageDraw, ImageFont

from bobjax import artifacts, run_folder
from bobjax.generate.stage import FIXED_NOISE_GRID

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "images", "fixed_noise.png")
PANELS = (("datadream", "DataDream: the class name only"), ("bob", "BOB: the class name and the row's context"))
SEED = "seed0"  # The comparison's first seed, as the report shows it.
SCALE = 2  # Pixels per grid pixel: the demo's 64 px images are small on a screen.
GAP = 24  # Pixels between the two panels.
FONT_SIZE = 24  # The README shows the picture at about 0.6 of its size.


class PictureError(Exception):
    """A run that lacks what the picture needs; the message names the file and what was expected."""


def _read_grid(run: str, method: str) -> Image.Image:
    folder = os.path.join(run, method, SEED)
    if not os.path.isdir(folder):
        raise PictureError(f"{folder} does not exist: expected a comparison with {method!r} "
                           "(e.g. python -m bobjax.main --config=configs/demo.py --workdir=runs/demo)")
    path = run_folder.stage_dir(folder, "generate") / "grids" / FIXED_NOISE_GRID
    if not path.exists():
        raise PictureError(f"{path} does not exist: expected the grid of {method!r}'s completed generate stage")
    return Image.open(path).convert("RGB")


def _class_names(run: str, method: str) -> list[str]:
    path = os.path.join(run, method, SEED, "splits.json")
    if not os.path.exists(path):
        raise PictureError(f"{path} does not exist: expected the split of the run that drew the grid")
    names = artifacts.read_json(path).get("class_names")
    if not names:
        raise PictureError(f"{path} names no classes (no 'class_names')")
    return list(names)


def _wrap(name: str, font, width: int) -> str:
    """``name`` with a line break between words wherever the line would be wider than ``width`` pixels."""
    lines = [""]
    for word in name.split():
        trial = f"{lines[-1]} {word}".strip()
        if lines[-1] and font.getlength(trial) > width:
            lines.append(word)
        else:
            lines[-1] = trial
    return "\n".join(lines)


def _panel(grid: Image.Image, title: str, names: list[str], font) -> Image.Image:
    """The grid scaled up, under its title and a class name over each column (on two lines if it is too wide)."""
    if grid.width % len(names):
        raise PictureError(f"a fixed-noise grid {grid.width} px wide cannot hold {len(names)} class columns")
    # 256 colours (dithered) before scaling up keep the committed file small at no visible cost.
    grid = grid.quantize(colors=256, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")
    grid = grid.resize((grid.width * SCALE, grid.height * SCALE), Image.NEAREST)
    column = grid.width // len(names)
    labels = [_wrap(name, font, column - 8) for name in names]
    line = FONT_SIZE + 6
    top = line * (1 + max(label.count("\n") + 1 for label in labels)) + 4
    panel = Image.new("RGB", (grid.width, grid.height + top), "white")
    draw = ImageDraw.Draw(panel)
    draw.text((0, 0), title, fill="black", font=font)
    for k, label in enumerate(labels):
        draw.multiline_text((k * column + column // 2, line), label, fill="black", font=font, anchor="ma",
                            align="center", spacing=4)
    panel.paste(grid, (0, top))
    return panel


def make(run: str, out: str = OUT) -> str:
    """Writes the picture of ``run`` (a comparison's workdir) to ``out``; returns ``out``."""
    font = ImageFont.load_default(size=FONT_SIZE)
    panels = [_panel(_read_grid(run, method), title, _class_names(run, method), font) for method, title in PANELS]
    height = max(p.height for p in panels)
    picture = Image.new("RGB", (sum(p.width for p in panels) + GAP * (len(panels) - 1), height), "white")
    x = 0
    for p in panels:
        picture.paste(p, (x, 0))
        x += p.width + GAP
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    picture.save(out, optimize=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the workdir of a demo run (a comparison with datadream and bob)")
    parser.add_argument("--out", default=OUT, help=f"the PNG to write (default {os.path.relpath(OUT)})")
    args = parser.parse_args(argv)
    try:
        path = make(args.run, args.out)
    except PictureError as e:
        print(f"make_pictures: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({os.path.getsize(path) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
