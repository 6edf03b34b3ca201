"""Two JAX processes give what one gives: the tiny BOB pipeline as 2 processes x 2 host devices against 1 x 4.

The processes run on this CPU as a cluster's hosts would (multihost.py): their own devices, a coordinator, gloo
collectives, one shared workdir. Artifacts are compared with the sharding tests' tolerances: the LoRA to 1e-5,
synthetic images to one uint8 level (float images agree to 1e-5; rounding may land either side), the classifier's
training loss to 1e-3 relative, as the classifier's sharding test (a different batch layout was 2e-2 off; accuracy
on a dozen test images is too coarse to tell) and its accuracy exactly. A host killed mid-stage is restarted with the others and the job finishes as if uninterrupted.
What one machine cannot show: separate file systems per host (here all share one disk), real network
collectives (gloo over loopback), TPU pods' own cluster detection.
"""

import json

import numpy as np
import pytest
from multihost import log, run

from bobjax import artifacts
from bobjax.data.tfds_writer import read_dataset
from bobjax.models import lora

TINY = ("--config=configs/demo.py", "--config.compare.methods=", "--config.data.toyworld.num_classes=3",
        "--config.data.shots=4", "--config.data.toyworld.test_per_class=4", "--config.data.toyworld.val_per_class=2",
        "--config.finetune.epochs=2", "--config.finetune.batch_size=4", "--config.finetune.checkpoint_every=1",
        "--config.generate.images_per_class=2", "--config.generate.steps=2", "--config.generate.batch_size_per_device=1",
        "--config.classify.epochs=2", "--config.classify.steps_per_epoch=2", "--config.classify.batch_size=8")
STAGES = "--config.stages=caption,finetune,generate,classify"


def _lora(workdir):
    return lora.read_diffusers_lora(str(workdir / "finetune" / artifacts.LORA_FILE))


def _train_losses(workdir) -> list[float]:
    """The classifier's logged training losses (host 0's TensorBoard file)."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (workdir / "classify" / "tensorboard").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
    accumulator.Reload()
    return [float(tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors("train/loss")]


def _assert_same_lora(a, b):
    for part in a:
        assert a[part][0].keys() == b[part][0].keys()
        for key, value in a[part][0].items():
            np.testing.assert_allclose(b[part][0][key], value, rtol=1e-5, atol=1e-5, err_msg=f"{part}.{key}")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one")
    codes = run([*TINY, STAGES, f"--workdir={workdir}"], processes=1, devices=4, logs=str(workdir) + ".log")
    assert codes == [0], log(str(workdir) + ".log")[-3000:]
    return workdir


def test_two_processes_make_the_one_process_artifacts(one_process, tmp_path):
    workdir, logs = tmp_path / "two", str(tmp_path / "two.log")
    codes = run([*TINY, STAGES, f"--workdir={workdir}"], processes=2, devices=2, form="explicit", logs=logs)
    assert codes == [0, 0], log(logs, 0)[-3000:] + log(logs, 1)[-3000:]
    assert "as process 1 of 2" in log(logs, 1) and "stage classify: complete" in log(logs, 1)

    _assert_same_lora(_lora(one_process), _lora(workdir))
    one, two = (read_dataset(str(w / "synthetic")) for w in (one_process, workdir))
    assert len(one) == len(two) == 3 * 2
    for i in range(len(one)):
        assert one[i]["image_id"] == two[i]["image_id"] and one[i]["label"] == two[i]["label"]
        assert np.abs(one[i]["image"].astype(int) - two[i]["image"].astype(int)).max() <= 1
    np.testing.assert_allclose(_train_losses(workdir), _train_losses(one_process), rtol=1e-3)
    one, two = (json.loads((w / "classify" / "metrics.json").read_text()) for w in (one_process, workdir))
    assert two["test"]["top1"] == one["test"]["top1"]
    np.testing.assert_allclose(two["validation_history"], one["validation_history"])


def test_a_killed_host_restarted_with_the_others_resumes(one_process, tmp_path):
    """A SLURM job step (JAX detects the cluster from SLURM's variables) loses host 1 after fine-tuning's 3rd
    checkpoint; rerun, both hosts resume from it and the LoRA is the uninterrupted run's."""
    workdir, logs = tmp_path / "killed", str(tmp_path / "killed.log")
    args = [*TINY, "--config.stages=caption,finetune", f"--workdir={workdir}"]
    run(args, processes=2, devices=2, form="slurm", logs=logs, kill_at_save={1: 3})
    assert not (workdir / "finetune" / artifacts.LORA_FILE).exists()

    codes = run(args, processes=2, devices=2, form="slurm", logs=logs)
    assert codes == [0, 0], log(logs, 0)[-3000:] + log(logs, 1)[-3000:]
    assert "as process 1 of 2" in log(logs, 1)
    assert "finetune: resumed" in log(logs, 0) and "finetune: resumed" in log(logs, 1)
    _assert_same_lora(_lora(one_process), _lora(workdir))
