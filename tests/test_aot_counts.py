"""How often a run calls each compiled program (bobjax.aot.counts), and the bound of a whole comparison
(bobjax.aot.cell), against the arithmetic of CUB's defaults done by hand."""

from bobjax import config_lib
from bobjax.aot import cell, counts


def test_cub_defaults_call_each_program_as_the_stages_would():
    config = config_lib.load_config_file("configs/cub.py")
    data = counts.dataset(config)
    assert counts.lora_steps(config, data) == 400 * 125  # 400 epochs of 1,000 images (5 shots x 200) in batches of 8
    # 20,000 images in 78 shards of 256 and one of 32, each cut into calls of 8 (8 per device on one device), of 64
    # on a v5e-8; on a v5e-16 (4 hosts of 4 chips, calls of 32) host 0 draws shards 0, 4, ..., 76: 20 full ones.
    assert counts.generation_calls(config, data, 8) == (20_000, 78 * 32 + 4)
    assert counts.generation_calls(config, data, 64) == (20_000, 78 * 4 + 1)
    assert counts.generation_calls(config, data, 32, hosts=4) == (20_000, 20 * 8)
    # Lambda mixing: each real image repeated 100 // 5 = 20 times beside the 20,000 synthetic ones, batches of 64;
    # a validation pass (2,000 images) per epoch and one test pass (5,794).
    assert counts.classifier_steps(config, data) == (100 * 625, 100 * 32 + 91)


def test_the_long_tail_counts_follow_the_imbalance():
    config = config_lib.load_config_file("configs/cub_lt.py")
    data = counts.dataset(config)
    real = counts.train_counts(config, data)
    assert real[0] == 30 and real[-1] == 1 and len(real) == 200  # n_max 30 down to 30 * 0.01, at least 1
    assert counts.synthetic_counts(config, data)[0] == 200 - 30 * 6


def test_a_paper_cell_counts_every_method_seed_and_point_once_and_shares_generation():
    config = config_lib.load_config_file("configs/paper.py", "dataset=cub,backbone=clip")
    programs = [("finetune", "LoRA step"), ("generate", "sampler call"), ("classify", "prepare"),
                ("classify", "train step"), ("classify", "eval step")]
    rows = [{"stage": s, "program": p, "bound_s": 1.0} for s, p in programs]
    bound = cell.cell_bound(config, rows)
    points = 4 * 2 * 2  # CLIP's grid: learning rate x weight decay x lambda
    per_seed = (2 * 50_000 + 2 * 2_500  # DataDream's and BOB's LoRA and generation, once per seed
                + 2 * points * 2 * 62_500  # their classifiers: prepare + train step per point
                + points * 2 * 100 * 16  # real only: 1,000 real images a epoch, 16 steps
                + 3 * points * 3_291)  # every run's evaluation
    assert bound["runs"] == 3 * 3 * points
    assert bound["seconds"] == 3 * per_seed
    assert not bound["missing"]
    assert cell.cell_bound(config, rows[2:])["missing"] == ["finetune LoRA step", "generate sampler call"]
