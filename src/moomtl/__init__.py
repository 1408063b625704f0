"""moomtl: multi-task learning as multi-objective optimization."""

__version__ = "0.1.0"
