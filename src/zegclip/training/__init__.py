"""The Lightning/Hydra layer: the LightningModule and DataModule, optimiser and schedule,
callbacks, loggers, config handling, and the ``train`` / ``eval`` entry points.

Nothing in ``zegclip.model``, ``zegclip.data``, ``zegclip.metrics`` or ``zegclip.segment``
imports from here.
"""
