"""The filter stage between generate and classify: each rule keeps what it says, the keep list records every image
with its score, the classifier trains on the kept images only, and the stage runs only when a rule is set."""

import json

import numpy as np
import pytest
from demo_run import demo_config
from synthetic_data import write_synthetic
from toy_oracle import shared_oracle  # noqa: F401  (a fixture)

from bobjax import artifacts, compare, config_lib, filter, identity, share, toyworld
from bobjax.classify import stage as classify_stage
from bobjax.data import make_splits
from bobjax.errors import ConfigError
from bobjax.filter import keep_list, rules


def _cfg(**values):
    cfg = config_lib.base_config().filter
    cfg.update(values)
    return cfg


LABELS = np.array([0, 0, 0, 1, 1, 1])
# Image i's zero-shot logits: images 2 and 5 look like the other class.
LOGITS = np.array([[3.0, 0], [2, 0], [0, 1], [0, 3], [0, 2], [1, 0]])
FEATURES = np.array([[1.0, 0.1], [1, 0.5], [0.2, 1], [0.1, 1], [0.6, 1], [1, 0.2]])
REAL, REAL_LABELS = np.array([[1.0, 0], [1, 0.2], [0, 1], [0.2, 1]]), np.array([0, 0, 1, 1])


def test_zero_shot_keeps_the_images_the_classifier_names_as_their_class():
    decision = rules.decide(_cfg(rule="zero_shot"), LABELS, FEATURES, LOGITS, REAL, REAL_LABELS, None)
    assert decision.kept.tolist() == [True, True, False, True, True, False]
    np.testing.assert_allclose(decision.scores["score"][:2], [np.exp(3) / (np.exp(3) + 1), np.exp(2) / (np.exp(2) + 1)])
    assert "DISEF" in decision.rule


def test_top_k_keeps_the_k_most_probable_of_each_class():
    decision = rules.decide(_cfg(rule="top_k", top_k=2), LABELS, FEATURES, LOGITS, REAL, REAL_LABELS, None)
    assert decision.kept.tolist() == [True, True, False, True, True, False]
    decision = rules.decide(_cfg(rule="top_k", top_k=5), LABELS, FEATURES, LOGITS, REAL, REAL_LABELS, None)
    assert decision.kept.all()


def test_cosine_compares_with_the_class_real_images_and_text():
    decision = rules.decide(_cfg(rule="cosine", real_threshold=0.8), LABELS, FEATURES, LOGITS, REAL, REAL_LABELS, None)
    real = REAL / np.linalg.norm(REAL, axis=1, keepdims=True)
    centres = np.stack([real[:2].mean(0), real[2:].mean(0)])
    expected = np.sum(FEATURES / np.linalg.norm(FEATURES, axis=1, keepdims=True) * centres[LABELS], axis=1)
    np.testing.assert_allclose(decision.scores["score"], expected)
    assert decision.kept.tolist() == (expected >= 0.8).tolist() == [True, True, False, True, True, False]
    text = np.array([[1.0, 0.0], [0.0, 2.0]])  # Class prompts along the axes (normalised by the rule).
    both = rules.decide(_cfg(rule="cosine", real_threshold=0.8, text_threshold=0.9), LABELS, FEATURES, LOGITS, REAL,
                        REAL_LABELS, text)
    # Images 1 and 4 lean too far from their prompt's axis (cosine 0.89 and 0.86).
    assert both.kept.tolist() == [True, False, False, True, False, False] and "class prompt" in both.rule
    np.testing.assert_allclose(both.scores["text_score"][[1, 4]], [1 / np.sqrt(1.25), 1 / np.sqrt(1.36)])


@pytest.mark.parametrize("values, named", [
    (dict(rule="clip"), "config.filter.rule='clip'"),
    (dict(rule="cosine", real_threshold=1.5), "config.filter.real_threshold=1.5"),
    (dict(rule="top_k", top_k=0), "config.filter.top_k=0"),
    (dict(rule="cosine", text_threshold=0.2), "config.filter.text_threshold=0.2 needs an encoder with a text tower"),
])
def test_bad_filter_configs_name_the_field(values, named):
    with pytest.raises(ConfigError) as error:
        rules.decide(_cfg(**values), LABELS, FEATURES, LOGITS, REAL, REAL_LABELS, None)
    assert named in str(error.value)


