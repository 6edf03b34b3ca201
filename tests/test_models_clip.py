"""CLIP classifier parity with transformers' CLIPModel on random weights (fp32, 1e-4 relative): image and
text embeddings and the logits, through the transformers checkpoint layout (save_pretrained -> our loader)."""

import jax
import numpy as np
import pytest
import torch
import transformers
from fake_hub import CLIP_ID
from flax import nnx
from tiny_clip import EOS, tiny_clip_model

from bobjax import config_lib
from bobjax.classify import backbones
from bobjax.models import clip, clip_tokenizer, weights


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


CLIP_VIT_B16 = dict(  # openai/clip-vit-base-patch16 config.json: transformers' CLIPConfig defaults but for these
    text_config=dict(bos_token_id=0, eos_token_id=2), vision_config=dict(patch_size=16), projection_dim=512,
    logit_scale_init_value=2.6592,
)


@pytest.mark.fullsize
def test_full_clip_vit_b16_classifier_matches_transformers(tmp_path):
    """BOB's classifier as the classify stage builds it (backbones.build from a transformers folder and its
    tokenizer, adapters added, evaluation graph) at ViT-B/16's full size and 224 px, against CLIPModel's
    logits_per_image (logit_scale x cosine); the legacy eos_token_id=2 pools the prompts at their largest id."""
    torch.manual_seed(0)
    model_t = transformers.CLIPModel(transformers.CLIPConfig(**CLIP_VIT_B16)).eval()
    with torch.no_grad():  # transformers starts norms and biases at constants; a swapped pair must show.
        for p in model_t.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model_t.save_pretrained(tmp_path)
    clip_tokenizer.write_clip_tokenizer_files(str(tmp_path))
    cfg = config_lib.base_config().classify
    cfg.checkpoint = str(tmp_path)  # backbone clip_vit_b16 at 224 px: BOB's defaults
    classifier = backbones.build(cfg, backbones.resolve_checkpoint(cfg),
                                 ["laysan albatross", "crested auklet", "painted bunting"], "bird", rngs=nnx.Rngs(0))
    state = nnx.state(classifier.model)
    prompt_ids = np.array(nnx.merge(classifier.eval_graph, state).prompt_ids[...])
    images = np.random.default_rng(1).normal(size=(2, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model_t(input_ids=torch.from_numpy(prompt_ids).long(),
                           pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2)).logits_per_image.numpy()
    got = np.asarray(jax.jit(lambda state, x: nnx.merge(classifier.eval_graph, state)(x))(state, images))
    assert got.shape == expected.shape == (2, 3)
    # Relative to the logits' own scale: random towers give cosines near 0, so |logits| stays below 1.
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def test_class_prompts_are_split_over_the_devices_with_equal_logits():
    """Under an 8-device mesh each device encodes 2 of the 13 prompts (padded to 16), not all 13; the logits equal
    the unsharded model's (fp32: 1e-5 of the largest)."""
    from bobjax import parallel

    assert jax.device_count() == 8
    config = {"text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                              "num_attention_heads": 4, "max_position_embeddings": 16, "vocab_size": 1000,
                              "eos_token_id": EOS},
              "vision_config": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
                                "num_attention_heads": 4, "patch_size": 8, "image_size": 32},
              "projection_dim": 24}
    graph, state = nnx.split(clip.CLIPClassifier(config, _prompt_ids(13), 32, rngs=nnx.Rngs(0)))
    images = jax.random.uniform(jax.random.key(1), (8, 32, 32, 3))
    forward = lambda state, images: nnx.merge(graph, state)(images)  # noqa: E731
    expected = jax.jit(forward)(state, images)
    mesh = parallel.make_mesh({"data": -1, "fsdp": 1})
    sharded = jax.jit(parallel.under_mesh(mesh, forward))
    images = jax.device_put(images, parallel.batch_sharding(mesh, 8))
    logits = sharded(state, images)
    assert logits.shape == (8, 13)
    np.testing.assert_allclose(logits, expected, atol=1e-5 * float(np.abs(expected).max()))
    hlo = sharded.lower(state, images).compile().as_text()
    assert "f32[2,16,32]" in hlo and "f32[13,16,32]" not in hlo  # per device: 2 prompts x 16 tokens x width 32
