"""The CLIP feature space of the quality metrics and the filters against transformers' CLIPModel on the same tiny
random weights (fp32, 1e-4 relative to each quantity's scale): image and text embeddings, zero-shot logits, and what
they decide (fidelity, CLIP score, each filter's keep list)."""

import numpy as np
import pytest
import torch
import transformers
from tiny_clip import IMAGE_SIZE, make_tiny_clip

from bobjax import config_lib
from bobjax.filter import rules
from bobjax.models import clip
from bobjax.quality import encoders, measures

CLASSES = ["laysan albatross", "crested auklet", "painted bunting"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("clip"))
    make_tiny_clip(folder)
    config = config_lib.base_config()
    config.quality.encoder, config.quality.batch_size = folder, 4  # 10 images: the last batch is padded.
    encoder = encoders.make_encoder(config, CLASSES, "bird")
    images = np.random.default_rng(0).integers(0, 256, (10, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    return folder, encoder, images


def _close(ours, theirs, tol=1e-4):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < tol


def _torch_reference(folder, images, prompts):
    model = transformers.CLIPModel.from_pretrained(folder).eval()
    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder)
    mean, std = np.asarray(clip.CLIP_MEAN), np.asarray(clip.CLIP_STD)
    pixels = torch.tensor(((images / 255.0 - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)

    def text(p):
        ids = tokenizer(p, padding="max_length", max_length=16, truncation=True, return_tensors="pt")["input_ids"]
        out = model.get_text_features(input_ids=ids)
        out = out if torch.is_tensor(out) else out.pooler_output
        return torch.nn.functional.normalize(out, dim=-1)

    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        image = torch.nn.functional.normalize(image if torch.is_tensor(image) else image.pooler_output, dim=-1)
        classes = text([config_lib.CLASS_PROMPT.format(descriptor="bird", class_name=c) for c in CLASSES])
        logits = model.logit_scale.exp() * image @ classes.T
        return image.numpy(), classes.numpy(), logits.numpy(), text(prompts).numpy()


def test_features_logits_and_text_match_transformers(tiny):
    folder, encoder, images = tiny
    prompts = [f"a bird photo of a {c} in the grass background" for c in CLASSES] * 3 + ["a bird"]
    image, classes, logits, text = _torch_reference(folder, images, prompts)
    features, fields = encoder.encode([{"image": x, "label": 0} for x in images])
    assert len(fields) == 10 and fields[0] == {"label": 0}
    _close(features, image)
    _close(encoder.class_text, classes)
    _close(encoder.class_logits(features), logits)
    _close(encoder.text_features(prompts), text)
    assert "openai" not in encoder.name and folder in encoder.name and "24-d" in encoder.name


def test_fidelity_clip_score_and_filters_decide_as_with_torch_features(tiny):
    folder, encoder, images = tiny
    labels = np.arange(10) % 3
    prompts = [f"a bird photo of a {CLASSES[c]}" for c in labels]
    image, classes, logits, text = _torch_reference(folder, images, prompts)
    features, _ = encoder.encode([{"image": x} for x in images])
    real_features, real_labels = features[:6], labels[:6]
    reference = measures.Reference(real_features, real_labels, 3)
    ours = measures.measure(features, labels, reference, encoder.class_logits(features),
                            np.sum(features * encoder.text_features(prompts), axis=1))
    theirs = measures.measure(image, labels, reference, logits, np.sum(image * text, axis=1))
    assert ours["fidelity"] == theirs["fidelity"]
    np.testing.assert_allclose(ours["clip_score"], theirs["clip_score"], rtol=1e-4)
    np.testing.assert_allclose(ours["fd"], theirs["fd"], rtol=1e-3)
    cfg = config_lib.base_config().filter
    cfg.rule, cfg.real_threshold = "cosine", -1.0
    # Thresholds halfway between two images' scores, so that float rounding cannot move an image across the line.
    real_scores = np.sort(rules.decide(cfg, labels, image, logits, image[:6], real_labels, classes).scores["score"])
    cfg.real_threshold = float(real_scores[4:6].mean())
    text_scores = np.sort(np.sum(image * classes[labels], axis=1))
    cfg.text_threshold = float(text_scores[2:4].mean())
    for rule, top_k in (("cosine", 0), ("zero_shot", 0), ("top_k", 2)):
        cfg.rule, cfg.top_k = rule, top_k or 1
        got = rules.decide(cfg, labels, features, encoder.class_logits(features), real_features, real_labels,
                           encoder.class_text)
        expected = rules.decide(cfg, labels, image, logits, image[:6], real_labels, classes)
        np.testing.assert_array_equal(got.kept, expected.kept)
        np.testing.assert_allclose(got.scores["score"], expected.scores["score"], rtol=1e-4, atol=1e-6)
    assert 0 < expected.kept.sum() < 10
