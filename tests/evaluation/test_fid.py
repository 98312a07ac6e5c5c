"""FID/KID on features with a known closed-form distance, and on a small random extractor."""

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from pandiff.errors import DataError, WeightsError
from pandiff.evaluation.fid import FeatureDistance, find_inception_weights, inception_extractor


class Flatten(nn.Module):
    """Feature "extractor" reading d numbers straight from the image pixels (first d values)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, images):
        return images.flatten(1)[:, : self.num_features].double()


class RandomConv(nn.Module):
    """A small random CNN: uint8 images -> 16 pooled features."""

    num_features = 16

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)

    def forward(self, images):
        return torch.tanh(self.conv(images.float() / 127.5 - 1)).mean(dim=(2, 3))


def exact_gaussian_sample(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> torch.Tensor:
    """n points whose sample mean and (unbiased) sample covariance are exactly ``mean`` and ``cov``."""
    z = np.random.default_rng(seed).normal(size=(n, len(mean)))
    z -= z.mean(axis=0)
    white = linalg.inv(linalg.sqrtm(z.T @ z / (n - 1))).real
    return torch.from_numpy(z @ white @ linalg.sqrtm(cov).real + mean)


def closed_form_fid(m1, c1, m2, c2) -> float:
    return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real))


@pytest.mark.parametrize("seed", [0, 1])
def test_fid_equals_the_closed_form_frechet_distance(seed):
    rng = np.random.default_rng(10 + seed)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    m1, c1 = np.array([0.0, 1.0, 2.0, -1.0]), a @ a.T + 0.5 * np.eye(4)
    m2, c2 = np.array([1.0, 1.0, 0.0, 0.0]), b @ b.T + 0.5 * np.eye(4)
    dist = FeatureDistance(Flatten(4), kid_subsets=5)
    dist.add_features(exact_gaussian_sample(200, m1, c1, seed), real=True)
    dist.add_features(exact_gaussian_sample(300, m2, c2, seed + 5), real=False)
    assert dist.compute()["fid"] == pytest.approx(closed_form_fid(m1, c1, m2, c2), rel=1e-6)


def test_diagonal_case_by_hand():
    # N(0, I) vs N((3, 4), 4 I): |mu|^2 = 25; trace term per dim 1 + 4 - 2 * 2 = 1 -> FID 27.
    dist = FeatureDistance(Flatten(2), kid_subsets=5)
    dist.add_features(exact_gaussian_sample(100, np.zeros(2), np.eye(2), 0), real=True)
    dist.add_features(exact_gaussian_sample(100, np.array([3.0, 4.0]), 4 * np.eye(2), 1), real=False)
    assert dist.compute()["fid"] == pytest.approx(27.0, rel=1e-6)


def test_kid_is_the_unbiased_polynomial_mmd():
    real = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fake = real + 0.5
    dist = FeatureDistance(Flatten(3), kid_subsets=3, kid_subset_size=50)
    dist.add_features(real, real=True)
    dist.add_features(fake, real=False)
    scores = dist.compute()
    assert scores["kid_subset_size"] == 6  # lowered to the sample count

    def k(x, y):  # torchmetrics' default polynomial kernel: (x.y / d + 1) ** 3
        return (x @ y.T / 3 + 1) ** 3

    m = 6
    kxx, kyy, kxy = k(real, real), k(fake, fake), k(real, fake)
    expected = ((kxx.sum() - kxx.trace()) + (kyy.sum() - kyy.trace())) / (m * (m - 1)) - 2 * kxy.mean()
    # Every subset is the whole set, so every subset gives the same value.
    assert scores["kid_mean"] == pytest.approx(float(expected), rel=1e-6)
    assert scores["kid_std"] == pytest.approx(0.0, abs=1e-9)


def test_random_extractor_identical_sets_near_zero_and_shift_increases():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8, generator=gen)
    same = FeatureDistance(RandomConv(), kid_subsets=10)
    same.update(images, real=True)
    same.update(images, real=False)
    brighter = FeatureDistance(RandomConv(), kid_subsets=10)
    brighter.update(images, real=True)
    brighter.update((images.int() // 2 + 128).to(torch.uint8), real=False)
    s, b = same.compute(), brighter.compute()
    assert abs(s["fid"]) < 1e-6
    assert b["fid"] > 1e-2 and b["kid_mean"] > abs(s["kid_mean"])


def test_bad_inputs_and_too_few_samples():
    dist = FeatureDistance(RandomConv())
    with pytest.raises(DataError, match="uint8"):
        dist.update(torch.zeros(2, 3, 8, 8), real=True)
    dist.update(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), real=True)
    with pytest.raises(DataError, match="at least 2"):
        dist.compute()


def test_missing_inception_weights_say_what_to_get(tmp_path):
    with pytest.raises(WeightsError, match="weights-inception-2015-12-05"):
        find_inception_weights(tmp_path)
    with pytest.raises(WeightsError, match="torch-fidelity|weights-inception"):
        inception_extractor(tmp_path / "missing.pth")
