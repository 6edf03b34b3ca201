"""LoRA adapters against peft on twin torch/NNX models, and the diffusers LoRA file format."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model_state_dict, inject_adapter_in_model

from bobjax.models import lora, lora_file, weights

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


class TwinNNX(nnx.Module):
    """Linear layers named like diffusers' attention, plus one (proj) that must stay without adapter."""

    def __init__(self, d: int, rngs: nnx.Rngs):
        self.to_q = nnx.Linear(d, d, use_bias=False, rngs=rngs)
        self.to_k = nnx.Linear(d, d, use_bias=False, rngs=rngs)
        self.to_v = nnx.Linear(d, 2 * d, rngs=rngs)
        self.to_out = nnx.List([nnx.Linear(2 * d, d, rngs=rngs)])
        self.proj = nnx.Linear(d, d, rngs=rngs)

    def __call__(self, x):
        h = jnp.tanh(self.to_q(x) * self.to_k(x))
        return self.to_out[0](self.to_v(h)) + self.proj(x)


class TwinTorch(torch.nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.to_q = torch.nn.Linear(d, d, bias=False)
        self.to_k = torch.nn.Linear(d, d, bias=False)
        self.to_v = torch.nn.Linear(d, 2 * d)
        self.to_out = torch.nn.ModuleList([torch.nn.Linear(2 * d, d)])
        self.proj = torch.nn.Linear(d, d)

    def forward(self, x):
        h = torch.tanh(self.to_q(x) * self.to_k(x))
        return self.to_out[0](self.to_v(h)) + self.proj(x)


def _twins(d=16, rank=4, alpha=8.0, init="gaussian"):
    torch.manual_seed(0)
    ref = TwinTorch(d)
    base = {k: v.numpy().copy() for k, v in ref.state_dict().items()}
    ref = inject_adapter_in_model(
        PeftLoraConfig(r=rank, lora_alpha=alpha, target_modules=list(TARGETS),
                       init_lora_weights=init if init == "gaussian" else True), ref)
    with torch.no_grad():  # B is zero after init; give it values so the adapters matter.
        for name, p in ref.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    model = TwinNNX(d, nnx.Rngs(0))
    weights.load_state_dict(model, base)
    config = lora.LoraConfig(rank=rank, alpha=alpha, targets=TARGETS, init=init)
    model = lora.add_lora(model, config, jnp.zeros((1, d)), rngs=nnx.Rngs(1))
    peft_sd = {k: v.numpy() for k, v in get_peft_model_state_dict(ref).items()}
    lora.load_lora_state_dict(model, peft_sd, source="peft")
    return ref, model, config


def test_adapters_sit_on_the_targets_only_with_peft_names():
    _, model, _ = _twins()
    keys = set(lora.lora_state_dict(model))
    expected = {f"{t}.lora_{ab}.weight" for t in TARGETS for ab in "AB"}
    assert keys == expected


def test_forward_and_lora_gradients_match_peft():
    ref, model, _ = _twins()
    x = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)

    xt = torch.from_numpy(x)
    out_ref = ref(xt)
    (out_ref ** 2).sum().backward()
    grads_ref = {k.replace(".default", ""): p.grad.numpy() for k, p in ref.named_parameters() if "lora_" in k}

    graphdef, params, rest = nnx.split(model, nnx.LoRAParam, ...)

    def loss(params):
        m = nnx.merge(graphdef, params, rest)
        return (m(jnp.asarray(x)) ** 2).sum()

    grads = nnx.merge(graphdef, jax.grad(loss)(params), rest)
    np.testing.assert_allclose(model(jnp.asarray(x)), out_ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    ours = lora.lora_state_dict(grads)
    assert set(ours) == set(grads_ref)
    for key, g in grads_ref.items():
        np.testing.assert_allclose(ours[key], g, rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("init", ["gaussian", "default"])
def test_init_distribution_matches_peft(init):
    """Same distribution as peft's init: A's std within 5% of peft's on a 512-wide layer, B exactly zero."""
    d, rank = 512, 8
    ref = inject_adapter_in_model(PeftLoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q"],
                                                 init_lora_weights=init if init == "gaussian" else True),
                                  TwinTorch(d))
    model = lora.add_lora(TwinNNX(d, nnx.Rngs(0)), lora.LoraConfig(rank=rank, alpha=rank, targets=("to_q",), init=init),
                          jnp.zeros((1, d)), rngs=nnx.Rngs(3))
    ours = lora.lora_state_dict(model)
    a_ref = ref.to_q.lora_A["default"].weight.detach().numpy()
    assert ours["to_q.lora_A.weight"].shape == a_ref.shape
    assert abs(ours["to_q.lora_A.weight"].std() / a_ref.std() - 1) < 0.05
    assert abs(np.abs(ours["to_q.lora_A.weight"]).max() / np.abs(a_ref).max() - 1) < (0.05 if init == "default" else 0.5)
    assert not ours["to_q.lora_B.weight"].any() and not ref.to_q.lora_B["default"].weight.detach().numpy().any()


def test_merge_keeps_the_function():
    _, model, config = _twins()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16)), jnp.float32)
    before = model(x)
    lora.merge_lora(model, config)
    np.testing.assert_allclose(model(x), before, rtol=1e-5, atol=1e-5)
    assert not lora.lora_state_dict(model)["to_q.lora_B.weight"].any()


