"""The results directory of a final comparison: what each file holds, and reading it back.

:mod:`harness.compare.driver` builds a :class:`Results` and writes it with :func:`write_results`; this module owns
the format, and :mod:`harness.report` only renders it (``python -m harness.report RESULTS_DIR`` re-renders
one without retraining). Every number in the report is read from the files below, computed by
:mod:`harness.stats.intervals` and ``harness.metrics.confusion_stats``; the report adds only presentation:
formatting, averaging a per-image IoU over seeds for a plot, counting points above a diagonal.

Results directory format
========================
Architectures are named by their registry key (``unet``, ``unetpp``). NaN (empty CSV cell) means
"undefined" (e.g. the per-image IoU of an image whose ground truth has no cloud); the report prints ``n/a``.
IoU (intersection over union of the cloud class) is the study's "threat score" and 38-Cloud's "Jaccard
index"; its column is ``iou`` in every file. Columns beyond those listed are allowed and ignored;
:data:`COLUMNS` names the ones :func:`load_results` checks for.

Required
--------
``meta.json``
    ``{"benchmark": str, "split_hash": str (sha256 of the split manifest), "data_hash": str (optional:
    sha256 of every split's names and pixel digests, ``PreparedData.data_hash``), "split_kind":
    "scene"|"random" (optional), "seeds": [int, ...], "architectures": [str, ...] (order of every table and legend),
    "best_configs": {arch: {"trial_id": str, "val_iou": float, "config": {param: value}}},
    "device": str, "started_at": ISO-8601 str, "finished_at": ISO-8601 str, "scene_protocol": {...}
    (optional)}``. ``scene_protocol`` says how scenes were scored: ``binarisation`` ("argmax"),
    ``patches`` ("every patch of each test scene"), ``scored_scenes`` and ``scenes_without_gt`` (test
    scene ids; the report warns about the latter), ``stale_retrains`` (retrains reused from an older
    harness whose scene scores were left out), or ``not_scored`` (why no scene was scored).
``results.csv``
    One row per (arch, seed): ``arch, seed``, then every ``confusion_stats`` key of that seed's test
    counts (``tp fn fp tn p n pp pn total tpr fnr fpr tnr prevalence accuracy balanced_accuracy ppv fdr
    for npv lr_plus lr_minus iou f1 mcc``), ``per_image_iou`` (mean per-image IoU over the per-image IoU
    set), the set and its complement (``CLOUD_FREE_KEYS``: ``iou_images``,
    ``cloud_free_images``, ``cloud_free_images_with_fp``, ``cloud_free_fp``, ``cloud_free_tn``),
    ``train_seconds`` (wall-clock of the retrain), ``train_images_per_second``.
``summary.csv``
    One row per arch (``harness.compare.tables.summary_table``): ``arch, n_seeds``; counts summed over seeds and
    every ``confusion_stats`` key of the pooled counts; ``iou_mean, iou_ci_low, iou_ci_high`` and the
    same for ``per_image_iou``, ``f1``, ``accuracy``, ``balanced_accuracy`` (mean over seeds of each
    seed's statistic with a 95 % Student-t interval over seeds; none for one seed);
    ``train_seconds_mean, images_per_second_mean``; ``iou_images``, ``cloud_free_images`` (per seed),
    ``cloud_free_fp_image_share``, ``cloud_free_fpr``; ``params`` (count), ``flops_per_patch`` (forward
    FLOPs of one 4-band 384x384 patch, one multiply-add = 2 FLOPs), ``sweep_device_hours`` (device-hours
    the architecture's sweep used), ``n_trials`` and how they ended: ``n_trials_completed``,
    ``n_trials_stopped`` (by ASHA), ``n_trials_failed`` (diverged or errored).
``paired.csv``
    One row per architecture pair (``harness.compare.tables.paired_table``, columns ``PAIRED_COLUMNS``),
    written as ``a - b`` with ``a`` the architecture with the higher mean, over the per-image IoU set
    (images whose ground truth has cloud, the same for every arch and seed): ``mean_iou_a, mean_iou_b,
    iou_diff_mean`` (a - b, over seeds and images); the headline, for "this test set, new training
    seeds": ``iou_diff_ci_low/high`` (95 % Student-t interval over the per-seed mean differences),
    ``detectable_diff`` (smallest difference detectable with power 0.8), ``p_a_better`` with
    ``p_a_better_ci_low/high`` (probability of improvement P(A > B) per scene, averaged over scenes;
    Wilson bound with n = seeds); ``seeds_a_higher`` (shared seeds whose mean per-image IoU is higher
    for a, ties one half) and ``seed_t_p`` (paired t-test over seeds); for "new scenes":
    ``new_scenes_ci_low/high``, ``new_scenes_detectable_diff`` (seeds x scenes random effects);
    ``boot_ci_low/high`` (percentile hierarchical bootstrap: seeds, then scenes, then images; not the
    headline, it undercovers with few seeds); image-level, images treated as independent:
    ``image_ci_low/high`` (paired bootstrap over seed-averaged images) and
    ``image_wilcoxon_p``; ``n_images, n_scenes, n_seeds``.

Optional (the matching section or figure is left out when absent or empty)
--------------------------------------------------------------------------
``per_image.csv``
    One row per (arch, seed, test image): ``arch, seed, name, scene_id, tp, fn, fp, tn, cloud_free, iou,
    f1, accuracy, fpr`` (``harness.metrics.per_image_scores``: ``iou`` and ``f1`` are NaN on every image
    whose ground truth is cloud-free, whatever was predicted, so the IoU set is chosen by ground truth).
``curves.csv``
    One row per (arch, seed, epoch) of the final retrains: ``arch, seed, epoch, train_loss, val_loss,
    val_iou`` (epoch 1-based).
``budget.csv``
    Expected best validation IoU vs tuning budget (``harness.compare.tables.budget_table``): ``arch, n_trials,
    expected_best_val_iou, expected_best_val_iou_sd, device_hours`` for n_trials = 1..N. Every trial is
    a draw: ASHA-stopped trials at their score when stopped, diverged or failed ones at IoU 0.
``scene_scores.csv``
    Only for a scene split with scene ground truth: ``arch, seed, scene_id, patches, test_patches,
    precision, recall, specificity, iou, overall_accuracy`` (x100, ``harness.metrics.scene_scores``;
    every patch of the scene predicted with argmax labels and stitched, ``harness.compare.retrain.score_scenes``).
``official_scores.csv``
    Only with ``compare.official_test``: ``arch, seed, scene_id, patches, precision, recall, specificity, jaccard,
    overall_accuracy`` (x100) of every scene of the 38-Cloud test tree, by the dataset's official protocol
    (``harness.predict.evaluate``: 8-bit probability at 12/255, stitched, cropped centrally).
``samples.npz``
    A few test patches for the figure grid: ``rgb`` (K,H,W,3; float in 0-1 or uint8), ``gt`` (K,H,W; 0/1),
    ``pred_<arch>`` (K,H,W; 0/1) per arch, ``names`` (K,; str, the patch names of per_image.csv), and
    ``seed`` (int scalar, the seed whose models made the predictions). Stored without pickles.
``protocol_audit.csv``, ``protocol_audit.json``, ``sweep_curves.csv``
    "Was the tuning fair?" (:mod:`harness.audit.ranks`, from the sweeps' per-epoch MLflow curves; all three or
    none). ``protocol_audit.csv``, one row per (arch, ASHA rung): ``arch, rung`` (the epoch ASHA decides
    at), ``n_full`` (trials that ran every epoch), ``spearman, spearman_ci_low, spearman_ci_high`` (rank
    correlation of those trials' validation IoU at the rung with their last epoch's; 95 % percentile
    bootstrap over trials; NaN below ``harness.audit.ranks.MIN_TRIALS`` trials), ``n_stopped`` (trials ASHA
    stopped at the rung), ``n_stopped_within_top_k`` (of those, the ones whose score there was at least
    the lowest rung score of the final top-k trials). ``protocol_audit.json``: the schedule
    (``asha_enabled, grace_period, reduction_factor, max_epochs, rungs``), ``top_k, n_boot, min_trials,
    rho_gap, rho_ok``, ``archs`` ({arch: {n_trials, n_full, n_stopped, n_failed}}), ``gaps`` (per rung the
    largest difference between two architectures' rho, with a bootstrap interval), ``verdict`` (fair |
    biased | possibly biased | cannot tell | single architecture), ``flagged`` (bool), ``advice`` ([str]).
    ``sweep_curves.csv``, one row per (arch, sweep trial, epoch): ``arch, trial_id, stopped_by, epoch,
    val_iou``.

Output of the report
--------------------
``report.md`` and ``figures/{curves,samples,per_image_iou,budget,fairness}.png`` in the results directory, linked
relatively from the report; re-rendering overwrites them and touches no input file.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.audit.ranks import AUDIT_COLUMNS, CURVE_COLUMNS, ProtocolAudit
from harness.config.train import TrainConfig, from_flat, to_flat
from harness.errors import MissingResultsError, ResultsError

# Seed-level metrics that summary.csv reports as mean + t-interval over seeds: (column prefix, results.csv key).
SEED_METRICS = (
    ("iou", "iou"),
    ("per_image_iou", "per_image_iou"),
    ("f1", "f1"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced_accuracy"),
)
# Per-seed counts of results.csv about the per-image IoU set and the cloud-free images left out of it
# (harness.metrics.cloud_free_counts); summary_table pools them.
CLOUD_FREE_KEYS = ("iou_images", "cloud_free_images", "cloud_free_images_with_fp", "cloud_free_fp", "cloud_free_tn")
# Per-architecture costs summary.csv carries (NaN where not given).
COST_KEYS = (
    "params",
    "flops_per_patch",
    "sweep_device_hours",
    "n_trials",
    "n_trials_completed",
    "n_trials_stopped",
    "n_trials_failed",
)
# Fewer test scenes than this: the report does not present paired.csv's "new scenes" interval as an
# estimate (the between-scene variance rests on too few scenes) and says so.
MIN_SCENES_FOR_NEW_SCENES = 10
# Columns of paired.csv added with the seed-t headline (issue 18): a results directory written before
# lacks them and still renders, its interval labelled as the old percentile bootstrap.
PAIRED_ADDED = (
    "detectable_diff",
    "new_scenes_ci_low",
    "new_scenes_ci_high",
    "new_scenes_detectable_diff",
    "boot_ci_low",
    "boot_ci_high",
)
# Columns of paired.csv, in order (see paired_table).
PAIRED_COLUMNS = [
    "arch_a",
    "arch_b",
    "mean_iou_a",
    "mean_iou_b",
    "iou_diff_mean",
    "iou_diff_ci_low",
    "iou_diff_ci_high",
    "detectable_diff",
    "p_a_better",
    "p_a_better_ci_low",
    "p_a_better_ci_high",
    "seeds_a_higher",
    "seed_t_p",
    "new_scenes_ci_low",
    "new_scenes_ci_high",
    "new_scenes_detectable_diff",
    "boot_ci_low",
    "boot_ci_high",
    "image_ci_low",
    "image_ci_high",
    "image_wilcoxon_p",
    "n_images",
    "n_scenes",
    "n_seeds",
]


META = "meta.json"
RESULTS = "results.csv"
SUMMARY = "summary.csv"
PAIRED = "paired.csv"
PER_IMAGE = "per_image.csv"
CURVES = "curves.csv"
BUDGET = "budget.csv"
SCENE_SCORES = "scene_scores.csv"
OFFICIAL_SCORES = "official_scores.csv"
SAMPLES = "samples.npz"
PROTOCOL_AUDIT = "protocol_audit.csv"
PROTOCOL_AUDIT_JSON = "protocol_audit.json"
SWEEP_CURVES = "sweep_curves.csv"
REQUIRED_FILES = (META, RESULTS, SUMMARY, PAIRED)
OPTIONAL_FILES = (
    PER_IMAGE,
    CURVES,
    BUDGET,
    SCENE_SCORES,
    OFFICIAL_SCORES,
    SAMPLES,
    PROTOCOL_AUDIT,
    PROTOCOL_AUDIT_JSON,
    SWEEP_CURVES,
)
REPORT = "report.md"
FIGURES_DIR = "figures"

_SEED_CI = [f"{metric}_{part}" for metric, _ in SEED_METRICS for part in ("mean", "ci_low", "ci_high")]
# Columns each CSV must have: the ones the report reads unconditionally, so a file that lacks one fails
# here, naming the file, rather than as a KeyError in the middle of rendering.
COLUMNS: dict[str, tuple[str, ...]] = {
    RESULTS: ("arch", "seed", "iou"),
    SUMMARY: ("arch", "n_seeds", *_SEED_CI),
    PAIRED: tuple(c for c in PAIRED_COLUMNS if c not in PAIRED_ADDED),
    PER_IMAGE: ("arch", "seed", "name", "iou"),
    CURVES: ("arch", "seed", "epoch", "train_loss", "val_loss", "val_iou"),
    BUDGET: ("arch", "n_trials", "expected_best_val_iou", "device_hours"),
    SCENE_SCORES: ("arch", "seed", "scene_id", "precision", "recall", "specificity", "iou", "overall_accuracy"),
    OFFICIAL_SCORES: ("arch", "seed", "scene_id", "precision", "recall", "specificity", "jaccard", "overall_accuracy"),
    PROTOCOL_AUDIT: AUDIT_COLUMNS,
    SWEEP_CURVES: CURVE_COLUMNS,
}
SAMPLE_KEYS = ("rgb", "gt")


@dataclass
class Results:
    """The files of a results directory, as read by :func:`load_results`; optional ones are None when absent."""

    root: Path
    meta: dict
    results: pd.DataFrame
    summary: pd.DataFrame
    paired: pd.DataFrame
    per_image: pd.DataFrame | None
    curves: pd.DataFrame | None
    budget: pd.DataFrame | None
    scene_scores: pd.DataFrame | None
    samples: dict[str, np.ndarray] | None
    #: protocol_audit.csv + protocol_audit.json + sweep_curves.csv (``harness.audit.ranks``); None when absent.
    protocol_audit: ProtocolAudit | None = None
    #: official_scores.csv: the 38-Cloud official test protocol per (arch, seed, scene); None when absent.
    official_scores: pd.DataFrame | None = None

    @property
    def archs(self) -> list[str]:
        """Return the architectures in meta.json's order, then any others that the summary holds."""
        return list(dict.fromkeys([*self.meta.get("architectures", []), *self.summary["arch"]]))


