"""FID, precision and recall on 2-D points, through torch-fidelity's metric functions."""
import numpy as np
import pytest
import torch
from scipy import linalg

from conftest import gauss2d
from neon_steps import data, metrics

DATASET = gauss2d(reference_n=1000, reference_seed=7)


@pytest.fixture(scope="module")
def ref():
    return metrics.reference(DATASET)


def test_reference_is_the_true_gaussian_and_real_points(ref):
    assert torch.equal(ref["mu"], torch.zeros(2, dtype=torch.float64))
    assert torch.equal(ref["sigma"], torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64))
    assert ref["features"].shape == (1000, 2)


def test_real_samples_score_well(ref):
    real = metrics.features(DATASET, data.gaussian2d(DATASET, 1000, seed=1))
    scores = metrics.score(real, ref)
    assert scores["fid"] < 0.05
    assert scores["precision"] > 0.95 and scores["recall"] > 0.95


def test_fid_matches_the_closed_form(ref):
    fake = torch.randn(5000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5 + 1.0
    mu, sigma = fake.mean(0).numpy(), np.cov(fake.numpy(), rowvar=False)
    true_sigma = ref["sigma"].numpy()
    expected = mu @ mu + np.trace(sigma + true_sigma - 2 * linalg.sqrtm(sigma @ true_sigma).real)
    assert metrics.fid(fake, ref) == pytest.approx(expected, rel=1e-6)


def test_a_collapsed_generator_has_precision_without_recall(ref):
    collapsed = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    scores = metrics.score(collapsed, ref)
    assert scores["fid"] > 2
    assert scores["precision"] > 0.9 and scores["recall"] < 0.3


def test_far_away_points_have_no_precision(ref):
    far = torch.full((500, 2), 20.0, dtype=torch.float64) + torch.randn(500, 2, dtype=torch.float64)
    scores = metrics.score(far, ref)
    assert scores["fid"] > 500 and scores["precision"] == 0
