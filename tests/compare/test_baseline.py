"""harness.compare.baseline: the per-pixel logistic regression, against scikit-learn and on a prepared dataset."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from harness.compare.baseline import fit_pixel_logistic, pixel_baseline
from harness.config import load_benchmark
from harness.data.cache import open_cache
from harness.data.prepare import prepare_data
from tests.conftest import SMOKE, smoke_overrides


def test_irls_matches_scikit_learn():
    rng = np.random.default_rng(0)
    n = 4000
    labels = rng.random(n) < 0.3
    centre = np.where(labels[:, None], [20000, 21000, 22000, 26000], [3000, 4000, 5000, 9000])
    pixels = np.clip(centre * rng.lognormal(0, 0.4, (n, 4)), 1, 65535).astype(np.uint16)
    l2 = 1e-3
    ours = fit_pixel_logistic(pixels, labels, l2=l2)
    z = (np.log1p(pixels.astype(np.float64)) - ours.mean) / ours.std
    # scikit-learn minimises ||w||^2 / 2 + C * sum(log-loss); ours adds l2 * n * ||w||^2 / 2 to the log-loss.
    theirs = LogisticRegression(C=1 / (l2 * n), tol=1e-10, max_iter=10_000).fit(z, labels)
    assert ours.weights[0] == pytest.approx(theirs.intercept_[0], abs=1e-4)
    assert ours.weights[1:] == pytest.approx(theirs.coef_[0], abs=1e-4)
    images = pixels.T.reshape(1, 4, 40, 100)
    assert ours.probability(images).ravel() == pytest.approx(theirs.predict_proba(z)[:, 1], abs=1e-6)


def test_pixel_baseline_scores_every_test_pixel_from_counts(tmp_path, data_cache_dir):
    bench = load_benchmark(SMOKE, smoke_overrides(tmp_path, data_cache_dir))
    data = prepare_data(**bench.prepare_args())
    stats = pixel_baseline(data)
    test = data.indices("test")
    size = open_cache(data.cache_dir).patch_size
    assert stats["tp"] + stats["fn"] + stats["fp"] + stats["tn"] == len(test) * size * size
    assert stats["iou"] == pytest.approx(stats["tp"] / (stats["tp"] + stats["fn"] + stats["fp"]))
    assert 0 < stats["iou"] < 1
    assert pixel_baseline(data) == stats  # seeded: the same sample, the same fit