# -- reading a results directory
def has_seed_level_intervals(paired: pd.DataFrame) -> bool:
    """True when ``paired.csv`` carries the seed-level headline (issue 18), False for one written before.

    An older file's ``iou_diff_ci_low/high`` are the percentile hierarchical bootstrap; the report names
    them as such instead of as the t interval over seeds.
    """
    return all(column in paired.columns for column in PAIRED_ADDED)


def load_results(results_dir: str | os.PathLike) -> Results:
    """Read a results directory (format: this module's docstring).

    Raises:
        MissingResultsError: ``results_dir`` is not a directory, or a required file is missing (also a
            ``FileNotFoundError``); the message names every missing file.
        ResultsError: a file cannot be parsed or lacks a column of :data:`COLUMNS`; the message names it.
    """
    root = Path(results_dir)
    if not root.is_dir():
        problem = "not a directory" if root.exists() else "no such directory"
        raise MissingResultsError(f"{root} is not a results directory: {problem}")
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        raise MissingResultsError(f"{root} is not a results directory: missing {', '.join(missing)}")
    loaded = Results(
        root=root,
        meta=_read_meta(root / META),
        results=_read_csv(root / RESULTS),
        summary=_read_csv(root / SUMMARY),
        paired=_read_csv(root / PAIRED),
        per_image=_read_csv(root / PER_IMAGE, optional=True),
        curves=_read_csv(root / CURVES, optional=True),
        budget=_read_csv(root / BUDGET, optional=True),
        scene_scores=_read_csv(root / SCENE_SCORES, optional=True),
        official_scores=_read_csv(root / OFFICIAL_SCORES, optional=True),
        samples=_read_samples(root / SAMPLES),
        protocol_audit=_read_audit(root),
    )
    _check_complete(loaded)
    return loaded


