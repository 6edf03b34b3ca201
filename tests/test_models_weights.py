"""The one naming/layout convention that every checkpoint import relies on, against torch modules."""

import numpy as np
import pytest
import torch
from flax import nnx

from bobjax.models import weights


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, 8)
        self.to_out = torch.nn.ModuleList([torch.nn.Linear(8, 5), torch.nn.Dropout(0.0)])

    def forward(self, x):  # NCHW
        h = self.norm(self.conv(x)).mean(dim=(2, 3))
        return self.to_out[0](h)


class FlaxNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 8, (3, 3), padding=1, rngs=rngs)
        self.norm = nnx.GroupNorm(8, num_groups=2, epsilon=1e-5, rngs=rngs)
        self.to_out = nnx.List([nnx.Linear(8, 5, rngs=rngs), nnx.Dropout(0.0)])

    def __call__(self, x):  # NHWC
        h = self.norm(self.conv(x)).mean(axis=(1, 2))
        return self.to_out[0](h)


def test_load_matches_torch_forward():
    torch.manual_seed(0)
    ref = TorchNet().eval()
    ours = FlaxNet(nnx.Rngs(0))
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    weights.load_state_dict(ours, state)
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 6)).astype(np.float32)
    expected = ref(torch.from_numpy(x)).detach().numpy()
    got = np.asarray(ours(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_export_round_trips():
    ours = FlaxNet(nnx.Rngs(1))
    exported = weights.export_state_dict(ours)
    ref = TorchNet()
    ref.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in exported.items()})
    other = FlaxNet(nnx.Rngs(2))
    weights.load_state_dict(other, {k: v.numpy() for k, v in ref.state_dict().items()})
    np.testing.assert_array_equal(np.asarray(other.conv.kernel[...]), np.asarray(ours.conv.kernel[...]))


def test_mismatch_lists_every_bad_key():
    state = {k: v.numpy() for k, v in TorchNet().state_dict().items()}
    del state["norm.bias"]
    state["extra.weight"] = np.zeros(3, np.float32)
    state["to_out.0.weight"] = np.zeros((4, 8), np.float32)
    with pytest.raises(weights.CheckpointMismatchError) as info:
        weights.load_state_dict(FlaxNet(nnx.Rngs(0)), state, source="net.safetensors")
    message = str(info.value)
    assert "norm.bias" in message and "extra.weight" in message and "to_out.0.weight" in message
    assert "net.safetensors" in message


def test_rename_maps_prefixed_keys():
    state = {"text_model." + k: v.numpy() for k, v in TorchNet().state_dict().items()}
    weights.load_state_dict(FlaxNet(nnx.Rngs(0)), state, rename=lambda k: k.removeprefix("text_model."))


def test_read_state_dict_safetensors_and_bin(tmp_path):
    from safetensors.torch import save_file

    sd = TorchNet().state_dict()
    save_file(dict(sd), tmp_path / "a.safetensors")
    torch.save(sd, tmp_path / "a.bin")
    a = weights.read_state_dict(tmp_path / "a.safetensors")
    b = weights.read_state_dict(tmp_path / "a.bin")
    assert set(a) == set(b) == set(sd)
    np.testing.assert_array_equal(a["conv.weight"], b["conv.weight"])
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        weights.read_state_dict(tmp_path / "missing.safetensors")
