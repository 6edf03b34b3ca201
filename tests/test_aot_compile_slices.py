"""Any slice size: every JAX stage of ``configs/cub.py`` and ``configs/paper.py`` compiled, at the real configs' batch
sizes with tiny models, for slices with more devices than a stage's batch (a v5e-16, -32 and -64, 2 nodes of 8 H100s),
each over the mesh ``bobjax.meshes`` chooses for it; and ``python -m bobjax.aot`` answering a setting that cannot work
in one line, not a traceback.

One subprocess per target (tests/helpers/target_compile.py). CUB's LoRA step on a v5e-16 (the issue's ``IndivisibleError``: a
batch of 8 over 16 devices) runs in the default suite; the whole matrix is ``matrix`` (``--runmatrix``).
"""

import os
import subprocess
import sys

import pytest

from target_compile import REPO, cuda_plugin_missing, run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# The mesh each stage gets, worked out by hand: the LoRA step's batch of 8 on data, the rest on fsdp; the classifier's
# 64 over every device; generation 8 images per device over one host's devices (4 chips a host on a multi-host v5e).
MESHES = {
    "v5e:4x4": {"finetune": (8, 2), "generate": (4, 1), "classify": (16, 1)},
    "v5e:4x8": {"finetune": (8, 4), "generate": (4, 1), "classify": (32, 1)},
    "v5e:8x8": {"finetune": (8, 8), "generate": (4, 1), "classify": (64, 1)},
    "2x8xh100": {"finetune": (8, 2), "generate": (8, 1), "classify": (16, 1)},
}
PROGRAMS = {("finetune", "LoRA step"), ("generate", "sampler call"), ("classify", "prepare"),
            ("classify", "train step"), ("classify", "eval step"), ("quality", "CLIP image encoder")}
CONFIGS = ("configs/cub.py", "configs/paper.py")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tiny_clip import make_tiny_clip
    from tiny_sd import make_tiny_sd

    folder = tmp_path_factory.mktemp("slices")
    return make_tiny_sd(folder / "sd2", "sd2", minimal=True), make_tiny_clip(str(folder / "clip"))


def tiny_models_config(config_file: str, sd: str, clip: str):
    """``config_file``'s config with tiny models at tiny resolutions; its batch sizes and mesh as shipped."""
    from bobjax import config_lib

    config = config_lib.load_config_file(config_file)
    config.model.sd = sd
    config.finetune.resolution = config.generate.resolution = 16
    config.finetune.lora_rank = 2
    config.generate.steps = 2
    config.classify.backbone, config.classify.checkpoint, config.classify.image_size = "clip_vit_b16", clip, 32
    config.quality.encoder = clip
    return config


STAGES = ("finetune", "generate", "classify", "quality")


def _compile_code(sd: str, clip: str, target: str, configs, stages=STAGES) -> str:
    return f"""
import json, sys
from test_aot_compile_slices import tiny_models_config
from bobjax import meshes, targets
from bobjax.aot.compile import compile_stage
devices = targets.get({target!r}).devices
out = []
for config_file in {tuple(configs)!r}:
    config = tiny_models_config(config_file, {sd!r}, {clip!r})
    shapes = {{s: tuple(meshes.stage_mesh(config, s, devices).devices.shape) for s in meshes.MESH_STAGES}}
    batches = {{"finetune": config.finetune.batch_size, "classify": config.classify.batch_size,
               "generate per device": config.generate.batch_size_per_device, "quality": config.quality.batch_size}}
    for stage in {tuple(stages)!r}:
        target, figures = compile_stage(stage, config, {target!r}, log=lambda *a, **k: print(*a, file=sys.stderr))
        out += [{{"config": config_file, "stage": f.stage, "program": f.program, "total": f.total, "flops": f.flops,
                 "devices": len(target.devices), "meshes": shapes, "batches": batches}} for f in figures]
print(json.dumps(out))
"""


def _check(rows, target: str, configs, stages=STAGES) -> None:
    for config_file in configs:
        mine = [r for r in rows if r["config"] == config_file]
        assert {(r["stage"], r["program"]) for r in mine} == {p for p in PROGRAMS if p[0] in stages}, config_file
        assert all(r["total"] > 0 and r["flops"] > 0 for r in mine), mine
        assert {k: tuple(v) for k, v in mine[0]["meshes"].items()} == MESHES[target]
        # The real configs' batch sizes, not the tests' own.
        assert mine[0]["batches"] == {"finetune": 8, "classify": 64, "generate per device": 8, "quality": 64}


@pytest.mark.slow
def test_the_lora_step_of_cub_compiles_for_a_v5e_16(tiny_models):
    """The issue's crash: the LoRA step's batch of 8 over 16 devices (now data 8 x fsdp 2). 4 minutes of compiling
    on a busy 2-core machine; the other stages and slices are the slow tests below."""
    rows = run(_compile_code(*tiny_models, "v5e:4x4", CONFIGS[:1], ("finetune",)), timeout=1200)
    _check(rows, "v5e:4x4", CONFIGS[:1], ("finetune",))


@pytest.mark.matrix
@pytest.mark.parametrize("target", ["v5e:4x4", "v5e:4x8", "v5e:8x8"])
def test_every_stage_of_cub_and_paper_compiles_for_tpu_slices(tiny_models, target):
    rows = run(_compile_code(*tiny_models, target, CONFIGS), timeout=3600)
    _check(rows, target, CONFIGS)


@pytest.mark.matrix
@pytest.mark.skipif(cuda_plugin_missing() is not None, reason=str(cuda_plugin_missing()))
def test_every_stage_of_cub_and_paper_compiles_for_two_nodes_of_eight_h100(tiny_models):
    rows = run(_compile_code(*tiny_models, "2x8xh100", CONFIGS), cuda=True, timeout=3600)
    _check(rows, "2x8xh100", CONFIGS)


def _aot(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "bobjax.aot", "--config=configs/cub.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_aot_answers_a_mesh_that_cannot_hold_a_batch_in_one_line():
    """Every device on data (an explicit config.mesh) cannot hold the LoRA step's batch of 8 on a v5e-16: one line
    naming the stage, batch, device count and setting, before any model is built; and an unknown target alike."""
    proc = _aot("--target=v5e:4x4", "--config.mesh.fsdp=1", "--stages=generate,finetune")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "[aot]" not in proc.stdout
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("bobjax.aot: error:")]
    for part in ("stage finetune", "16 devices", "global batch of 8", "config.finetune.batch_size",
                 "config.mesh.data=-1 and config.mesh.fsdp=-1"):
        assert part in line, line
    proc = _aot("--target=v5e:3x3x3x3")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "bobjax.aot: error: unknown target 'v5e:3x3x3x3'" in proc.stderr
