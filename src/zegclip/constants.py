"""Label values shared by the data pipeline, the loss and the metrics."""

IGNORE_INDEX = 255
"""Pixels never scored: void borders, unlabelled pixels, padding, and unseen classes
in inductive training."""

HIDDEN_INDEX = 254
"""Transductive training only: pixels whose true class is unseen. Their ground truth
is withheld and they receive pseudo labels from the current forward pass."""
