"""K = 3 end to end: benchmarks/zoo-smoke.yaml (U-Net, smp's ResNet U-Net, Cloud-Net) swept and compared.

The sweep runs on the session's real Ray, the comparison retrains over paired seeds; the report must rank
the three with rank intervals, compare each with the best, name the best and Pareto sets, and draw the
Pareto and performance-profile figures, every number recomputable from the results directory.
"""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from harness.compare.driver import load_sweep_results, run_compare
from harness.config import load_benchmark
from harness.models import get_model_spec
from harness.report.ranking import kway_table, pareto_set, score_matrices
from harness.results import load_results
from harness.stats.ranking import ranking
from harness.sweep.driver import run_sweep
from tests.conftest import REPO_ROOT, smoke_overrides

ZOO_SMOKE = REPO_ROOT / "benchmarks" / "zoo-smoke.yaml"


@pytest.fixture(scope="module")
def zoo(ray_cluster, tmp_path_factory, data_cache_dir):
    tmp = tmp_path_factory.mktemp("zoo")
    bench = load_benchmark(ZOO_SMOKE, smoke_overrides(tmp, data_cache_dir))
    outcomes = run_sweep(bench)
    out = tmp / "report"
    report = run_compare(bench, load_sweep_results(bench), out, progress=False)
    return bench, outcomes, out, report


def test_zoo_smoke_names_three_architectures_of_three_kinds():
    bench = load_benchmark(ZOO_SMOKE)
    assert bench.architectures == ("unet", "unet_resnet", "cloudnet")
    assert get_model_spec("unet_resnet").source == "segmentation_models_pytorch"
    assert bench.search.num_samples == 3  # the same budget for each


def test_every_architecture_gets_the_same_trial_budget(zoo):
    bench, outcomes, _, _ = zoo
    assert sorted(o.arch for o in outcomes) == sorted(bench.architectures)
    assert {len(o.trials) for o in outcomes} == {bench.search.num_samples}


def test_report_ranks_all_three_with_rank_intervals_and_the_pareto_figures(zoo):
    _, _, out, report = zoo
    text = report.read_text()
    assert "## Ranking of the 3 architectures" in text
    assert "Not distinguishable from the best" in text and "Pareto set" in text
    for name in ("pareto", "profile"):
        assert f"figures/{name}.png" in text
        img = mpimg.imread(out / "figures" / f"{name}.png")
        assert img.shape[0] > 300 and img.shape[1] > 300 and float(np.std(img)) > 0.01
    res = load_results(out)
    table = kway_table(res)
    assert list(table["rank"]) == [1, 2, 3]
    assert (table.rank_low <= table["rank"]).all() and (table["rank"] <= table.rank_high).all()
    assert table.in_best_set.iloc[0]
    # The table is the statistics module's over the results directory's own per-image IoU.
    scores, _ = score_matrices(res)
    assert [r["arch"] for r in ranking(scores)] == list(table.arch)
    means = {a: s.mean() for a, s in scores.items()}
    assert table["mean"].tolist() == pytest.approx(sorted(means.values(), reverse=True))
    # Pareto over GFLOPs: recomputed from summary.csv's costs.
    summary = res.summary.set_index("arch")
    front = pareto_set({a: (summary.loc[a, "flops_per_patch"], means[a]) for a in means})
    assert set(table.arch[table.pareto_flops_per_patch]) == set(front) and front
    assert (summary["inference_images_per_second_mean"] > 0).all()


def test_the_final_compare_run_carries_the_ranking(zoo):
    bench, _, out, _ = zoo
    client = MlflowClient(bench.tracking.uri)
    experiment = client.get_experiment_by_name(bench.tracking.experiment)
    (run,) = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("role") == "final_compare"]
    table = kway_table(load_results(out))
    for row in table.itertuples():
        assert run.data.metrics[f"{row.arch}_rank"] == row.rank
        assert (run.data.metrics[f"{row.arch}_rank_low"], run.data.metrics[f"{row.arch}_rank_high"]) == (
            row.rank_low,
            row.rank_high,
        )
        assert run.data.metrics[f"{row.arch}_in_best_set"] == float(row.in_best_set)
    best = table.arch.iloc[0]
    assert f"{best}_vs_best_p_holm" not in run.data.metrics
    assert all(f"{a}_vs_best_p_holm" in run.data.metrics for a in table.arch.iloc[1:])