def _check_complete(res: Results) -> None:
    """Refuse tables that lack rows meta.json says they have (ResultsError naming the file).

    A cut or edited file would render a report that silently drops an architecture or a seed from one
    table while the rest of the page shows it.
    """
    seeds = res.meta.get("seeds")
    if not seeds:
        return  # a hand-made or very old meta.json: nothing to count against
    missing_archs = [a for a in res.meta.get("architectures", []) if a not in set(res.summary["arch"])]
    if missing_archs:
        raise ResultsError(f"{res.root / SUMMARY}: no row for {', '.join(missing_archs)}, which meta.json lists")
    archs = res.archs  # meta.json's, then any other the summary holds
    expected = {(str(a), int(s)) for a in archs for s in seeds}

    def pairs(frame: pd.DataFrame, name: str) -> list[tuple[str, int]]:
        if frame[["arch", "seed"]].isna().any().any():
            raise ResultsError(f"{res.root / name}: a row without its architecture or seed (a cut or edited file)")
        return [(str(a), int(s)) for a, s in zip(frame["arch"], frame["seed"], strict=True)]

    found = pairs(res.results, RESULTS)
    if sorted(found) != sorted(expected):
        missing = sorted(expected - set(found))
        raise ResultsError(
            f"{res.root / RESULTS}: {len(found)} rows, expected one per architecture and seed of meta.json "
            f"({len(archs)} x {len(seeds)} = {len(expected)})"
            + (f"; missing {', '.join(f'{a} seed {s}' for a, s in missing)}" if missing else "; some repeated")
        )
    if res.per_image is not None:
        counts = collections.Counter(pairs(res.per_image, PER_IMAGE))
        if set(counts) != expected or len(set(counts.values())) != 1:
            short = sorted(pair for pair in expected if counts.get(pair, 0) < max(counts.values(), default=0))
            raise ResultsError(
                f"{res.root / PER_IMAGE}: every architecture and seed must score the same test images; "
                f"{', '.join(f'{a} seed {s}' for a, s in short) or 'some'} have fewer rows (a cut or edited file)"
            )


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ResultsError(f"{path}: cannot read: {err}") from err
    if not isinstance(meta, dict):
        raise ResultsError(f"{path}: expected a JSON object, found {type(meta).__name__}")
    return meta


