"""Images/s of the synthetic-data quality metrics and filters, bobjax against the same computation in PyTorch.

Both sides take the same uint8 images at the tower's size and one CLIP model (random weights in the real layout,
saved once): image embeddings, zero-shot logits against the class prompts, each image's cosine to its own prompt
(CLIP score), per class the Fréchet distance to a real reference set and the diversity, and the three filters'
decisions. Ours: :mod:`bobjax.quality` on our Flax CLIP. Reference: transformers' ``CLIPModel`` and the same algebra
in torch (float64 eigen-decompositions for FD). Medians over ``--iters`` timed passes after one warm-up pass (the
JAX compile); the two sides alternate. Prints both rates and their ratio.

    python benchmarks/quality.py                        # CLIP ViT-B/16 at 224 px, 32 images
    python benchmarks/quality.py --config=tiny --images=8 --iters=1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from result import emit  # noqa: E402

from bobjax import config_lib  # noqa: E402
from bobjax.filter import rules  # noqa: E402
from bobjax.quality import encoders, measures  # noqa: E402

CONFIGS = {
    "b16": dict(vision_config=dict(patch_size=16), projection_dim=512),  # openai/clip-vit-base-patch16's shapes
    "tiny": dict(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
                 vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                    patch_size=8, image_size=32), projection_dim=24),
}
CLASSES = ["laysan albatross", "crested auklet", "painted bunting", "indigo bunting"]


def save_clip(folder: str, name: str) -> int:
    """A random CLIPModel with CLIP's tokenizer in ``folder``; returns its image size."""
    import transformers

    from bobjax.models.clip_tokenizer import write_clip_tokenizer_files

    config = transformers.CLIPConfig(**CONFIGS[name])
    transformers.CLIPModel(config).save_pretrained(folder)
    write_clip_tokenizer_files(folder)
    return config.vision_config.image_size


def filter_config(rule: str):
    cfg = config_lib.base_config().filter
    cfg.rule, cfg.real_threshold, cfg.top_k = rule, 0.0, 4
    return cfg


def ours(encoder, images, labels, prompts, real_features, real_labels) -> None:
    features, _ = encoder.encode([{"image": x} for x in images])
    logits = encoder.class_logits(features)
    cosines = np.sum(features * encoder.text_features(prompts), axis=1)
    measures.measure(features, labels, measures.Reference(real_features, real_labels, len(CLASSES)), logits, cosines)
    for rule in ("cosine", "zero_shot", "top_k"):
        rules.decide(filter_config(rule), labels, features, logits, real_features, real_labels, encoder.class_text)


def reference(model, tokenizer, images, labels, prompts, real_features, real_labels) -> None:
    """The same quantities with transformers and torch."""
    import torch

    from bobjax.models import clip

    mean, std = torch.tensor(clip.CLIP_MEAN), torch.tensor(clip.CLIP_STD)
    pixels = ((torch.from_numpy(images).float() / 255 - mean) / std).permute(0, 3, 1, 2)
    normalize = torch.nn.functional.normalize

    def text(batch):
        ids = tokenizer(batch, padding="max_length", max_length=77, truncation=True, return_tensors="pt")["input_ids"]
        out = model.get_text_features(input_ids=ids)
        return normalize(out if torch.is_tensor(out) else out.pooler_output, dim=-1)

    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
        features = normalize(out if torch.is_tensor(out) else out.pooler_output, dim=-1)
        classes = text([config_lib.CLASS_PROMPT.format(descriptor="bird", class_name=c) for c in CLASSES])
        logits = model.logit_scale.exp() * features @ classes.T
        clip_score = 100 * (features * text(prompts)).sum(-1).clamp(min=0)
        labels_t, real_t, real_labels_t = torch.from_numpy(labels), torch.from_numpy(real_features), torch.from_numpy(real_labels)
        for c in range(len(CLASSES)):
            x, y = features[labels_t == c].double(), real_t[real_labels_t == c].double()
            covs = [torch.cov(x.T), torch.cov(y.T)]
            values, vectors = torch.linalg.eigh(covs[0])
            root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
            cross = torch.linalg.eigvalsh(root @ covs[1] @ root).clamp(min=0).sqrt().sum()
            _ = ((x.mean(0) - y.mean(0)) ** 2).sum() + covs[0].trace() + covs[1].trace() - 2 * cross
            n = len(x)
            _ = (n * n - (x @ x.T).sum()) / (n * (n - 1)), clip_score[labels_t == c].mean(), (logits[labels_t == c].argmax(-1) == c).float().mean()
        centres = torch.stack([normalize(real_t[real_labels_t == c], dim=-1).mean(0) for c in range(len(CLASSES))])
        _ = (features * centres[labels_t].float()).sum(-1) >= 0.0
        probability = logits.softmax(-1)[torch.arange(len(labels)), labels_t]
        _ = logits.argmax(-1) == labels_t
        _ = [probability[labels_t == c].topk(min(4, int((labels_t == c).sum()))) for c in range(len(CLASSES))]


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="b16")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()
    import torch
    import transformers

    folder = tempfile.mkdtemp()
    size = save_clip(folder, args.config)
    config = config_lib.base_config()
    config.quality.encoder, config.quality.batch_size = folder, args.batch
    encoder = encoders.make_encoder(config, CLASSES, "bird")
    model = transformers.CLIPModel.from_pretrained(folder).eval()
    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder)
    torch.set_grad_enabled(False)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, size, size, 3), dtype=np.uint8)
    labels = np.arange(args.images) % len(CLASSES)
    prompts = [f"a bird photo of a {CLASSES[c]} in the grass background with the perched pose" for c in labels]
    real_features = encoder.encode([{"image": x} for x in images[: 2 * len(CLASSES)]])[0]
    real_labels = labels[: 2 * len(CLASSES)]
    run_ours = lambda: ours(encoder, images, labels, prompts, real_features, real_labels)  # noqa: E731
    run_torch = lambda: reference(model, tokenizer, images, labels, prompts, real_features, real_labels)  # noqa: E731
    run_ours(), run_torch()  # Warm-up: compiles ours.
    mine, theirs = [], []
    for _ in range(args.iters):
        mine.append(seconds(run_ours))
        theirs.append(seconds(run_torch))
    ours_rate, torch_rate = args.images / statistics.median(mine), args.images / statistics.median(theirs)
    print(f"quality metrics + filters, CLIP {args.config} at {size} px, {args.images} images: bobjax {ours_rate:.2f} "
          f"img/s | torch {torch_rate:.2f} img/s | ratio {ours_rate / torch_rate:.2f}x")
    emit(f"quality metrics + filters, CLIP {args.config}, {args.images} images", ours_rate, torch_rate, "images/s")


if __name__ == "__main__":
    main()
