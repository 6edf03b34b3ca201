"""Every TFDS dataset the configs name, with its own builder's features, label names and id feature, read as a
prepared ArrayRecord dataset (tests/helpers/tfds_builders.py) by the stages that read data, each under the dataset's own
config with its real-guided preset (DataDream's LoRA, sampling started from real train images), 1 shot of every
class of the builder. All five go through what each stage reads (seconds each); CUB, the builder with the most
features, goes through every stage with tiny models (``bobjax.main.run``): compiling those takes ~30 s a dataset
(each dataset's class count and step count change the compiled programs), too much to repeat five times in CI.

Before issue 30 CUB's classes were called '0' to '199' (its builder's labels are unnamed; the names are in its
``label_name`` feature), and the segmentation masks of CUB and Pets were decoded on every read of an example.
"""

import json
import os

import numpy as np
import pytest
import tfds_builders
from tiny_sd import make_tiny_sd

from bobjax import artifacts, config_lib, main, run_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Per dataset: its config, and the first class names the run must use (the builder's, cleaned for prompts).
DATASETS = {
    "caltech_birds2011": ("cub.py", ["black footed albatross", "laysan albatross"]),
    "cars196": ("cars.py", ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]),
    "oxford_iiit_pet": ("pets.py", ["Abyssinian", "american bulldog"]),
    "oxford_flowers102": ("flowers_lt.py", ["pink primrose", "hard-leaved pocket orchid"]),
    "fgvc_aircraft": ("aircraft.py", ["707-320", "727-200"]),
}
PER_CLASS = {"train": 1, "validation": 1, "test": 1}


@pytest.fixture(scope="module")
def tiny_sd_path(tmp_path_factory):
    return str(make_tiny_sd(tmp_path_factory.mktemp("sd") / "sd1", "sd1", minimal=True))


def tiny_run(config_file: str, data_dir: str, sd: str):
    """The dataset's config with its real-guided preset, shrunk to tiny models and one step or image where it can."""
    config = config_lib.load_config_file(os.path.join(ROOT, "configs", config_file), "method=real_guided")
    config.data.update(dict(data_dir=data_dir, val_size=0))
    if config.data.imbalance:  # Flowers-LT: the long tail of its test split, which holds one image a class here.
        config.generate.long_tail_total = 0
    else:
        config.data.shots = 1
    config.model.update(dict(sd=sd, dtype="float32"))
    config.finetune.update(dict(epochs=1, batch_size=32, resolution=16, warmup_steps=0, sample_every=0,
                                lora_rank=2, lora_alpha=2.0, remat=False))
    config.generate.update(dict(images_per_class=1, steps=2, resolution=16, batch_size=64))
    config.classify.update(dict(backbone="resnet_tiny", checkpoint="random", image_size=16, epochs=1,
                                steps_per_epoch=1, batch_size=16, warmup_epochs=0, randaugment=False))
    config.quality.metrics = False
    return config


def prepare(name: str, data_dir: str) -> int:
    if name == "fgvc_aircraft":
        return tfds_builders.prepare_aircraft(data_dir, PER_CLASS)
    return tfds_builders.prepare(name, data_dir, PER_CLASS)


@pytest.fixture
def decoded(monkeypatch):
    """The shapes of every Image feature TFDS decodes (bobjax decodes the real photos itself)."""
    import tensorflow_datasets as tfds

    shapes = []
    decode = tfds.features.Image.decode_example_np
    monkeypatch.setattr(tfds.features.Image, "decode_example_np",
                        lambda self, example, **kw: shapes.append(self.shape) or decode(self, example, **kw))
    return shapes


def check_splits(workdir, name: str, num_classes: int) -> dict:
    splits = json.loads((workdir / "splits.json").read_text())
    assert splits["dataset"] == name and splits["class_names"][:2] == DATASETS[name][1]
    assert len(splits["class_names"]) == num_classes and len(set(splits["class_names"])) == num_classes
    assert len(splits["train"]) == num_classes and len(splits["test"]) == num_classes
    assert all(i.endswith(".jpg") for i in splits["train"] + splits["test"])  # The builder's id feature.
    return splits


