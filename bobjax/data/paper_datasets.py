"""The BOB paper's datasets, one registry: each one's TFDS name, its object kind (the prompts' ``{descriptor}``), its
published split sizes, and the validation images held out of its train split. The configs, the report's paper table
and ``bobjax.aot``'s counts all read it, so a size is written once.

Sources: the validation counts are the BOB authors' released code's (held out of the train split: CUB 2000, Aircraft
1600, Pets 592, Cars 1960); the split sizes are TFDS's: caltech_birds2011 (train 5,994: at most 30 a class; test
5,794), fgvc_aircraft variants (trainval 6,667: 66-67 a class; test 3,333), cars196 (train 8,144: at most 68; test
8,041), oxford_iiit_pet (train 3,680: at most 100; test 3,669), oxford_flowers102 (Flowers-LT trains from TFDS's test
split, 6,149 images, at most 238 a class, and tests on its train split, 1,020).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PaperDataset:
    name: str  # The paper's short name.
    tfds_name: str
    descriptor: str
    classes: int
    train_per_class: int  # The largest class of the split the run trains from (the long tail's n_max).
    test: int  # Images of the split the classifier is tested on (and the quality metrics' reference).
    validation: int  # Images held out of the train split for choosing on validation (0: TFDS's own validation split).
    main_table: bool  # In the paper's few-shot table (the others are its long-tail datasets).


DATASETS = {d.name: d for d in (
    PaperDataset("aircraft", "fgvc_aircraft", "aircraft", 100, 67, 3333, 1600, True),
    PaperDataset("cars", "cars196", "car", 196, 68, 8041, 1960, True),
    PaperDataset("cub", "caltech_birds2011", "bird", 200, 30, 5794, 2000, True),
    PaperDataset("pets", "oxford_iiit_pet", "pet", 37, 100, 3669, 592, True),
    PaperDataset("flowers", "oxford_flowers102", "flower", 102, 238, 1020, 0, False),
)}
BY_TFDS_NAME = {d.tfds_name: d for d in DATASETS.values()}
