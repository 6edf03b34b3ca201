"""CUB-LT: long-tailed CUB; class c gets 200 - n_c * 6 synthetic images. Args: imbalance (0.01/0.05/0.1), ..."""

from bobjax import config_lib
from bobjax.data import paper_datasets


def get_config(arg=None):
    args = config_lib.parse_arg(arg, imbalance=0.01, method="bob", sd="sd21", seed=0)
    d = paper_datasets.DATASETS["cub"]
    config = config_lib.fewshot_dataset(
        d.tfds_name, d.descriptor, val_size=d.validation, arg=f"method={args.method},sd={args.sd},seed={args.seed}",
        shots=0,
    )
    config.data.imbalance = args.imbalance
    config.generate.long_tail_total = 200
    config.generate.long_tail_m = 6
    return config
