"""Oxford-IIIT Pets, few-shot."""

from bobjax import config_lib
from bobjax.data import paper_datasets


def get_config(arg=None):
    d = paper_datasets.DATASETS["pets"]
    return config_lib.fewshot_dataset(d.tfds_name, d.descriptor, val_size=d.validation, arg=arg)
