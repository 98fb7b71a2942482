"""The ``loss`` vocabulary a training config may name (no torch: the config layer validates against it).

The losses themselves are :func:`harness.training.losses.build_loss`.
"""

#: Every loss name a config may use: the single losses and their sums with cross-entropy.
LOSSES = ("ce", "jaccard", "dice", "ce+jaccard", "ce+dice")