@pytest.mark.parametrize("name", list(DATASETS))
def test_each_builders_dataset_through_what_each_stage_reads(name, tiny_sd_path, tmp_path, decoded):
    """What each stage reads of the data, without its model: the split (labels, ids, names), fine-tuning's prompts
    and batches, the plan and its real-guided start images, the classifier's real + synthetic batches and test
    batches, and the report's real images and per-class tables."""
    from synthetic_data import write_synthetic

    from bobjax import report
    from bobjax.classify import input as classify_input
    from bobjax.data import make_splits
    from bobjax.data.tfds_writer import read_dataset
    from bobjax.finetune.input import finetune_batches, training_prompts
    from bobjax.generate import stage as generate
    from bobjax.generate.inputs import SamplerInputs

    num_classes = prepare(name, str(tmp_path / "data"))
    config = tiny_run(DATASETS[name][0], str(tmp_path / "data"), tiny_sd_path)
    workdir = tmp_path / "run"
    main.prepare_workdir(config, str(workdir))
    names = check_splits(workdir, name, num_classes)["class_names"]
    splits = make_splits(config.data, config.seed)

    labels = splits.train.labels()
    prompts = training_prompts(config.finetune.prompt, splits.descriptor, [names[k] for k in labels],
                               splits.train.image_ids(), None)
    assert prompts[0] == f"a {splits.descriptor} photo of a {names[labels[0]]}"
    batch = next(finetune_batches(lambda i: splits.train[i]["image"], np.zeros((len(labels), 4), np.int32),
                                  resolution=16, random_flip=False, seed=0, batch_size=8))
    assert batch["pixels"].shape == (8, 16, 16, 3)

    _, planned = generate.plan_run(config, str(workdir))
    assert len(planned) == num_classes and all(labels[p.source_index] == p.label for p in planned)
    start = SamplerInputs(splits.train, 16, real_guided=True, mixed=False)(planned[:4])
    assert start["images"].shape == (4, 16, 16, 3) and names[1] in start["prompts"][1]

    rng = np.random.default_rng(0)
    write_synthetic(str(workdir), names, rng.integers(0, 256, (num_classes, 16, 16, 3), dtype=np.uint8),
                    np.arange(num_classes))
    synthetic = classify_input.LabelledSource(read_dataset(run_folder.stage_dir(str(workdir), "generate")),
                                              np.arange(num_classes))
    train_input = classify_input.TrainInput(config.classify, splits.train, synthetic, config.seed, 16)
    batch = next(train_input.batches(0))
    assert batch["image"].shape == (16, 16, 16, 3) and batch["synthetic"].sum() == 8
    seen = [label for batch, valid in classify_input.eval_batches(splits.test, 16, 16) for label in batch["label"][:valid]]
    assert sorted(seen) == sorted(splits.test.labels().tolist())
    assert set(decoded) <= {(None, None, 3)}, "a segmentation mask (or another image feature) was decoded"

    per_class = rng.uniform(0, 100, num_classes).tolist()
    artifacts.write_json(run_folder.stage_dir(str(workdir), "classify") / "metrics.json",
                         {"class_names": names, "validation_top1": None, "test": {"top1": 50.0, "per_class": per_class}})
    report.run(config, str(workdir))
    out = run_folder.stage_dir(str(workdir), "report")
    assert (out / "images" / "real.png").exists() and (out / "classes.html").exists() == (num_classes > 12)


@pytest.mark.slow  # 200 classes through every stage (~30 s of compiling alone); CI runs it after the suite
def test_cub_through_every_stage_that_reads_data_with_tiny_models(tiny_sd_path, tmp_path, decoded, one_device):
    """CUB (the builder with the most features: boxes, masks, unnamed labels with a label-name feature) through
    ``bobjax.main.run``: fine-tuning, real-guided generation, the classifier and the report, every one of the 200
    classes, one step or image each where it can."""
    name = "caltech_birds2011"
    num_classes = prepare(name, str(tmp_path / "data"))
    config = tiny_run(DATASETS[name][0], str(tmp_path / "data"), tiny_sd_path)
    workdir = tmp_path / "run"

    main.run(config, str(workdir))

    splits = check_splits(workdir, name, num_classes)
    assert set(decoded) <= {(None, None, 3)}, "a segmentation mask (or another image feature) was decoded"
    from bobjax.data.tfds_writer import read_dataset

    images = read_dataset(run_folder.stage_dir(str(workdir), "generate"))
    assert len(images) == num_classes and images[0]["image"].shape == (16, 16, 3)
    assert images[0]["source_label"] == images[0]["label"] == 0  # Started from a train image of its own class.
    assert "laysan albatross" in images[1]["prompt"].decode()
    metrics = artifacts.read_json(run_folder.stage_dir(str(workdir), "classify") / "metrics.json")
    assert metrics["class_names"] == splits["class_names"] and len(metrics["test"]["per_class"]) == num_classes
    report = run_folder.stage_dir(str(workdir), "report")
    assert np.isclose(artifacts.read_json(report / "results.json")[config.method]["top1"], metrics["test"]["top1"])
    assert (report / "classes.html").exists()
