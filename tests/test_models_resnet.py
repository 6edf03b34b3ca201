"""ResNet parity with timm on random weights (fp32, 1e-4 relative) and the timm checkpoint import."""

import jax
import numpy as np
import pytest
import timm
import torch
from flax import nnx

from bobjax.models import resnet, weights
from timm_reference import randomize, relative_error, state_dict_numpy


def _compare(name: str, image_size: int, num_classes: int = 10):
    reference = randomize(timm.create_model(name, pretrained=False, num_classes=num_classes))
    model = resnet.resnet(name, num_classes, rngs=nnx.Rngs(0))
    resnet.load_timm_resnet(model, state_dict_numpy(reference), new_head=False)
    model.eval()
    x = np.random.default_rng(0).normal(size=(2, image_size, image_size, 3)).astype(np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    got = np.asarray(model(x))
    assert relative_error(got, want) < 1e-4


@pytest.mark.parametrize("name", ["resnet18", "resnet26"])
def test_matches_timm_in_eval_mode(name):
    _compare(name, 64)


@pytest.mark.fullsize
def test_resnet50_matches_timm():
    _compare("resnet50", 224, num_classes=1000)


def test_train_mode_batch_norm_matches_timm():
    reference = randomize(timm.create_model("resnet18", pretrained=False, num_classes=5)).train()
    model = resnet.resnet("resnet18", 5, rngs=nnx.Rngs(0))
    resnet.load_timm_resnet(model, state_dict_numpy(reference), new_head=False)
    model.train()
    x = np.random.default_rng(1).normal(size=(4, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert relative_error(model(x), want) < 1e-4
    # Running means follow torch's update (momentum 0.1); torch's running var uses the unbiased estimate.
    want_mean = reference.state_dict()["layer1.0.bn1.running_mean"].numpy()
    np.testing.assert_allclose(model.layer1[0].bn1.mean[...], want_mean, rtol=1e-4, atol=1e-5)


def test_gradients_match_timm():
    """The backward pass too: 1x1 convolutions run as matmuls and residuals go through ``materialize``.

    Eval-mode BatchNorm: in train mode the batch statistics of 4 images at 64 px make the last stages' gradients
    ill-conditioned (1e-3..2e-2 apart from timm's whether or not those rewrites are on); here they agree to 1e-6."""
    reference = randomize(timm.create_model("resnet26", pretrained=False, num_classes=5))
    model = resnet.resnet("resnet26", 5, rngs=nnx.Rngs(0))
    resnet.load_timm_resnet(model, state_dict_numpy(reference), new_head=False)
    model.eval()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 64, 64, 3)).astype(np.float32)
    weight = rng.normal(size=(4, 5)).astype(np.float32)
    (reference(torch.from_numpy(x).permute(0, 3, 1, 2)) * torch.from_numpy(weight)).sum().backward()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    # One jitted gradient: XLA compiles the whole backward pass once instead of each of its ops one by one.
    grads = jax.jit(jax.grad(lambda p: (nnx.merge(graphdef, p, rest, copy=True)(x) * weight).sum()))(params)
    for ours, theirs in [(grads["conv1"]["kernel"], reference.conv1),  # stem 7x7
                         (grads["layer1"][0]["conv1"]["kernel"], reference.layer1[0].conv1),  # 1x1
                         (grads["layer1"][0]["conv2"]["kernel"], reference.layer1[0].conv2),  # 3x3
                         (grads["layer2"][0]["downsample"][0]["kernel"], reference.layer2[0].downsample[0]),  # 1x1/2
                         (grads["layer4"][0]["conv1"]["kernel"], reference.layer4[0].conv1)]:
        assert relative_error(ours[...], theirs.weight.grad.numpy().transpose(2, 3, 1, 0)) < 1e-5


def test_new_head_keeps_backbone_and_replaces_fc():
    reference = randomize(timm.create_model("resnet18", pretrained=False, num_classes=1000))
    model = resnet.resnet("resnet18", 7, rngs=nnx.Rngs(0))
    head_before = np.asarray(model.fc.kernel[...]).copy()
    resnet.load_timm_resnet(model, state_dict_numpy(reference), new_head=True)
    np.testing.assert_array_equal(model.fc.kernel[...], head_before)
    np.testing.assert_array_equal(model.conv1.kernel[...], reference.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.layer2[0].downsample[1].var[...],
                                  reference.layer2[0].downsample[1].running_var.numpy())


def test_export_round_trips_through_timm():
    model = resnet.resnet("resnet18", 3, rngs=nnx.Rngs(1))
    exported = weights.export_state_dict(model)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=3)
    missing, unexpected = reference.load_state_dict({k: torch.tensor(v) for k, v in exported.items()}, strict=False)
    assert unexpected == []
    assert all("running_" in k or "num_batches_tracked" in k for k in missing)


def test_wrong_checkpoint_names_the_keys():
    reference = timm.create_model("resnet26", pretrained=False, num_classes=3)
    model = resnet.resnet("resnet18", 3, rngs=nnx.Rngs(0))
    with pytest.raises(weights.CheckpointMismatchError, match="layer1.0.conv3.weight"):
        resnet.load_timm_resnet(model, state_dict_numpy(reference), new_head=False)


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ValueError, match="resnet_tiny"):
        resnet.resnet("resnet9000", 3, rngs=nnx.Rngs(0))
