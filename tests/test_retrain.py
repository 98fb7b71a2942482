"""One final retrain: repeatable on CPU, scored like validation, samples kept in order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from harness import stats
from harness.data.prepare import prepare_data
from harness.retrain import retrain_and_score


def test_identical_configurations_show_no_difference(smoke_sweep):
    bench, _, _ = smoke_sweep
    data = prepare_data(**bench.prepare_args())
    config = dataclasses.replace(bench.trial_config("unet"), depth=1, epochs=2, seed=3)
    a = retrain_and_score(config, data, bench.prepare_args(), [], {})
    b = retrain_and_score(config, data, bench.prepare_args(), [], {})
    assert np.array_equal(a.per_image_counts, b.per_image_counts), "same config and seed, same CPU result"
    per_image = []
    results = []
    for label, r in (("a", a), ("b", b)):
        counts = r.per_image_counts
        iou = counts[:, 0] / np.maximum(counts[:, 0] + counts[:, 1] + counts[:, 2], 1)
        per_image.append(pd.DataFrame({"arch": label, "seed": 3, "name": np.arange(len(counts)), "iou": iou}))
        results.append({"arch": label, "seed": 3, "iou": float(iou.mean())})
    paired = stats.paired_table(pd.DataFrame(results), pd.concat(per_image), n_boot=500)
    row = paired.iloc[0]
    assert row.iou_diff_mean == 0 and row.iou_diff_ci_low == 0 and row.iou_diff_ci_high == 0
    assert row.wilcoxon_p == 1.0 and row.p_a_beats_b == 0.5


def test_retrain_keeps_the_requested_samples_and_scores_every_test_patch(smoke_sweep):
    bench, _, _ = smoke_sweep
    data = prepare_data(**bench.prepare_args())
    test_rows = data.indices("test")
    wanted = [int(test_rows[0]), int(test_rows[-1])]
    config = dataclasses.replace(bench.trial_config("unetpp"), depth=1, epochs=1, seed=0)
    result = retrain_and_score(config, data, bench.prepare_args(), wanted, {})
    assert result.status == "completed" and result.arch == "unetpp" and result.seed == 0
    assert result.per_image_counts.shape == (len(test_rows), 4)
    assert result.sample_rows.tolist() == sorted(wanted)
    assert result.sample_preds.shape[0] == 2 and set(np.unique(result.sample_preds)) <= {0, 1}
    assert [m["epoch"] for m in result.history] == [1]
