"""Oxford-IIIT Pets, few-shot."""

from bobjax import config_lib


def get_config(arg=None):
    return config_lib.fewshot_dataset("oxford_iiit_pet", "pet", val_size=592, arg=arg)
