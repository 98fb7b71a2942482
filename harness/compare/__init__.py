"""The final comparison: retrain each architecture's chosen config over paired seeds and score the shared test split.

* :mod:`~harness.compare.driver`: :func:`run_compare` (which sweeps, equal budgets, the hashes, the
  retrains as Ray tasks, MLflow, the results directory written atomically);
* :mod:`~harness.compare.retrain`: one retrain and its test scores (per image, per scene);
* :mod:`~harness.compare.baseline`: the per-pixel logistic-regression baseline on the same pixels;
* :mod:`~harness.compare.tables`: every table of the results directory (:mod:`harness.results`).

Importing this package loads neither torch, nor ray, nor mlflow; the names below are imported on first
use. ``python -m harness.final_compare`` is ``cloudmask compare``.
"""

from __future__ import annotations

from harness import lazy_exports

_EXPORTS = {
    "run_compare": "harness.compare.driver",
    "load_sweep_results": "harness.compare.driver",
    "resolve_benchmark": "harness.compare.driver",
    "build_results": "harness.compare.tables",
    "CompareError": "harness.errors",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("harness.compare", _EXPORTS)
