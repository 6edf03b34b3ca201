"""The classify stage on the toy world: it learns (test accuracy above chance, by a binomial bound), writes
metrics.json and TensorBoard logs, and refuses a mixing scheme whose synthetic data is missing."""

import json
import os

import pytest
from scipy import stats

from bobjax import classify
from bobjax.errors import UserError
from demo_run import demo_config


@pytest.mark.slow
def test_real_only_learns_above_chance(tmp_path, one_device):
    # A context-free toy world (one background) so that the birds' details are what there is to learn; at 32 px (a
    # quarter of the demo's pixels to train on), where the plumage still tells the classes.
    config = demo_config(**{"classify.mixing": "real_only", "data.shots": 0, "classify.epochs": 6,
                            "classify.learning_rate": 3e-3, "classify.augment": False, "classify.mix_prob": 0.0,
                            "data.toyworld.correlated": False, "data.toyworld.num_backgrounds": 1,
                            "data.toyworld.image_size": 32, "classify.image_size": 32})
    result = classify.run(config, str(tmp_path))
    print("test top-1", result["test"]["top1"], "best epoch", result["best_epoch"])
    with open(tmp_path / "classify" / "metrics.json") as f:
        written = json.load(f)
    assert written["test"]["top1"] == result["test"]["top1"]
    num_classes, n_test = 6, 6 * config.data.toyworld.test_per_class
    chance_high = stats.binom.ppf(0.999, n_test, 1 / num_classes) / n_test * 100
    assert result["test"]["top1"] > chance_high, f"test top-1 {result['test']['top1']:.1f}% vs chance bound {chance_high:.1f}%"
    assert len(result["validation_history"]) == 6 and 1 <= result["best_epoch"] <= 6
    assert len(result["test"]["per_class"]) == num_classes
    assert "buckets" not in result["test"]  # Not a long-tail run.
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "classify" / "tensorboard"))


def test_lambda_mixing_without_synthetic_data_is_a_clear_error(tmp_path):
    config = demo_config(**{"classify.mixing": "lambda"})
    with pytest.raises(UserError, match="synthetic"):
        classify.run(config, str(tmp_path))