def _read_csv(path: Path, *, optional: bool = False) -> pd.DataFrame | None:
    if optional and not path.is_file():
        return None
    try:
        if not _ends_with_newline(path):  # pandas ends every file it writes with one: a cut file has none
            raise ResultsError(f"{path}: cut short (its last line is incomplete); re-run `cloudmask compare`")
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as err:
        # pandas writes a frame without columns as a blank file: for an optional file that is "nothing to
        # show", as if absent; a required one must have its header.
        if optional:
            return None
        raise ResultsError(f"{path}: cannot read: {err}") from err
    except (OSError, ValueError) as err:  # pandas' parse errors are ValueErrors
        raise ResultsError(f"{path}: cannot read: {err}") from err
    absent = [column for column in COLUMNS.get(path.name, ()) if column not in frame.columns]
    if absent:
        raise ResultsError(f"{path}: missing column(s) {', '.join(absent)}")
    return frame


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return True  # an empty file is read (and judged) by pandas
        f.seek(size - 1)
        return f.read(1) == b"\n"


def _read_audit(root: Path) -> ProtocolAudit | None:
    if not (root / PROTOCOL_AUDIT_JSON).is_file():
        return None
    table, curves = _read_csv(root / PROTOCOL_AUDIT, optional=True), _read_csv(root / SWEEP_CURVES, optional=True)
    if table is None or curves is None:
        raise ResultsError(f"{root}: {PROTOCOL_AUDIT_JSON} needs {PROTOCOL_AUDIT} and {SWEEP_CURVES} beside it")
    return ProtocolAudit(table, curves, _read_meta(root / PROTOCOL_AUDIT_JSON))