def test_dropout_follows_the_key():
    d = 16
    model = lora.add_lora(TwinNNX(d, nnx.Rngs(0)), lora.LoraConfig(rank=4, alpha=4, targets=TARGETS, dropout=0.5),
                          jnp.zeros((1, d)), rngs=nnx.Rngs(1))
    lora.load_lora_state_dict(model, {k: np.ones_like(v) for k, v in lora.lora_state_dict(model).items()}, source="t")
    x = jnp.ones((2, d))
    outs = []
    for seed in (0, 0, 1):
        lora.set_dropout_rng(model, jax.random.key(seed))
        outs.append(np.asarray(model(x)))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0] - outs[2]).max() > 1e-3


def test_file_round_trip_and_header_that_diffusers_and_peft_read(tmp_path):
    from diffusers.utils.state_dict_utils import _load_sft_state_dict_metadata

    _, model, config = _twins()
    path = str(tmp_path / "pytorch_lora_weights.safetensors")
    lora_file.save_diffusers_lora(path, {"unet": (model, config)})
    meta = _load_sft_state_dict_metadata(path)  # diffusers' own reader of the header.
    peft_config = PeftLoraConfig(**{k.removeprefix("unet."): v for k, v in meta.items()})
    assert (peft_config.r, peft_config.lora_alpha, peft_config.init_lora_weights) == (4, 8.0, "gaussian")
    assert peft_config.target_modules == set(TARGETS)

    parts = lora_file.read_diffusers_lora(path)
    state, read_config = parts["unet"]
    assert read_config == config
    for key, value in lora.lora_state_dict(model).items():
        np.testing.assert_array_equal(state[key], value)


def test_bad_files_and_state_dicts_name_the_problem(tmp_path):
    _, model, _ = _twins()
    state = lora.lora_state_dict(model)
    state.pop("to_q.lora_A.weight")
    state["to_x.lora_A.weight"] = np.zeros((4, 16), np.float32)
    with pytest.raises(lora.LoraFormatError, match=r"missing \(1\): to_q.lora_A.weight.*\n.*unexpected \(1\): to_x"):
        lora.load_lora_state_dict(model, state, source="f.safetensors")
    with pytest.raises(ValueError, match="match no module"):
        lora.add_lora(TwinNNX(8, nnx.Rngs(0)), lora.LoraConfig(rank=2, alpha=2, targets=("q_proj",)),
                      jnp.zeros((1, 8)), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unsupported LoRA init 'pissa'"):
        lora.LoraConfig(rank=2, alpha=2, targets=TARGETS, init="pissa")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(lora.LoraFormatError, match="bad.safetensors"):
        lora_file.read_diffusers_lora(str(bad))
