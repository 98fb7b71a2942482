"""Was the tuning fair? The protocol audit of a sweep's early stopping, and ASHA / search replays over its curves.

* :mod:`~harness.audit.ranks`: the protocol audit proper (:func:`audit_protocol`): per architecture, how
  well each ASHA rung's validation IoU ranks trials by their final one, and the verdict;
* :mod:`~harness.audit.asha_replay`: Ray's ASHA decision rule replayed over recorded curves;
* :mod:`~harness.audit.search_replay`: a searcher (TPE or random) replayed over a pool of recorded configs;
* :mod:`~harness.audit.curves`: a finished sweep's curves read back from MLflow, and the comparison's audit;
* :mod:`~harness.audit.command`: ``cloudmask replay`` (``python -m harness.replay``).

The first three are numpy/scipy/pandas only; this package's import loads none of mlflow, ray or torch.
"""

from harness.audit.asha_replay import AshaReplay, replay_schedule, replay_sweep
from harness.audit.ranks import ProtocolAudit, TrialCurve, asha_rungs, audit_protocol
from harness.errors import ReplayError

__all__ = [
    "AshaReplay",
    "ProtocolAudit",
    "ReplayError",
    "TrialCurve",
    "asha_rungs",
    "audit_protocol",
    "replay_schedule",
    "replay_sweep",
]
