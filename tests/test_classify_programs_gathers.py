"""The classifier's device programs compiled for a TPU slice hold no gather over image pixels: per-element gathers
are slow on TPUs (the on-device RandAugment's warps counted 2,147 GB per chip per step on a v5e-8), so augmentation
runs on the host and MixUp/CutMix mix by slices, reversal and iota masks.

The tiny ResNet's prepare (BOB's lambda layout and realmix's partners) and train programs compiled for
``v5e:2x2`` in a subprocess (tests/helpers/target_compile.py), the optimized HLO read for gathers whose operand or result
has the image's rows and columns."""

import pytest

from target_compile import run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIZE = 32  # The image side; no other dimension of these programs is 32 (16 rows over 4 chips, 200 classes).

CODE = f"""
import json, re, jax
from bobjax import config_lib
from bobjax.aot import compile as aot_compile, stage_programs

rows = []
for mixing, only in (("lambda", ("prepare", "train step")), ("realmix", ("prepare",))):
    config = config_lib.load_config_file("configs/cub.py")
    config.classify.backbone, config.classify.checkpoint, config.classify.mixing = "resnet_tiny", "random", mixing
    config.classify.image_size, config.classify.batch_size = {SIZE}, 16
    target, mesh = aot_compile.target_and_mesh("v5e:2x2", config, "classify")
    for program in stage_programs.classify(config, mesh):
        if program.name in only:
            with jax.set_mesh(mesh):
                text = program.lower().compile().as_text()
            shapes = dict(re.findall(r"(%[\\w.-]+) = (\\w+\\[[\\d,]*\\])", text))
            gathers = [(result, shapes.get(operand, "?"))
                       for result, operand in re.findall(r"= (\\w+\\[[\\d,]*\\])\\S* gather\\((%[\\w.-]+)", text)]
            rows.append({{"mixing": mixing, "program": program.name, "gathers": gathers}})
print(json.dumps(rows))
"""


def _over_pixels(shape: str) -> bool:
    dims = [int(d) for d in shape[shape.index("[") + 1:-1].split(",") if d]
    return any(a == b == SIZE for a, b in zip(dims, dims[1:]))


@pytest.mark.slow
def test_no_program_gathers_over_image_pixels():
    rows = run(CODE, timeout=1200)
    assert {(r["mixing"], r["program"]) for r in rows} == {
        ("lambda", "prepare"), ("lambda", "train step"), ("realmix", "prepare")}
    assert all(shape != "?" for r in rows for gather in r["gathers"] for shape in gather), rows  # parsed them all
    offending = [(r["mixing"], r["program"], g) for r in rows for g in r["gathers"] if any(map(_over_pixels, g))]
    assert not offending, f"gathers over {SIZE}x{SIZE} pixels: {offending}"
