"""CUB-200-2011, few-shot (BOB's defaults). Args: method, shots, sd, seed, e.g. configs/cub.py:shots=10."""

from bobjax import config_lib
from bobjax.data import paper_datasets


def get_config(arg=None):
    d = paper_datasets.DATASETS["cub"]
    return config_lib.fewshot_dataset(d.tfds_name, d.descriptor, val_size=d.validation, arg=arg)
