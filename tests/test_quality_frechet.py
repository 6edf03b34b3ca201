"""The Fréchet distance against scipy's general matrix square root on known Gaussians (1e-8 relative), against the
closed form of commuting covariances, and from samples; Ledoit-Wolf shrinkage against the paper's formula written
out image by image."""

import numpy as np
import pytest
import scipy.linalg

from bobjax.quality import frechet


def _random_cov(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d + (0.0 if rank else 0.1) * np.eye(d)


def _scipy_fd(mu1, c1, mu2, c2):
    """FID's reference formula (pytorch-fid): |mu1 - mu2|^2 + tr(C1 + C2 - 2 sqrtm(C1 C2))."""
    root = scipy.linalg.sqrtm(c1 @ c2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(root.real))


@pytest.mark.parametrize("d", [2, 16, 64])
def test_matches_scipy_on_known_gaussians(d):
    rng = np.random.default_rng(d)
    a = frechet.Gaussian(rng.normal(size=d), _random_cov(rng, d), 0, 0.0)
    b = frechet.Gaussian(rng.normal(size=d) + 1.0, _random_cov(rng, d), 0, 0.0)
    expected = _scipy_fd(a.mean, a.cov, b.mean, b.cov)
    assert frechet.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet.frechet_distance(b, a) == pytest.approx(expected, rel=1e-8)  # Symmetric.


def test_singular_covariances_stay_real_and_match_scipy():
    """Rank-3 covariances in 32 dimensions, as a few-shot class gives without shrinkage: scipy's sqrtm leaves an
    imaginary residue that pytorch-fid discards; ours never forms it."""
    rng = np.random.default_rng(1)
    c1, c2 = _random_cov(rng, 32, rank=3), _random_cov(rng, 32, rank=3)
    mu = np.zeros(32)
    got = frechet.frechet_distance(frechet.Gaussian(mu, c1, 0, 0.0), frechet.Gaussian(mu, c2, 0, 0.0))
    assert got == pytest.approx(_scipy_fd(mu, c1, mu, c2), rel=1e-6)


def test_commuting_covariances_have_the_closed_form():
    variances_a, variances_b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    a = frechet.Gaussian(np.array([0.0, 1.0, 2.0]), np.diag(variances_a), 0, 0.0)
    b = frechet.Gaussian(np.array([3.0, 1.0, 0.0]), np.diag(variances_b), 0, 0.0)
    expected = 9 + 4 + np.sum((np.sqrt(variances_a) - np.sqrt(variances_b)) ** 2)
    assert frechet.frechet_distance(a, b) == pytest.approx(expected, rel=1e-12)
    assert frechet.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-12)


def test_from_samples_approaches_the_true_distance():
    rng = np.random.default_rng(2)
    d = 4
    c1, c2 = _random_cov(rng, d), _random_cov(rng, d)
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    x = rng.multivariate_normal(mu1, c1, size=20_000)
    y = rng.multivariate_normal(mu2, c2, size=20_000)
    a, b = frechet.gaussian(x), frechet.gaussian(y)
    assert a.shrinkage == 0.0 and a.count == 20_000
    assert frechet.frechet_distance(a, b) == pytest.approx(_scipy_fd(mu1, c1, mu2, c2), rel=0.05)


def test_ledoit_wolf_when_images_are_fewer_than_dimensions():
    rng = np.random.default_rng(3)
    n, d = 5, 12
    x = rng.normal(size=(n, d)) * np.linspace(0.5, 2.0, d)
    fitted = frechet.gaussian(x)
    # Ledoit & Wolf (2004), written out as in the paper, one image at a time.
    centred = x - x.mean(axis=0)
    sample = centred.T @ centred / n
    mu = np.trace(sample) / d
    delta = np.sum((sample - mu * np.eye(d)) ** 2)
    beta = min(sum(np.sum((np.outer(r, r) - sample) ** 2) for r in centred) / n**2, delta)
    assert fitted.shrinkage == pytest.approx(beta / delta, rel=1e-10) and 0 < fitted.shrinkage <= 1
    np.testing.assert_allclose(fitted.cov, (1 - beta / delta) * sample + beta / delta * mu * np.eye(d), rtol=1e-10)
    assert np.linalg.eigvalsh(fitted.cov).min() > 0  # Well-conditioned, where the sample covariance has rank 4.
    assert np.isfinite(frechet.frechet_distance(fitted, frechet.gaussian(rng.normal(size=(7, d)))))


def test_one_image_is_an_error():
    with pytest.raises(ValueError, match="at least 2 images"):
        frechet.gaussian(np.zeros((1, 3)))