def test_the_stage_runs_only_with_a_rule_and_shares_like_generate():
    config = demo_config()
    assert "filter" not in config_lib.run_stages(config)  # BOB keeps every image.
    config.filter.rule = "zero_shot"
    assert config_lib.run_stages(config) == ["caption", "finetune", "generate", "filter", "classify", "report"]
    dd = compare.run_config(demo_config(**{"filter.rule": "zero_shot"}), "datadream", 0, compare.sweep.Point("", {}))
    assert config_lib.run_stages(dd) == ["finetune", "generate", "filter", "classify"]
    other = demo_config(**{"filter.rule": "top_k"})
    assert share.key(config, "generate") == share.key(other, "generate")  # One synthetic set for both rules...
    assert share.key(config, "filter") != share.key(other, "filter")  # ... filtered twice,
    assert identity.of(config, "classify")["filter"]["rule"] == "zero_shot"  # and classified apart.


@pytest.mark.slow
def test_toy_world_filter_drops_mislabelled_images_and_the_classifier_trains_on_the_rest(tmp_path, shared_oracle):
    """The oracle's feature space (no download): of 24 correct and 24 mislabelled synthetic images, zero_shot keeps the
    first; the keep list names every image, and classify's synthetic source holds exactly the kept ones."""
    config = demo_config(**{"data.toyworld.num_classes": 3, "data.toyworld.image_size": 32,
                            "data.toyworld.test_per_class": 20, "report.oracle_steps": 60,
                            "report.oracle_per_class": 40, "filter.rule": "zero_shot", "quality.batch_size": 16})
    workdir = str(tmp_path)
    class_names = make_splits(config.data, config.seed).class_names
    drawn = toyworld.ToyWorldSplit(toyworld.ToyWorldSpec(num_classes=3, image_size=32, seed=5, correlated=False,
                                                         train_per_class=8), "train")
    images, labels = drawn.images(), drawn.labels()
    wrong = (labels + 1) % 3
    write_synthetic(workdir, class_names, np.concatenate([images, images]), np.concatenate([labels, wrong]))

    out = filter.run(config, workdir)

    saved = json.loads(keep_list.path(workdir).read_text())
    assert saved == out and len(saved["images"]) == 48 and saved["kept"] + saved["dropped"] == 48
    assert "toy-world oracle" in saved["encoder"] and saved["filter"]["rule"] == "zero_shot"
    kept = np.array([e["kept"] for e in saved["images"]])
    assert kept[:24].mean() >= 0.8 and kept[24:].mean() <= 0.15
    assert [e["image_id"] for e in saved["images"]] == [f"s{i}" for i in range(48)]
    assert all(0 <= e["score"] <= 1 for e in saved["images"])
    assert sum(c["kept"] for c in saved["per_class"].values()) == saved["kept"]

    source = classify_stage._synthetic(config, workdir)
    assert len(source) == saved["kept"]
    np.testing.assert_array_equal(source.labels(), np.concatenate([labels, wrong])[kept])
    assert source[0]["image_id"].decode() == saved["images"][int(np.flatnonzero(kept)[0])]["image_id"]

    config.filter.rule = "none"  # Off: every generated image, keep list or not.
    assert len(classify_stage._synthetic(config, workdir)) == 48


def test_a_filter_that_keeps_nothing_is_a_named_error(tmp_path):
    config = demo_config(**{"filter.rule": "cosine"})
    workdir = str(tmp_path)
    class_names = make_splits(config.data, config.seed).class_names
    write_synthetic(workdir, class_names, np.zeros((2, 8, 8, 3), np.uint8), [0, 1])
    artifacts.write_json(keep_list.path(workdir), {"images": [{"index": i, "kept": False} for i in range(2)]})
    with pytest.raises(ConfigError, match="config.filter.rule='cosine' kept none of the 2 synthetic images"):
        classify_stage._synthetic(config, workdir)


def test_a_filter_fetches_its_clip_before_the_first_stage_and_the_toy_world_nothing():
    from bobjax import pretrained

    config = config_lib.base_config()
    config.filter.rule = "zero_shot"
    assert pretrained._needed(config, "filter")[0] == ("quality.encoder", "openai/clip-vit-base-patch16")
    config.filter.rule = "none"  # The stage does not run.
    assert pretrained._needed(config, "filter") is None
    assert pretrained._needed(demo_config(**{"filter.rule": "zero_shot"}), "filter") is None  # The oracle.
