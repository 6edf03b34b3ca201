"""Class fidelity of synthetic images, measured on the toy world by an oracle classifier.

Why: when synthetic data does not help, the report must say whether the generator failed to draw the class or
the context plan failed to help. In the toy world the answer can be measured. A tiny ResNet trained on
plentiful context-balanced real toy images (it reaches ~100 % on the balanced test split, far from the few-shot
regime) labels every synthetic image; the share it labels as the class the image was generated for is the
generator's class fidelity. Chance level means the synthetic images carry no class detail, whatever their
contexts. Other datasets have no oracle (no ground-truth renderer), so the report leaves this out for them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from bobjax import toyworld
from bobjax.models import resnet

ORACLE_SEED = 9_999  # Its own world seed: its images are none of the run's train or test images.


@dataclasses.dataclass
class Oracle:
    model: nnx.Module  # Evaluation mode.
    image_size: int
    test_top1: float  # On the run's own context-balanced test split: how far the oracle can be trusted.

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC images of any size -> predicted labels."""
        return _predict_all(self.model, images, self.image_size)

    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC images -> the penultimate (pooled) features, the feature space of the toy world's quality
        metrics and filters (:mod:`bobjax.quality.encoders`)."""
        return np.asarray(_features(self.model, _inputs(images, self.image_size)))

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Penultimate features -> class logits (the oracle's head)."""
        return np.asarray(self.model.fc(jnp.asarray(features)))


def _inputs(images: np.ndarray, size: int) -> jax.Array:
    x = jnp.asarray(images, jnp.float32) / 255.0 - 0.5
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "linear")
    return x


@nnx.jit
def _features(model, x):
    return model.features(x)


@nnx.jit
def _predict(model, x):
    return jnp.argmax(model(x), axis=-1)


def _predict_all(model, images: np.ndarray, size: int, batch_size: int = 256) -> np.ndarray:
    out = [np.asarray(_predict(model, _inputs(images[i:i + batch_size], size)))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0,), np.int64)


@nnx.jit
def _train_step(model, optimizer, x, labels):
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), labels).mean()

    grads = nnx.grad(loss_fn)(model)
    optimizer.update(model, grads)


def train_oracle(spec: toyworld.ToyWorldSpec, *, per_class: int = 200, steps: int = 300, batch_size: int = 64,
                 learning_rate: float = 5e-3, seed: int = 0) -> Oracle:
    """A ``resnet_tiny`` on ``per_class`` uncorrelated images per class of ``spec``'s classes, drawn at
    ``spec.image_size``, scored on ``spec``'s own test split."""
    pool_spec = dataclasses.replace(spec, seed=ORACLE_SEED, correlated=False, train_per_class=per_class)
    pool = toyworld.ToyWorldSplit(pool_spec, "train")
    images, labels = pool.images(), pool.labels()
    model = resnet.resnet("resnet_tiny", spec.num_classes, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(optax.cosine_decay_schedule(learning_rate, steps)), wrt=nnx.Param)
    order = np.random.default_rng(seed)
    model.train()
    for _ in tqdm(range(steps), desc="report: class-fidelity oracle", unit="step", mininterval=10):
        rows = order.choice(len(images), size=min(batch_size, len(images)), replace=False)
        _train_step(model, optimizer, _inputs(images[rows], spec.image_size), jnp.asarray(labels[rows]))
    model.eval()
    test = toyworld.ToyWorldSplit(spec, "test")
    test_top1 = 100.0 * float(np.mean(_predict_all(model, test.images(), spec.image_size) == test.labels()))
    return Oracle(model, spec.image_size, test_top1)


def class_fidelity(oracle: Oracle, images: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """``{"top1": % of images the oracle labels as their class, "per_class": [%, ...]}``."""
    predicted = oracle.predict(images)
    hits = predicted == labels
    per_class = [100.0 * float(hits[labels == c].mean()) if (labels == c).any() else float("nan")
                 for c in range(num_classes)]
    return {"top1": 100.0 * float(hits.mean()), "per_class": per_class}
