"""Training one network: the loop, losses, checkpoints and seeding, knowing neither Ray nor MLflow.

:mod:`~harness.training.loop` (``fit``, ``evaluate``, ``predict``) is what the sweep's trainable and the
comparison's retrains call; they report what it returns. This ``__init__`` imports nothing, so
:mod:`~harness.training.loss_names` (the vocabulary the config layer checks) loads without torch: import
the modules themselves.
"""
