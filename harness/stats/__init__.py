"""Statistics of the final comparison on plain arrays (numpy and scipy only; no torch, ray, mlflow or pandas).

* :mod:`~harness.stats.intervals`: Student-t and bootstrap intervals, paired tests, P(A > B).
* :mod:`~harness.stats.paired`: the headline intervals, each for its estimand (t over seeds, P(A > B)'s
  bound, new scenes, the detectable difference).
* :mod:`~harness.stats.hierarchical`: the headline of a pair, and the bootstrap over seeds, scenes, images.
* :mod:`~harness.stats.budget`: expected best score and cost vs the number of trials.
"""

from harness.stats import paired
from harness.stats.budget import expected_cost_curve, expected_max_curve
from harness.stats.hierarchical import hierarchical_paired_bootstrap, probability_of_improvement
from harness.stats.intervals import (
    bootstrap_ci,
    paired_bootstrap_ci,
    paired_t_test,
    prob_a_beats_b,
    t_interval,
    wilcoxon_signed_rank,
)

__all__ = [
    "bootstrap_ci",
    "expected_cost_curve",
    "expected_max_curve",
    "hierarchical_paired_bootstrap",
    "paired",
    "paired_bootstrap_ci",
    "paired_t_test",
    "prob_a_beats_b",
    "probability_of_improvement",
    "t_interval",
    "wilcoxon_signed_rank",
]
