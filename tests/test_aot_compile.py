"""``bobjax.aot``: the stages' steps compiled for TPU slices and NVIDIA cards from this CPU, on abstract weights, and
the memory column's response to what should move it.

Tiny models in the real architectures (tests/helpers/tiny_sd.py, tests/helpers/tiny_clip.py, ``resnet_tiny``) on
CUB's config; the TPU and NVIDIA compiles run in a subprocess (tests/helpers/target_compile.py) so libtpu's start-up
stays out of this one.
"""

import pytest

from target_compile import cuda_plugin_missing, run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tiny_clip import make_tiny_clip
    from tiny_sd import make_tiny_sd

    folder = tmp_path_factory.mktemp("aot")
    return make_tiny_sd(folder / "sd2", "sd2", minimal=True), make_tiny_clip(str(folder / "clip"))


def tiny_config(sd: str, clip: str, backbone: str = "clip_vit_b16"):
    """CUB's config with tiny models and sizes; everything else (mesh, dtypes, remat, 200 classes) as shipped."""
    from bobjax import config_lib

    config = config_lib.load_config_file("configs/cub.py")
    config.model.sd = sd
    config.finetune.resolution = config.generate.resolution = 16
    config.finetune.lora_rank = 2
    config.generate.steps = 2
    config.classify.backbone, config.classify.checkpoint = backbone, clip if backbone == "clip_vit_b16" else "random"
    config.classify.image_size, config.classify.batch_size = 32, 16
    config.quality.encoder = clip
    return config


def _compile_code(sd: str, clip: str, programs: list[tuple[str, str, str, int]]) -> str:
    """Code for the subprocess: compile ``(target, stage, backbone, batch)`` (of the classifier, the train step only:
    its augmentation program has no model in it), print their rows as JSON."""
    return f"""
import dataclasses, json, sys
from test_aot_compile import tiny_config
from bobjax.aot.compile import compile_stage
rows = []
for target_name, stage, backbone, batch in {programs!r}:
    config = tiny_config({sd!r}, {clip!r}, backbone)
    config.finetune.batch_size = config.classify.batch_size = batch
    config.generate.batch_size_per_device = 1
    target, figures = compile_stage(stage, config, target_name, log=lambda *a, **k: print(*a, file=sys.stderr),
                                    only=None if stage != "classify" else ("train step",))
    rows += [dataclasses.asdict(f) | {{"target": target_name, "total": f.total, "hosts": target.num_hosts,
                                      "kind": target.devices[0].device_kind}} for f in figures]
print(json.dumps(rows))
"""


@pytest.fixture(scope="module")
def tpu_rows(tiny_models) -> dict:
    """target -> its rows, from one subprocess for both TPU targets (libtpu and the imports start once): on a v5e
    the LoRA step, a sampler call and CLIP's train step; on a multi-host v4 a ResNet's train step. The multi-host LoRA
    step is test_aot_compile_slices' (a v5e-16, 4 hosts)."""
    rows = run(_compile_code(*tiny_models, [("v5e:2x2", "finetune", "", 8), ("v5e:2x2", "generate", "", 8),
                                            ("v5e:2x2", "classify", "clip_vit_b16", 8),
                                            ("v4:2x2x2", "classify", "resnet_tiny", 16)]), timeout=1800)
    return {target: [r for r in rows if r["target"] == target] for target in ("v5e:2x2", "v4:2x2x2")}


def _by_program(rows) -> dict:
    return {(r["stage"], r["program"]): r for r in rows}


def _check_compiled(rows, kind: str) -> None:
    for r in rows:
        assert r["kind"] == kind
        assert r["total"] > 0 and r["flops"] > 0, r
        # A training step or sampler call reads weights and writes results or holds activations (a tiny LoRA step on
        # a TPU may fit in its aliased outputs with no temporaries).
        assert r["arguments"] > 0 and r["outputs"] + r["temporaries"] > 0, r


@pytest.mark.slow
def test_v5e_compiles_the_tiny_sd_and_clip_steps(tpu_rows):
    rows = tpu_rows["v5e:2x2"]
    programs = _by_program(rows)
    assert set(programs) == {("finetune", "LoRA step"), ("generate", "sampler call"), ("classify", "train step")}
    _check_compiled(rows, "TPU v5 lite")
    # The sampler's loop body is counted steps - 1 more times (XLA counts a loop body once): 3 PNDM steps here.
    assert programs[("generate", "sampler call")]["flops"] > programs[("finetune", "LoRA step")]["flops"] / 10
    # CLIP's towers traced their attention calls for the TPU.
    assert programs[("classify", "train step")]["attention"]["calls"]


@pytest.mark.slow
def test_multi_host_v4_compiles_the_tiny_resnet_step(tpu_rows):
    rows = tpu_rows["v4:2x2x2"]
    assert rows and {r["hosts"] for r in rows} == {2}
    _check_compiled(rows, "TPU v4")
    assert _by_program(rows)[("classify", "train step")]["attention"]["summary"] == "none"  # a ResNet


@pytest.mark.skipif(cuda_plugin_missing() is not None, reason=str(cuda_plugin_missing()))
def test_h100_compiles_the_tiny_lora_step(tiny_models):
    rows = run(_compile_code(*tiny_models, [("h100", "finetune", "", 8)]), cuda=True, timeout=900)
    _check_compiled(rows, "NVIDIA H100 80GB HBM3")


def _cpu_figures(config, stage="finetune"):
    from bobjax.aot.compile import compile_stage

    return compile_stage(stage, config, "cpu", log=lambda *a, **k: None)[1][0]


