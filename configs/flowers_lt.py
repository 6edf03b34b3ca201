"""Flowers-LT: long-tailed Oxford Flowers-102; class c gets 200 - n_c * 5 synthetic images.

TFDS's Flowers-102 train split has only 10 images a class, so the long tail is drawn from its large test split
(6,149 images); the classifier is validated on TFDS's validation split and tested on its train split (1,020).
"""

from bobjax import config_lib
from bobjax.data import paper_datasets


def get_config(arg=None):
    args = config_lib.parse_arg(arg, imbalance=0.01, method="bob", sd="sd21", seed=0)
    d = paper_datasets.DATASETS["flowers"]
    config = config_lib.fewshot_dataset(
        d.tfds_name, d.descriptor, val_size=d.validation, arg=f"method={args.method},sd={args.sd},seed={args.seed}",
        shots=0, train_split="test", test_split="train",
    )
    config.data.imbalance = args.imbalance
    config.generate.long_tail_total = 200
    config.generate.long_tail_m = 5
    return config
