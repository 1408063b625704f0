"""The training loop as an engine: events with filtered, named, replaceable handlers
(:mod:`moomtl.engine.events`), the built-in handlers (:mod:`moomtl.engine.handlers`) and evaluation
(:mod:`moomtl.engine.evaluation`). :class:`moomtl.train.Trainer` is built on it."""

from moomtl.engine.evaluation import evaluate, evaluate_splits, weights_version
from moomtl.engine.events import Event, EventEngine, Handler
from moomtl.engine.handlers import BestCheckpoint, EarlyStopping, Evaluate, LRSchedule, ParetoCheckpoint, monitored

__all__ = ["BestCheckpoint", "EarlyStopping", "Evaluate", "Event", "EventEngine", "Handler", "LRSchedule",
           "ParetoCheckpoint",
           "evaluate", "evaluate_splits", "monitored", "weights_version"]