@pytest.mark.slow
def test_doubling_the_batch_raises_the_temporaries(tiny_models):
    config = tiny_config(*tiny_models)
    config.generate.batch_size_per_device = 1  # 8 images a call over the test's eight devices.
    small = _cpu_figures(config, "generate")
    config.generate.batch_size_per_device = 2
    large = _cpu_figures(config, "generate")
    assert large.temporaries > 1.5 * small.temporaries, (small, large)
    assert large.flops > 1.8 * small.flops
    assert large.arguments - small.arguments < 0.1 * small.arguments  # The weights do not grow.


@pytest.mark.slow
def test_fsdp_over_the_slice_divides_the_frozen_weights(tiny_models):
    """8 devices: the frozen UNet, VAE and text encoder replicated (fsdp=1) or split 8 ways (fsdp=8)."""
    from bobjax.aot import abstract

    config = tiny_config(*tiny_models)
    config.finetune.text_encoder_lora = False
    config.finetune.batch_size = 8
    replicated = _cpu_figures(config)
    config.mesh.data, config.mesh.fsdp = 1, 8
    sharded = _cpu_figures(config)
    sd = abstract.AbstractSD(abstract.sd_configs(config.model.sd), dtype="bfloat16", attention="xla", remat=True)
    from flax import nnx

    frozen = sum(x.size * x.dtype.itemsize for m in (sd.unet, sd.vae, sd.text_encoder)
                 for x in jax_leaves(nnx.state(m)))
    saved = replicated.arguments - sharded.arguments
    # Every frozen byte but the few parameters too small to split (biases of 4 channels, ...) leaves 7 of 8 devices.
    assert 0.8 * frozen * 7 / 8 < saved <= frozen * 7 / 8, (frozen, replicated.arguments, sharded.arguments)


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_arithmetic_flops_count_every_matmul_and_convolution():
    """The FLOPs column: what the program computes, which a compiled NVIDIA module hides in library calls."""
    import jax
    import jax.numpy as jnp

    from bobjax.aot import compiled_figures

    def program(x, w, image, kernel):
        conv = jax.lax.conv_general_dilated(image, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return x @ w, conv

    spec = jax.ShapeDtypeStruct
    lowered = jax.jit(program).lower(spec((64, 512), jnp.bfloat16), spec((512, 256), jnp.bfloat16),
                                     spec((2, 16, 16, 8), jnp.float32), spec((3, 3, 8, 16), jnp.float32))
    expected = 2 * 64 * 512 * 256 + 2 * (2 * 16 * 16 * 16) * (3 * 3 * 8)
    assert compiled_figures.arithmetic_flops(lowered) == pytest.approx(expected, rel=0.01)




def _compile_grid(config, log=lambda line, **_: None):
    from bobjax.aot.compile import compile_stage

    return compile_stage("classify", config, "cpu", log=log,
                         only=("train step", "packed train step", "packed eval step"))[1]


@pytest.fixture(scope="module")
def grid_of_four():
    """A grid of 4 points that differ only in learning rate and weight decay (one pack), with its compiled lone train
    step and packed steps. The classifier alone: no SD or CLIP is built, so torch is not imported (torch importing
    triton segfaulted in a worker that had run tests/test_classify_packed.py first; cause not looked into)."""
    config = tiny_config("no SD: the classify stage alone", "no CLIP", backbone="resnet_tiny")
    config.compare.methods = "bob"
    config.compare.sweep = "classify.learning_rate=1e-4|1e-5;classify.weight_decay=5e-4|1e-4"
    return config, _compile_grid(config)


def test_a_packed_grid_compiles_its_points_in_one_program(grid_of_four):
    _, (lone, train, evaluate) = grid_of_four
    assert [(f.program, f.points) for f in (lone, train, evaluate)] == [
        ("train step", 1), ("packed train step", 4), ("packed eval step", 4)]
    assert 3 * lone.flops < train.flops < 5 * lone.flops, (lone.flops, train.flops)
    assert train.arguments > lone.arguments  # Four points' parameters and AdamW state; the frozen weights once.


def test_a_pack_too_large_for_the_device_is_compiled_halved(grid_of_four, monkeypatch):
    """As the stage halves a pack that does not fit with headroom: 4 points would fill 95 % of the device (tight: a
    user's config would only be warned, a pack's size is bobjax's choice), 2 fit."""
    from bobjax.aot import compiled_figures

    config, (_, train, _) = grid_of_four
    monkeypatch.setattr(compiled_figures, "usable_bytes", lambda target: train.total / 0.95)
    logged = []
    halved = _compile_grid(config, log=lambda line, **_: logged.append(line))[1:]
    assert [(f.program, f.points) for f in halved] == [("packed train step", 2), ("packed eval step", 2)]
    assert halved[0].total < train.total
    assert any("a pack of 4 points does not fit with 10% left" in line for line in logged)


def test_a_pack_is_sized_by_its_train_step_when_only_its_eval_step_is_asked_for(grid_of_four, monkeypatch):
    """The evaluation step of 4 points is far smaller than the train step that does not fit: the pack is still
    halved, as the stage would run it."""
    from bobjax.aot import compiled_figures
    from bobjax.aot.compile import compile_stage

    config, (_, train, _) = grid_of_four
    monkeypatch.setattr(compiled_figures, "usable_bytes", lambda target: train.total / 0.95)
    _, only_eval = compile_stage("classify", config, "cpu", log=lambda *a, **k: None, only=("packed eval step",))
    assert [(f.program, f.points) for f in only_eval] == [("packed eval step", 2)]
