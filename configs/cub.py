"""CUB-200-2011, few-shot (BOB's defaults). Args: method, shots, sd, seed, e.g. configs/cub.py:shots=10."""

from bobjax import config_lib


def get_config(arg=None):
    return config_lib.fewshot_dataset("caltech_birds2011", "bird", val_size=2000, arg=arg)
