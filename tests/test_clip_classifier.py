"""CLIP classifier parity with transformers' CLIPModel on random weights (fp32, 1e-4 relative): image and
text embeddings and the logits, through the transformers checkpoint layout (save_pretrained -> our loader)."""

import jax
import numpy as np
import pytest
import torch
from fake_hub import CLIP_ID
from flax import nnx
from tiny_clip import EOS, tiny_clip_model

from bobjax.models import clip, weights


def _prompt_ids(n=3, length=16):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 1000, size=(n, length))
    ids[:, 0] = EOS - 1
    for row, end in enumerate(rng.integers(3, length, size=n)):
        ids[row, end:] = EOS  # EOS, then EOS as padding (CLIP's tokenizer pads with it)
    return ids


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model = tiny_clip_model()
    folder = tmp_path_factory.mktemp("clip")
    model.save_pretrained(folder)
    return model, str(folder)


def test_matches_transformers(reference):
    model_t, folder = reference
    ids = _prompt_ids()
    model = clip.CLIPClassifier(clip.read_config(folder), ids, 32, rngs=nnx.Rngs(0))
    clip.load_clip_weights(model, weights.read_state_dict(f"{folder}/model.safetensors"), source=folder)
    images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        out = model_t(input_ids=torch.tensor(ids), pixel_values=torch.tensor(images).permute(0, 3, 1, 2))
    for ours, theirs in [(model.image_embeds(images), out.image_embeds), (model.text_embeds(ids), out.text_embeds),
                         (model(images), out.logits_per_image)]:
        theirs = theirs.numpy()
        assert np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max() < 1e-4


def test_other_image_size_resizes_position_embeddings(reference):
    _, folder = reference
    model = clip.CLIPClassifier(clip.read_config(folder), _prompt_ids(), 48, rngs=nnx.Rngs(0))
    clip.load_clip_weights(model, weights.read_state_dict(f"{folder}/model.safetensors"), source=folder)
    assert model.vision_model.embeddings.position_embedding.embedding[...].shape == (37, 48)
    assert np.isfinite(np.asarray(model(np.zeros((1, 48, 48, 3), np.float32)))).all()


def test_stage_trains_only_the_lora_adapters(fake_hub, tmp_path, one_device):
    """With the default checkpoint: the tiny CLIP the fake hub serves as openai/clip-vit-base-patch16."""
    from bobjax import classify
    from classify_run import saved_state, small_config

    fake_hub.add(CLIP_ID)
    config = small_config(**{"classify.backbone": "clip_vit_b16", "classify.checkpoint": "default",
                             "classify.epochs": 1, "classify.learning_rate": 1e-3, "classify.lora_rank": 4,
                             "classify.lora_alpha": 8.0})
    result = classify.run(config, str(tmp_path))
    assert len(result["test"]["per_class"]) == 6
    params = jax.tree_util.tree_leaves_with_path(saved_state(str(tmp_path))["params"])
    names = {jax.tree_util.keystr(path) for path, _ in params}
    # Adapters on q_proj and v_proj of both towers (2 layers each): A and B per module, nothing else trained.
    assert len(names) == 2 * 2 * 2 * 2 and all("kernel_lora_" in n for n in names)
    assert sum("vision_model" in n and "q_proj" in n for n in names) == 4
    b_matrices = [leaf for path, leaf in params if "kernel_lora_b" in jax.tree_util.keystr(path)]
    assert all(np.abs(b).max() > 0 for b in b_matrices)  # B starts at zero; training moved it.
