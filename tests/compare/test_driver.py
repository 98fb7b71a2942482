"""The final comparison on a real smoke sweep: report, statistics from counts, MLflow, refusals."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image as mpimg
import mlflow.pytorch
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from harness.compare.driver import load_sweep_results, resolve_benchmark, run_compare
from harness.compare.tables import _scene_scores
from harness.config import load_benchmark, to_flat
from harness.data.cache import open_cache
from harness.data.layout import find_scene_gts
from harness.data.prepare import prepare_data
from harness.errors import CompareError
from harness.metrics import STAT_KEYS, confusion_stats
from harness.results import SCORING_VERSION
from tests.conftest import SMOKE, smoke_overrides


@pytest.fixture(scope="module")
def compared(smoke_sweep):
    bench, outcomes, tmp = smoke_sweep
    out = tmp / "report"
    report = run_compare(bench, load_sweep_results(bench), out, progress=False)
    return bench, outcomes, out, report


def _runs(bench, **tags):
    client = MlflowClient(bench.tracking.uri)
    exp = client.get_experiment_by_name(bench.tracking.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, [r for r in runs if all(r.data.tags.get(k) == v for k, v in tags.items())]


def test_report_has_both_architectures_and_figures(compared):
    bench, outcomes, out, report = compared
    text = report.read_text()
    assert "U-Net" in text and "UNet++" in text
    for name in ("curves", "samples", "per_image_iou", "budget"):
        png = out / "figures" / f"{name}.png"
        assert f"figures/{name}.png" in text
        img = mpimg.imread(png)
        assert img.shape[0] > 200 and img.shape[1] > 200 and float(np.std(img)) > 0.01
    # Shared like any folder the user makes (mkdtemp's private 0700 is not kept), with the HTML page beside.
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (out / "report.html").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["architectures"] == ["unet", "unetpp"]
    prepared = prepare_data(**bench.prepare_args())
    assert (meta["split_hash"], meta["data_hash"]) == (prepared.split_hash, prepared.data_hash)
    # The per-pixel floor, scored from its own counts on the same test pixels, is in the report and in MLflow.
    base = meta["pixel_baseline"]
    assert base["iou"] == pytest.approx(confusion_stats(base["tp"], base["fn"], base["fp"], base["tn"])["iou"])
    assert f"scores IoU {base['iou']:.4f}" in text and "Margin of each network over it" in text
    _, finals = _runs(bench, role="final_compare")  # this one, and any other test's comparison of the same sweep
    assert finals and all(f.data.metrics["pixel_baseline_pooled_iou"] == pytest.approx(base["iou"]) for f in finals)
    # The comparison retrains exactly what the sweep chose: it never decides again.
    for result in outcomes:
        chosen = meta["best_configs"][result.arch]
        assert chosen["trial_id"] == result.best.trial_id and chosen["config"] == to_flat(result.best_config)


def test_every_csv_statistic_follows_from_its_counts(compared):
    _, _, out, _ = compared
    for name in ("results.csv", "summary.csv"):
        table = pd.read_csv(out / name)
        for row in table.to_dict("records"):
            expected = confusion_stats(int(row["tp"]), int(row["fn"]), int(row["fp"]), int(row["tn"]))
            for key in STAT_KEYS:
                got, want = row[key], expected[key]
                assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-9), (name, key)
    per_image = pd.read_csv(out / "per_image.csv")
    results = pd.read_csv(out / "results.csv")
    for (arch, seed), group in per_image.groupby(["arch", "seed"]):
        row = results[(results.arch == arch) & (results.seed == seed)].iloc[0]
        for k in ("tp", "fn", "fp", "tn"):
            assert group[k].sum() == row[k], "per-image counts must add up to the pooled counts"
        # Per-image IoU is defined exactly on the images whose ground truth has cloud (P > 0).
        cloudy = group.tp + group.fn > 0
        assert group.iou.notna().tolist() == cloudy.tolist() and (group.cloud_free == ~cloudy).all()
        iou = group.tp / (group.tp + group.fn + group.fp)
        assert np.allclose(iou[cloudy], group.iou[cloudy])
        assert row["per_image_iou"] == pytest.approx(group.iou[cloudy].mean())
        assert row["iou_images"] == cloudy.sum() and row["cloud_free_fp"] == group.fp[~cloudy].sum()
    # Every architecture and seed is scored on the same test images, with the same per-image IoU set.
    names = {key: set(g.name) for key, g in per_image.groupby(["arch", "seed"])}
    iou_sets = {key: set(g.name[g.iou.notna()]) for key, g in per_image.groupby(["arch", "seed"])}
    assert len({frozenset(v) for v in names.values()}) == 1 and len({frozenset(v) for v in iou_sets.values()}) == 1


def test_scenes_are_scored_from_every_patch_and_retrain_seeds_are_fresh(compared):
    bench, outcomes, out, _ = compared
    meta = json.loads((out / "meta.json").read_text())
    protocol = meta["scene_protocol"]
    assert protocol["binarisation"] == "argmax" and protocol["scenes_without_gt"] == []
    scenes = pd.read_csv(out / "scene_scores.csv")
    assert set(scenes.scene_id) == set(protocol["scored_scenes"]) and len(protocol["scored_scenes"]) >= 1
    assert (scenes.patches >= scenes.test_patches).all()
    assert set(pd.read_csv(out / "results.csv").seed) == set(bench.compare.seeds)
    assert all(r.best_config.seed not in bench.compare.seeds for r in outcomes)


def test_mlflow_holds_the_final_compare_run_with_artifacts(compared):
    bench, _, _, _ = compared
    client, runs = _runs(bench, final_compare="true")
    # Other tests may compare again (reusing retrains): every final_compare run is complete.
    assert runs
    for run in runs:
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"report.md", "results.csv", "figures"} <= artifacts
    # The run says the answer: its verdict (description and tags) and the headline numbers behind it.
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        assert tags["winner"] in (*bench.architectures, "none") and tags["leader"] in bench.architectures
        assert tags["mlflow.note.content"].startswith(f"**{tags['verdict']}**")
        a, b = tags["leader"], next(arch for arch in bench.architectures if arch != tags["leader"])
        key = f"{a}_minus_{b}_per_image_iou"
        assert (
            metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"]
            and 0 <= metrics[f"{key}_seed_t_p"] <= 1
        )
        established = metrics[f"{key}_ci_low"] > 0
        assert tags["winner"] == (a if established else "none")
    _, retrains = _runs(bench, role="final_retrain")
    assert len(retrains) == len(bench.architectures) * len(bench.compare.seeds)
    # Each retrain is nested under a comparison run, with its curves, test metrics and model.
    parents = {r.info.run_id for r in runs}
    for run in retrains:
        assert run.data.tags["mlflow.parentRunId"] in parents
        assert run.info.run_name == f"{run.data.tags['arch']}/seed{run.data.tags['seed']}"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_iou")]
        assert steps == list(range(1, len(steps) + 1)) and steps
        assert 0 <= run.data.metrics["test_pooled_iou"] <= 1
        assert run.info.status == "FINISHED"
    # The retrain's run exists while it trains: its task logs the machine's system metrics there.
    assert any("system/cpu_utilization_percentage" in r.data.metrics for r in retrains)
    model = mlflow.pytorch.load_model(f"runs:/{retrains[0].info.run_id}/{retrains[0].info.run_name.replace('/', '-')}")
    assert model(torch.zeros(2, 4, 32, 32)).shape == (2, 2, 32, 32)
    # One name per quantity: pooled IoU and per-image IoU are told apart.
    metrics = runs[0].data.metrics
    assert {"unet_pooled_iou_mean", "unet_per_image_iou_mean", "unetpp_pooled_iou_mean"} <= set(metrics)


def test_rerun_reuses_finished_retrains(compared):
    bench, outcomes, out, _ = compared
    run_compare(bench, load_sweep_results(bench, outcomes[0].sweep_id), out.with_name("report2"), progress=False)
    _, retrains = _runs(bench, role="final_retrain")
    assert len(retrains) == len(bench.architectures) * len(bench.compare.seeds), "nothing retrained twice"
    a = pd.read_csv(out / "results.csv")
    b = pd.read_csv(out.with_name("report2") / "results.csv")
    pd.testing.assert_frame_equal(
        a[["arch", "seed", "tp", "fn", "fp", "tn"]], b[["arch", "seed", "tp", "fn", "fp", "tn"]]
    )


def test_register_puts_each_architectures_best_retrain_in_the_registry_for_predict(compared, tmp_path):
    """`cloudmask compare --register NAME` (reusing the finished retrains), then `predict --model models:/...`."""
    import dataclasses

    import rasterio

    from harness.cli import main
    from harness.data.synth_landsat import write_landsat_scenes

    bench, outcomes, out, _ = compared
    registering = dataclasses.replace(bench, compare=dataclasses.replace(bench.compare, register_models="smoke-reg"))
    report = run_compare(registering, load_sweep_results(bench, outcomes[0].sweep_id), tmp_path / "r", progress=False)
    registered = json.loads((report.parent / "meta.json").read_text())["registered_models"]
    assert registered == {arch: f"models:/smoke-reg-{arch}/1" for arch in bench.architectures}
    client = MlflowClient(bench.tracking.uri)
    per_image = pd.read_csv(out / "results.csv").set_index(["arch", "seed"])["per_image_iou"]
    for arch in bench.architectures:
        version = client.get_model_version(f"smoke-reg-{arch}", "1")
        best_seed = int(per_image.loc[arch].idxmax())
        assert version.tags["seed"] == str(best_seed) and version.tags["arch"] == arch
        assert float(version.tags["test_per_image_iou_mean"]) == pytest.approx(
            per_image.loc[(arch, best_seed)], rel=1e-5
        )
    (scene,) = write_landsat_scenes(tmp_path / "scenes", scenes=1, seed=1, patch_size=32)
    args = ["predict", "--model", registered["unet"], "--tracking-uri", bench.tracking.uri, "--tile", "32"]
    assert main([*args, "--overlap", "8", "--out", str(tmp_path / "masks"), str(scene), "-q"]) == 0
    with rasterio.open(next((tmp_path / "masks").glob("*_cloudmask.TIF"))) as mask:
        assert set(np.unique(mask.read(1))) <= {0, 128, 255}


def test_latest_sweep_is_found_without_a_benchmark(compared):
    bench, outcomes, _, _ = compared
    found = resolve_benchmark(None, bench.tracking.uri)
    assert found.name == "smoke" and found.architectures == bench.architectures
    sweeps = load_sweep_results(found)
    assert {s.sweep_id for s in sweeps.values()} == {outcomes[0].sweep_id}


def test_split_hash_mismatch_is_refused(compared, tmp_path):
    bench, _, _, _ = compared
    other = load_benchmark(SMOKE, smoke_overrides(tmp_path, tmp_path / "cache2", **{"split.seed": 1}))
    other = dataclasses.replace(other, tracking=bench.tracking)
    with pytest.raises(CompareError, match="split hash mismatch"):
        run_compare(other, load_sweep_results(bench), tmp_path / "report", progress=False)
    assert not (tmp_path / "report").exists(), "a refused comparison leaves nothing behind"


def test_data_hash_mismatch_is_refused(compared, tmp_path):
    """Same split, other pixels (another copy of the data, another generator): refused before any retrain."""
    bench, _, _, _ = compared
    sweeps = {a: dataclasses.replace(s, data_hash="0" * 64) for a, s in load_sweep_results(bench).items()}
    with pytest.raises(CompareError, match="data hash mismatch: the sweep of unet was made on data 000000000000"):
        run_compare(bench, sweeps, tmp_path / "report", progress=False)
    assert not (tmp_path / "report").exists(), "a refused comparison leaves nothing behind"


def test_scene_protocol_lists_test_scenes_without_ground_truth(tmp_path, synthetic_root, caplog):
    # A copy of the tiny synthetic tree whose test scene lost its Entire_scene_gts file: it must be named
    # (meta.json, a logged warning), not skipped silently; the other retrains' scene rows are kept.
    root = Path(shutil.copytree(synthetic_root, tmp_path / "data"))
    data = prepare_data(root=root, cache_dir=tmp_path / "cache", split_kind="scene", fractions=(0.5, 0.25, 0.25))
    table = open_cache(data.cache_dir).patches
    test_scene = table.scene_id.iloc[data.indices("test")[0]]
    bench = SimpleNamespace(split=SimpleNamespace(kind="scene"), data=SimpleNamespace(root=str(root)))
    fresh = SimpleNamespace(scoring_version=SCORING_VERSION, scene_scores=[{"scene_id": "x", "iou": 50.0}])
    old = SimpleNamespace(scoring_version=0, scene_scores=[{"scene_id": "x", "iou": 78.3}])
    retrains = {("unet", 1): fresh, ("unet", 2): old}
    # A retrain reused from before scenes were stitched from every patch: its scene scores are left out.
    rows, protocol = _scene_scores(bench, data, retrains, [("unet", 1), ("unet", 2)])
    assert protocol["scored_scenes"] == [test_scene] and protocol["stale_retrains"] == ["unet/seed2"]
    assert rows == [{"arch": "unet", "seed": 1, "scene_id": "x", "iou": 50.0}]
    find_scene_gts(root)[test_scene].unlink()
    with caplog.at_level("WARNING"):
        rows, protocol = _scene_scores(bench, data, retrains, [("unet", 1), ("unet", 2)])
    assert protocol["scenes_without_gt"] == [test_scene] and protocol["scored_scenes"] == []
    assert test_scene in caplog.text
    assert rows == [{"arch": "unet", "seed": 1, "scene_id": "x", "iou": 50.0}]
    assert protocol["stale_retrains"] == []  # nothing to score: no retrain is stale
    random = SimpleNamespace(split=SimpleNamespace(kind="random"), data=bench.data)
    assert "random patch split" in _scene_scores(random, data, retrains, [])[1]["not_scored"]


def test_a_comparison_of_unequal_budgets_is_refused():
    """6 U-Net trials against 2 UNet++ trials (an interrupted sweep) would compare search effort, not networks."""
    from harness.compare.driver import check_equal_budgets
    from harness.config import TrainConfig
    from harness.sweep.result import SweepResult, TrialSummary, select_best

    def sweep(arch: str, n: int, epochs: int = 4, split: str = "abc", data: str | None = "d1") -> SweepResult:
        trials = tuple(TrialSummary(f"{arch}{i}", None, TrainConfig(), "completed", epochs, 0.5, 1.0) for i in range(n))
        return SweepResult("s-1", "smoke", arch, split, epochs, select_best(trials, epochs), trials, data)

    check_equal_budgets({"unet": sweep("unet", 6), "unetpp": sweep("unetpp", 6)})
    with pytest.raises(CompareError, match=r"unet: 6 trials of up to 4 epochs, unetpp: 2 trials.*--resume"):
        check_equal_budgets({"unet": sweep("unet", 6), "unetpp": sweep("unetpp", 2)})
    with pytest.raises(CompareError, match="not tuned with the same budget"):
        check_equal_budgets({"unet": sweep("unet", 6), "unetpp": sweep("unetpp", 6, epochs=8)})
    # A device-hours budget lets a cheaper network run more trials in the same compute; the epoch cap must agree.
    check_equal_budgets({"unet": sweep("unet", 6), "unetpp": sweep("unetpp", 4)}, by_device_hours=True)
    with pytest.raises(CompareError, match="not tuned with the same budget"):
        check_equal_budgets({"unet": sweep("unet", 6), "unetpp": sweep("unetpp", 4, epochs=8)}, by_device_hours=True)
    with pytest.raises(CompareError, match="different splits"):
        check_equal_budgets({"unet": sweep("unet", 6), "unetpp": sweep("unetpp", 6, split="xyz")})
    with pytest.raises(CompareError, match="different data"):
        check_equal_budgets({"unet": sweep("unet", 6), "unetpp": sweep("unetpp", 6, data="d2")})
    # A sweep result from before the data hash existed (None) is compared on its split alone.
    check_equal_budgets({"unet": sweep("unet", 6), "unetpp": sweep("unetpp", 6, data=None)})


def test_results_that_cannot_fit_out_are_refused_before_any_retrain(compared, small_filesystem):
    from harness.compare.driver import results_estimate
    from harness.errors import InsufficientSpaceError

    bench, _, out, _ = compared
    volume = small_filesystem("vol", 1 << 20)
    _, before = _runs(bench, role="final_compare")
    with pytest.raises(InsufficientSpaceError, match=rf"--out {volume / 'report'}: needs about .*per-image table"):
        run_compare(bench, load_sweep_results(bench), volume / "report", progress=False)
    assert not (volume / "report").exists()
    assert len(_runs(bench, role="final_compare")[1]) == len(before)  # no comparison run opened, nothing retrained
    # The estimate bounds the real results directory: the fixture's comparison wrote less.
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    test_images = len(pd.read_csv(out / "per_image.csv")) // (len(bench.compare.seeds) * len(bench.architectures))
    assert written <= results_estimate(test_images, bench, bench.train.epochs).total
