"""Fréchet distance between two sets of image features (FID's formula, in any encoder's feature space).

FD = |mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a^1/2 C_b C_a^1/2)^1/2), in float64. The trace of the matrix
square root comes from two symmetric eigen-decompositions (C_a^1/2, then the eigenvalues of the symmetric PSD
product), not from a general ``sqrtm``: the product's square root is real by construction and no complex rounding
residue has to be thrown away.

Few-shot classes have fewer images than feature dimensions (5 real birds against 512 CLIP dimensions), and the sample
covariance of such a set is singular: its FD says more about n than about the images. A set of ``n <= d`` images
therefore gets the Ledoit-Wolf estimate, the sample covariance shrunk toward a scaled identity by the coefficient
that minimises its expected squared error; the coefficient is kept so that the report can state it.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Gaussian:
    mean: np.ndarray  # [d], float64
    cov: np.ndarray  # [d, d], float64
    count: int  # Images it was estimated from.
    shrinkage: float  # Ledoit-Wolf coefficient in [0, 1]; 0: the plain sample covariance (n > d).


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """(shrunk covariance, coefficient) of the rows of ``x`` [n, d] (Ledoit & Wolf 2004, maximum-likelihood
    covariance shrunk toward mu I with mu = tr(S) / d)."""
    n, d = x.shape
    centred = x - x.mean(axis=0)
    sample = centred.T @ centred / n
    mu = np.trace(sample) / d
    target_gap = np.sum((sample - mu * np.eye(d)) ** 2)  # |S - mu I|_F^2
    # sum_i |x_i x_i^T - S|_F^2 without forming the n outer products.
    squared = np.sum(centred**2, axis=1)
    spread = np.sum(squared**2 - 2 * np.einsum("ni,ij,nj->n", centred, sample, centred) + np.sum(sample**2)) / n**2
    coefficient = 0.0 if target_gap == 0 else float(min(spread, target_gap) / target_gap)
    return (1 - coefficient) * sample + coefficient * mu * np.eye(d), coefficient


def gaussian(features: np.ndarray) -> Gaussian:
    """Mean and covariance of ``features`` [n, d]: the unbiased sample covariance when n > d, Ledoit-Wolf's
    shrunk one otherwise. Needs at least two images."""
    x = np.asarray(features, np.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 images per set, got {n}")
    if n > d:
        return Gaussian(x.mean(axis=0), np.cov(x, rowvar=False), n, 0.0)
    cov, coefficient = ledoit_wolf(x)
    return Gaussian(x.mean(axis=0), cov, n, coefficient)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: Gaussian, b: Gaussian) -> float:
    """The Fréchet (2-Wasserstein) distance squared between N(a.mean, a.cov) and N(b.mean, b.cov)."""
    root_a = _psd_sqrt(a.cov)
    product = root_a @ b.cov @ root_a
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)))
    return float(np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov) + np.trace(b.cov) - 2 * cross)
