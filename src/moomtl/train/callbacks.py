"""Moved to :mod:`moomtl.events` (methods no longer import the training package); these names stay
importable from here."""

from moomtl.events import Callback, TrainingError, TrainState

__all__ = ["Callback", "TrainState", "TrainingError"]
