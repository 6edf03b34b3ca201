"""bobjax/report/paper_results.json, the paper's numbers as data: its structure, and spot values checked against the
text they were transcribed from.

Sources: the abstract of arXiv:2510.24078 ("BOB outperforms DataDream by 7.4% on the Aircraft dataset
(from 50.0% to 57.4% when fine-tuning a CLIP classifier with five real images augmented with 100 synthetic images)"),
and the paper's main few-shot table (5 real + 100 synthetic per class, SD 2.1) and its ablation (Aircraft 10-shot,
RN50), as collected from the authors' released code and summaries of the paper (docs/paper.md).
"""

import numpy as np

from bobjax import config_lib
from bobjax.report import paper

PAPER_ONLY = {"preservation only", "marginalization only", "100 LLM-invented contexts"}  # Ablation rows, no preset.


def entry(table, dataset, backbone, shots, method):
    found = [e for e in paper.published()["results"] if (e["table"], e["dataset"], e["backbone"], e["shots"],
                                                         e["method"]) == (table, dataset, backbone, shots, method)]
    assert len(found) == 1, (table, dataset, backbone, shots, method)
    return found[0]["top1"]


def test_structure():
    data = paper.published()
    assert data["paper"] and data["source"]
    keys = [(e["table"], e["dataset"], e["backbone"], e["shots"], e["method"]) for e in data["results"]]
    assert len(set(keys)) == len(keys)
    for e in data["results"]:
        assert set(e) == {"table", "dataset", "backbone", "shots", "method", "top1", "std"}
        assert e["table"] in data["tables"] and e["dataset"] in paper.DATASETS and e["backbone"] in paper.BACKBONES
        assert e["shots"] in (5, 10) and 0 < e["top1"] < 100 and e["std"] is None
        assert e["method"] in config_lib.METHODS or e["method"] in PAPER_ONLY, e["method"]
    main = [k for k in keys if k[0] == "main"]
    # The paper's main table: 4 datasets x (CLIP: real only, DataDream, BOB; RN50 and MAE: DataDream, BOB), at 5 shots.
    assert len(main) == 4 * 7 and {k[3] for k in main} == {5}
    assert {k[1] for k in main} == set(paper.DATASETS) and {k[2] for k in main} == set(paper.BACKBONES)


def test_each_printed_average_is_the_mean_of_its_row():
    """The table's 'avg' column was transcribed separately: a mistyped accuracy shows as an average that disagrees."""
    for average in paper.published()["averages"]:
        row = [entry(average["table"], d, average["backbone"], average["shots"], average["method"])
               for d in paper.DATASETS]
        assert abs(np.mean(row) - average["top1"]) <= 0.005 + 1e-9, average


def test_the_abstracts_numbers():
    assert round(entry("main", "aircraft", "clip", 5, "datadream"), 1) == 50.0
    assert round(entry("main", "aircraft", "clip", 5, "bob"), 1) == 57.4


def test_spot_values_of_bob_spec():
    assert entry("main", "cub", "clip", 5, "bob") == 75.43
    assert entry("main", "pets", "clip", 5, "real_only") == 92.76
    assert entry("main", "cars", "rn50", 5, "datadream") == 86.15
    assert entry("main", "pets", "mae", 5, "bob") == 86.72
    assert entry("ablation", "aircraft", "rn50", 10, "bob") == 73.78
    assert entry("ablation", "aircraft", "rn50", 10, "bob_within_class") == 64.38


def test_the_reports_ablation_table_reads_every_row_from_the_json():
    """One copy of the paper's numbers: each row of the report's ablation table names an entry of the JSON."""
    from bobjax.report import ablation

    for _, _, paper_method in ablation.ROWS:
        assert entry("ablation", "aircraft", "rn50", 10, paper_method) > 0
