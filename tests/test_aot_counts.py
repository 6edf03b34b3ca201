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


PROGRAMS = [("finetune", "LoRA step"), ("generate", "sampler call"), ("classify", "prepare"),
            ("classify", "train step"), ("classify", "eval step")]
ROWS = [{"stage": s, "program": p, "bound_s": 1.0} for s, p in PROGRAMS]  # One second a call: the bound counts calls.


def test_a_paper_cell_counts_short_points_and_one_full_run_per_method_and_seed_and_shares_generation():
    """The paper's protocol: every point 10 epochs, then the chosen one 100 (docs/paper.md: "100 epochs (10 in sweeps)")."""
    config = config_lib.load_config_file("configs/paper.py", "dataset=cub,backbone=clip")
    bound = cell.cell_bound(config, ROWS)
    points = 4 * 2 * 2  # CLIP's grid: learning rate x weight decay x lambda
    per_seed = (2 * 50_000 + 2 * 2_500  # DataDream's and BOB's LoRA and generation, once per seed
                + 2 * (points * 2 * 10 * 625 + 2 * 100 * 625)  # their classifiers: prepare + train step, 625 a epoch
                + points * 2 * 10 * 16 + 2 * 100 * 16  # real only: 1,000 real images a epoch, 16 steps
                # every run's evaluation: a validation pass (32 calls) per epoch and a test pass (91)
                + 3 * (points * (10 * 32 + 91) + 100 * 32 + 91))
    assert bound["runs"] == 3 * 3 * (points + 1)
    assert bound["seconds"] == 3 * per_seed
    assert not bound["missing"]
    assert cell.cell_bound(config, ROWS[2:])["missing"] == ["finetune LoRA step", "generate sampler call"]


def test_the_full_length_grid_counts_every_point_at_100_epochs_and_no_final_run():
    config = config_lib.load_config_file("configs/paper.py", "dataset=cub,backbone=clip")
    config.compare.sweep_epochs = 0
    bound = cell.cell_bound(config, ROWS)
    points = 4 * 2 * 2
    per_seed = (2 * 50_000 + 2 * 2_500 + 2 * points * 2 * 62_500 + points * 2 * 100 * 16 + 3 * points * 3_291)
    assert bound["runs"] == 3 * 3 * points
    assert bound["seconds"] == 3 * per_seed


def test_the_two_phases_cut_the_rn50_cells_classifier_work_about_six_fold():
    """RN50's grid has 18 points: 18 x 10 + 100 = 280 epochs per method and seed against 18 x 100 = 1,800."""
    config = config_lib.load_config_file("configs/paper.py", "dataset=cub,backbone=rn50")
    rows = [r for r in ROWS if r["stage"] == "classify" and r["program"] == "train step"]
    short = cell.cell_bound(config, rows)["seconds"]
    config.compare.sweep_epochs = 0
    full = cell.cell_bound(config, rows)["seconds"]
    assert full / short == 1800 / 280


PACKED = [{"stage": "classify", "program": p, "bound_s": 1.0, "points": 8}
          for p in ("packed train step", "packed eval step")]


def test_packed_points_count_once_per_pack_of_the_compiled_size():
    """CLIP's 16 points per method and seed in packs of 8 (what the compile found fits): two packs, each one prepare,
    one packed train step and one packed evaluation per call of a lone run; the final runs train alone."""
    config = config_lib.load_config_file("configs/paper.py", "dataset=cub,backbone=clip")
    bound = cell.cell_bound(config, ROWS + PACKED)
    lone = lambda steps, evals: 2 * steps + evals  # noqa: E731  prepare + train step per step, and evaluations
    per_seed = (2 * 50_000 + 2 * 2_500
                + 2 * (2 * lone(10 * 625, 10 * 32 + 91) + lone(100 * 625, 100 * 32 + 91))  # DataDream, BOB
                + 2 * lone(10 * 16, 10 * 32 + 91) + lone(100 * 16, 100 * 32 + 91))  # real only
    assert bound["seconds"] == 3 * per_seed
    assert (bound["runs"], bound["packs"]) == (3 * 3 * 17, 3 * 3 * 2)
    assert not bound["missing"]
    # RN50's 18 points in packs of 8: 8, 8 and 2, the last counted as a whole pack.
    rn50 = config_lib.load_config_file("configs/paper.py", "dataset=cub,backbone=rn50")
    assert cell.cell_bound(rn50, ROWS + PACKED)["packs"] == 3 * 3 * 3


def test_without_packing_or_packed_rows_points_count_as_lone_runs():
    config = config_lib.load_config_file("configs/paper.py", "dataset=cub,backbone=clip")
    lone = cell.cell_bound(config, ROWS)
    config.compare.pack_points = False
    assert cell.cell_bound(config, ROWS + PACKED) == lone
    assert lone["packs"] == 0


def test_the_pack_size_is_the_largest_group_of_points_that_differ_only_in_packed_fields():
    from bobjax.aot import stage_programs

    clip = config_lib.load_config_file("configs/paper.py", "dataset=cub,backbone=clip")
    assert stage_programs.pack_size(clip) == 4 * 2 * 2
    assert stage_programs.pack_size(config_lib.load_config_file("configs/paper.py", "dataset=cub,backbone=rn50")) == 18
    assert stage_programs.pack_size(config_lib.load_config_file("configs/cub.py")) == 0  # one run, no sweep
    clip.compare.sweep += ";classify.mix_prob=0.5|1.0"  # reaches the input: not a packed field
    assert stage_programs.pack_size(clip) == 16
    clip.compare.pack_points = False
    assert stage_programs.pack_size(clip) == 0
