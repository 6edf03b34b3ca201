"""ViT parity with timm on random weights (fp32, 1e-4 relative): supervised (class token) and MAE (average
pool + fc_norm) layouts, the import of each checkpoint layout, and position-embedding resizing."""

import numpy as np
import pytest
import timm
import torch
from flax import nnx
from timm.layers import resample_abs_pos_embed

from bobjax.models import vit
from timm_reference import randomize, relative_error, state_dict_numpy

TINY = dict(token=vit.ViTSpec(192, 12, 3), avg=vit.ViTSpec(192, 12, 3, global_pool="avg"))


def _forward(reference, x):
    with torch.no_grad():
        return reference(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_matches_timm(pool):
    reference = randomize(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=64,
                                            global_pool=pool))
    model = vit.VisionTransformer(TINY[pool], 10, 64, rngs=nnx.Rngs(0))
    vit.load_timm_vit(model, state_dict_numpy(reference), new_head=False)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    assert relative_error(model(x), _forward(reference, x)) < 1e-4


@pytest.mark.fullsize
def test_vit_b16_matches_timm():
    reference = randomize(timm.create_model("vit_base_patch16_224", pretrained=False))
    model = vit.vit("vit_b16", 1000, 224, rngs=nnx.Rngs(0))
    vit.load_timm_vit(model, state_dict_numpy(reference), new_head=False)
    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
    assert relative_error(model(x), _forward(reference, x)) < 1e-4


def test_mae_pretraining_checkpoint_loads_into_the_fine_tuning_layout():
    # timm's MAE weights: no head (num_classes=0), class-token layout with a final ``norm``.
    pretrained = randomize(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64))
    model = vit.VisionTransformer(TINY["avg"], 5, 64, rngs=nnx.Rngs(0))
    vit.load_timm_vit(model, state_dict_numpy(pretrained), new_head=True)
    # Reference: timm's average-pool model holding the same weights, the final LayerNorm as fc_norm.
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=64, global_pool="avg")
    state = {k.replace("norm.", "fc_norm.") if k.startswith("norm.") else k: v for k, v in pretrained.state_dict().items()}
    state["head.weight"] = torch.tensor(np.asarray(model.head.kernel[...]).T.copy())
    state["head.bias"] = torch.tensor(np.asarray(model.head.bias[...]).copy())
    reference.load_state_dict(state)
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
    assert relative_error(model.features(x), reference.eval().forward_head(
        reference.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2)), pre_logits=True).detach().numpy()) < 1e-4


@pytest.mark.parametrize("size", [32, 96])
def test_position_embeddings_resize_like_timm(size):
    checkpoint = randomize(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=64))
    model = vit.VisionTransformer(TINY["token"], 3, size, rngs=nnx.Rngs(0))
    vit.load_timm_vit(model, state_dict_numpy(checkpoint), new_head=False)
    grid = size // 16
    want = resample_abs_pos_embed(checkpoint.pos_embed.detach(), (grid, grid), num_prefix_tokens=1).numpy()
    assert relative_error(model.pos_embed[...], want) < 1e-4


def test_image_size_must_fit_the_patches():
    with pytest.raises(ValueError, match="image_size=70"):
        vit.vit("vit_b16", 3, 70, rngs=nnx.Rngs(0))
