"""A real run on 16 devices gives the 8-device run's results: the tiny BOB pipeline (caption, finetune, generate,
classify) on 16 forced CPU devices, where the fine-tuning batch of 8 now runs over data 8 x fsdp 2, against 8 devices
(data 8). Both in subprocesses (the test process has 8 devices). Tolerances as tests/test_main_multihost.py's: the LoRA to
1e-5, synthetic images to one uint8 level, the classifier's training loss to 1e-3 relative and its accuracy exactly.
Two whole runs: marker matrix, by hand."""

import json

import numpy as np
import pytest
from multihost import TINY, log, run
from test_main_multihost import STAGES, _assert_same_lora, _lora, _train_losses

from bobjax.data.tfds_writer import read_dataset

# Batches both device counts allow: fine-tuning 8 (data 8 on both), the classifier 16 (data 8 and 16).
ARGS = (*TINY, "--config.finetune.batch_size=8", "--config.classify.batch_size=16", STAGES)


@pytest.mark.matrix
def test_sixteen_devices_give_the_eight_device_results(tmp_path):
    workdirs = {}
    for devices in (8, 16):
        workdir, logs = tmp_path / f"d{devices}", str(tmp_path / f"d{devices}.log")
        codes = run([*ARGS, f"--workdir={workdir}"], processes=1, devices=devices, logs=logs, timeout=1800)
        assert codes == [0], log(logs)[-3000:]
        workdirs[devices] = workdir
    eight, sixteen = workdirs[8], workdirs[16]
    _assert_same_lora(_lora(eight), _lora(sixteen))
    one, two = (read_dataset(str(w / "synthetic")) for w in (eight, sixteen))
    assert len(one) == len(two) > 0
    for i in range(len(one)):
        assert one[i]["image_id"] == two[i]["image_id"]
        assert np.abs(one[i]["image"].astype(int) - two[i]["image"].astype(int)).max() <= 1
    np.testing.assert_allclose(_train_losses(sixteen), _train_losses(eight), rtol=1e-3)
    a, b = (json.loads((w / "classify" / "metrics.json").read_text()) for w in (eight, sixteen))
    assert a["test"]["top1"] == b["test"]["top1"]
