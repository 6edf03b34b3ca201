"""Real images: sources (TFDS, image folder, toy world) and few-shot / long-tail selections."""

from bobjax.data.fewshot import Splits, Subset, make_splits
from bobjax.data.sources import DataError, Source, load_source

__all__ = ["DataError", "Source", "Splits", "Subset", "load_source", "make_splits"]
