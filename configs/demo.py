"""The built-in default: the whole BOB pipeline on the toy world, small enough for a laptop CPU.

A spuriously correlated 5-shot train split (each class seen mostly in its own backgrounds) and a
context-balanced test split; oracle captions; LoRA fine-tuning of the shipped toy-world SD prior; a tiny ResNet.
Three methods side by side (real only, DataDream's class-only prompts, BOB), each with `seeds` seeds, and one
report. Args: seeds, seed (the first), method (for a single run: `--config.compare.methods=` and this method),
sweep (1: BOB's protocol on the toy world, each method's classifier learning rate x lambda chosen on the validation
split; the demo's own values come first, so they win ties. Every method fine-tunes and generates once and trains
its classifier four times; real only, which has no lambda, trains two pairs alike), ablation (1: BOB's ablation
table, every method preset side by side: real only, zero-shot, DataDream (neither half), preservation only,
marginalization only, BOB (both), BOB with contexts drawn within the class, and BOB with the shipped list of
toy-world contexts).
"""

from bobjax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, method="bob", seed=0, seeds=1, sweep=False, ablation=False)
    config = config_lib.base_config()
    config.seed = args.seed
    config.compare.methods = "real_only,datadream,bob"
    if args.ablation:
        config.compare.methods = ("real_only,zero_shot,datadream,preservation_only,marginalization_only,bob,"
                                  "bob_within_class,bob_listed_contexts")
    config.compare.seeds = args.seeds
    if args.sweep:
        config.compare.sweep = "classify.learning_rate=3e-3|1e-3;classify.real_weight=0.8|0.5"
    config.data.source = "toyworld"
    config.data.name = "toyworld"
    config.data.descriptor = "bird"
    config.data.shots = 5
    config.data.val_size = 0  # The toy world has its own context-balanced validation split.
    config.data.toyworld.seed = args.seed

    config.caption.method = "oracle"

    config.model.sd = "bobjax:toyworld_prior"  # Shipped inside the package (diffusers folder format).
    config.model.dtype = "float32"

    # 320 steps at 2e-3: a rank-8 LoRA on a small model learns little in a CPU budget at SD's 1e-4. BOB's synthetic
    # class fidelity on seed 0 (toy-world oracle, chance 16.7 %): 43 % after 40 epochs at 1e-3, 50 % at 2e-3,
    # 56 % after 80 epochs at 1e-3, 62.5 % after 80 at 2e-3 (63 % after 120 at 1e-3, but 10 minutes of demo).
    config.finetune.epochs = 80
    config.finetune.learning_rate = 2e-3
    config.finetune.batch_size = 8
    config.finetune.resolution = 64
    config.finetune.warmup_steps = 10
    config.finetune.lora_rank = 8
    config.finetune.lora_alpha = 8.0
    config.finetune.checkpoint_every = 100
    config.finetune.sample_every = 100
    config.finetune.remat = False

    config.generate.images_per_class = 40
    config.generate.steps = 20
    config.generate.resolution = 64
    config.generate.batch_size_per_device = 16  # The demo runs on one CPU device.
    config.generate.contexts_file = "bobjax:toyworld_contexts.tsv"  # For bob_listed_contexts.

    config.classify.backbone = "resnet_tiny"
    config.classify.checkpoint = "random"  # No pretrained tiny ResNet exists: the demo trains it from scratch.
    config.classify.image_size = 64
    config.classify.epochs = 20
    # Every method gets 300 steps: an epoch of BOB's stream (40 synthetic + 40 repeated real images per class) is
    # 15 batches, where 30 real images alone would make one. Fewer steps leave real-only at chance.
    config.classify.steps_per_epoch = 15
    config.classify.batch_size = 32
    config.classify.learning_rate = 3e-3  # From scratch: at 1e-3 even 240 uncorrelated real images stay near chance.
    config.classify.weight_decay = 1e-4
    config.classify.warmup_epochs = 1
    config.classify.randaugment = False
    config.classify.color_augment = False  # Toy classes differ by plumage colour: hue jitter or grayscale erases it.
    return config_lib.apply_method(config, args.method)
