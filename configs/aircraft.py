"""FGVC-Aircraft (variants), few-shot. The archive goes in DATA_DIR/downloads/manual (see bobjax/data/aircraft.py)."""

from bobjax import config_lib


def get_config(arg=None):
    return config_lib.fewshot_dataset("fgvc_aircraft", "aircraft", val_size=1600, arg=arg)