def _read_samples(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            samples = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ResultsError(f"{path}: cannot read: {err}") from err
    absent = [key for key in SAMPLE_KEYS if key not in samples]
    if absent:
        raise ResultsError(f"{path}: missing array(s) {', '.join(absent)}")
    return samples


# -- writing a results directory
def write_results(root: str | os.PathLike, results: Results) -> Path:
    """Write every present part of ``results`` into ``root`` in the format :func:`load_results` reads."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / META).write_text(json.dumps(results.meta, indent=2, default=str), encoding="utf-8")
    frames = {
        RESULTS: results.results,
        SUMMARY: results.summary,
        PAIRED: results.paired,
        PER_IMAGE: results.per_image,
        CURVES: results.curves,
        BUDGET: results.budget,
        SCENE_SCORES: results.scene_scores,
        OFFICIAL_SCORES: results.official_scores,
    }
    for name, frame in frames.items():
        if frame is not None:
            frame.to_csv(root / name, index=False)
    if results.samples is not None:
        np.savez_compressed(root / SAMPLES, **results.samples)
    if results.protocol_audit is not None:
        results.protocol_audit.table.to_csv(root / PROTOCOL_AUDIT, index=False)
        results.protocol_audit.curves.to_csv(root / SWEEP_CURVES, index=False)
        (root / PROTOCOL_AUDIT_JSON).write_text(json.dumps(results.protocol_audit.summary, indent=2), encoding="utf-8")
    return root


# -- retrain results ------------------------------------------------------------------------------
#: Arrays of a RetrainResult, stored in ``retrain.npz`` (no pickles); the rest goes to ``retrain.json``.
_RETRAIN_ARRAYS = ("per_image_counts", "test_rows", "sample_rows", "sample_preds")
#: 1: scenes stitched from every patch of each test scene (before: only the test split's patches, so a
#: ``nonempty_only`` split left border patches clear). Reused retrains of an older version keep their
#: counts but not their scene scores.
SCORING_VERSION = 1


@dataclass(frozen=True)
class RetrainResult:
    """One final retrain (architecture, seed) scored on the test split."""

    config: TrainConfig
    status: str
    history: list[dict[str, Any]]
    #: (N, 4) int64 tp, fn, fp, tn per test image, in ``test_rows`` order.
    per_image_counts: np.ndarray
    test_rows: np.ndarray
    #: The figure's test patches (cache rows) and their predicted masks (K, H, W) uint8.
    sample_rows: np.ndarray
    sample_preds: np.ndarray
    #: 38-Cloud scene scores per test scene with a scene ground truth (``retrain.score_scenes``).
    scene_scores: list[dict[str, Any]]
    train_seconds: float
    train_images_per_second: float
    device: str
    #: The trained weights (CPU tensors) on their way to MLflow as a model; not part of the saved folder
    #: (the logged model is the copy that lasts).
    model_state: dict[str, Any] | None = None
    #: How the scene scores were computed (:data:`SCORING_VERSION`); 0 for retrains saved before it existed.
    scoring_version: int = 0
    #: The train split's per-band (mean, std) the network was standardised with (None: scaled by 1/65535),
    #: what ``cloudmask predict`` applies to a scene before the network sees it.
    band_stats: list[list[float]] | None = None
    #: The 38-Cloud official test protocol's per-scene scores (``compare.official_test``), or None.
    official_scores: list[dict[str, Any]] | None = None
    #: Test images per second through the trained network on ``device`` (NaN for retrains saved before).
    test_images_per_second: float = float("nan")

    @property
    def arch(self) -> str:
        """The retrained architecture."""
        return self.config.arch

    @property
    def seed(self) -> int:
        """The retrain's seed (paired across architectures)."""
        return self.config.seed

    def save(self, folder: str | Path) -> Path:
        """Write ``retrain.npz`` + ``retrain.json`` into ``folder``; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "retrain.npz", **{k: getattr(self, k) for k in _RETRAIN_ARRAYS})
        skip = {*_RETRAIN_ARRAYS, "model_state"}
        meta = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        meta["config"] = to_flat(self.config)
        (folder / "retrain.json").write_text(json.dumps(meta, default=float))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RetrainResult:
        """Read what :meth:`save` wrote."""
        folder = Path(folder)
        meta = json.loads((folder / "retrain.json").read_text())
        meta["config"] = from_flat(meta["config"])
        with np.load(folder / "retrain.npz", allow_pickle=False) as arrays:
            meta.update({k: arrays[k] for k in _RETRAIN_ARRAYS})
        return cls(**meta)
