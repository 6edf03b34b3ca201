"""Stanford Cars, few-shot (TFDS cars196)."""

from bobjax import config_lib


def get_config(arg=None):
    return config_lib.fewshot_dataset("cars196", "car", val_size=1960, arg=arg)
